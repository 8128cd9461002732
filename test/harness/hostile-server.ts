// A fake of a HOSTILE PostgreSQL server on loopback, to prove that pgkeep refuses what no real server sends: a plain
// net.Server speaking just enough of the replication protocol for `pgkeep backup` (startup with trust
// authentication, IDENTIFY_SYSTEM, SHOW, CREATE_REPLICATION_SLOT, START_REPLICATION that sends nothing, and
// BASE_BACKUP in the PostgreSQL 15+ form with crafted tablespace rows and tar archives). Every answer can be replaced
// to send oversized frames, endless result sets or hostile tars. Normal tests use real servers; this one exists
// only because no real server can be made to lie.

import net from 'node:net'
import tar from 'tar-stream'

/** One crafted tar entry; `content` only for files. */
export interface CraftedEntry {
  name: string
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'fifo' | 'character-device' | 'block-device'
  mode?: number
  linkname?: string
  content?: string | Buffer
}

/** Builds a tar archive (with its trailer, as PostgreSQL 15+ sends it) holding exactly these entries. */
export async function craftTar(entries: readonly CraftedEntry[]): Promise<Buffer> {
  const pack = tar.pack()
  const chunks: Buffer[] = []
  const done = new Promise<void>((resolve, reject) => {
    pack.on('data', (c) => chunks.push(c as Buffer))
    pack.on('end', () => resolve())
    pack.on('error', reject)
  })
  for (const e of entries) {
    const type = e.type ?? 'file'
    const header = { name: e.name, type, mode: e.mode ?? (type === 'directory' ? 0o700 : 0o600), linkname: e.linkname, mtime: new Date(1_700_000_000_000) }
    if (type === 'file') {
      const content = Buffer.from(e.content ?? '')
      pack.entry({ ...header, size: content.length }, content)
    } else pack.entry(header)
  }
  pack.finalize()
  await done
  return Buffer.concat(chunks)
}

/** Backend message encoding (protocol-message-formats.html). */
export const wire = {
  frame(type: string, ...parts: Buffer[]): Buffer {
    const body = Buffer.concat(parts)
    const head = Buffer.alloc(5)
    head[0] = type.charCodeAt(0)
    head.writeInt32BE(body.length + 4, 1)
    return Buffer.concat([head, body])
  },
  /** Only the 5-byte header of a message declaring `length` (length word included). */
  header(type: string, length: number): Buffer {
    const head = Buffer.alloc(5)
    head[0] = type.charCodeAt(0)
    head.writeInt32BE(length, 1)
    return head
  },
  cstr: (s: string) => Buffer.from(`${s}\0`),
  i32(n: number): Buffer {
    const b = Buffer.alloc(4)
    b.writeInt32BE(n)
    return b
  },
  i16(n: number): Buffer {
    const b = Buffer.alloc(2)
    b.writeInt16BE(n)
    return b
  },
  authOk: () => wire.frame('R', wire.i32(0)),
  parameterStatus: (name: string, value: string) => wire.frame('S', wire.cstr(name), wire.cstr(value)),
  readyForQuery: () => wire.frame('Z', Buffer.from('I')),
  rowDescription: (names: string[]) =>
    wire.frame(
      'T',
      wire.i16(names.length),
      ...names.map((n) => Buffer.concat([wire.cstr(n), wire.i32(0), wire.i16(0), wire.i32(25), wire.i16(-1), wire.i32(-1), wire.i16(0)])),
    ),
  dataRow: (values: (string | null)[]) =>
    wire.frame(
      'D',
      wire.i16(values.length),
      ...values.map((v) => (v === null ? wire.i32(-1) : Buffer.concat([wire.i32(Buffer.byteLength(v)), Buffer.from(v)]))),
    ),
  commandComplete: (tag: string) => wire.frame('C', wire.cstr(tag)),
  copyData: (payload: Buffer) => wire.frame('d', payload),
  copyDone: () => wire.frame('c'),
  /** CopyOutResponse / CopyBothResponse: overall format 0, no columns. */
  copyResponse: (type: 'H' | 'W') => wire.frame(type, Buffer.from([0]), wire.i16(0)),
  /** One result set with its CommandComplete. */
  resultSet: (names: string[], rows: (string | null)[][], tag = 'SELECT') =>
    Buffer.concat([wire.rowDescription(names), ...rows.map(wire.dataRow), wire.commandComplete(tag)]),
}

/** A connection of the fake server: writes with backpressure, and knows when the client went away. */
export class FakeConnection {
  closed = false

  constructor(readonly socket: net.Socket) {
    socket.on('close', () => (this.closed = true))
    socket.on('error', () => (this.closed = true))
  }

  /** Writes and waits until the socket can take more; resolves false once the client is gone. */
  async send(...bufs: Buffer[]): Promise<boolean> {
    for (const b of bufs) {
      if (this.closed) return false
      if (!this.socket.write(b)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            this.socket.off('drain', done)
            this.socket.off('close', done)
            resolve()
          }
          this.socket.on('drain', done)
          this.socket.on('close', done)
        })
      }
    }
    return !this.closed
  }

  /** Sends `piece` again and again (up to `maxBytes`) until the client goes away; resolves with the bytes sent. */
  async flood(piece: Buffer, maxBytes: number): Promise<number> {
    let sent = 0
    while (sent < maxBytes && (await this.send(piece))) sent += piece.length
    return sent
  }
}

/** The answers of the fake server; each may be replaced by a scenario. */
export interface HostileScenario {
  /** After the startup message. Default: trust authentication, a PostgreSQL 16 parameter set, ReadyForQuery. */
  startup?: (c: FakeConnection) => Promise<void>
  /** Answers any command first; resolves true when it did (the defaults answer the rest). */
  query?: (query: string, c: FakeConnection) => Promise<boolean>
  /** IDENTIFY_SYSTEM. Default: one proper row. */
  identifySystem?: (c: FakeConnection) => Promise<void>
  /** BASE_BACKUP's tablespace rows (oid and location as text), before the data directory row. Default none. */
  tablespaces?: { oid: string; location: string }[]
  /** Replaces the whole tablespace result set. */
  tablespaceList?: (c: FakeConnection) => Promise<void>
  /** The archives, in order: 'n' name and location, then the tar bytes. Default: one benign base.tar. */
  archives?: () => Promise<{ name: string; location: string; tar: Buffer }[]>
}

export interface HostileServer {
  readonly port: number
  /** A conninfo for it. */
  readonly conninfo: string
  /** Bytes the server handed to the kernel on every connection so far (what a client could have read at most). */
  readonly bytesWritten: number
  /** Connections accepted so far. */
  readonly connections: number
  /** Resolves when every connection opened so far has closed. */
  settled(): Promise<void>
  close(): Promise<void>
}

const SSL_REQUEST = 80877103
const PROTOCOL_3 = 196608

/** Reads the client's messages: the untyped startup packet first, then typed messages. */
class ClientReader {
  private buf = Buffer.alloc(0)
  private waiting: (() => void) | undefined
  private ended = false

  constructor(socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d])
      this.waiting?.()
    })
    const end = () => {
      this.ended = true
      this.waiting?.()
    }
    socket.on('end', end)
    socket.on('close', end)
  }

  private async need(n: number): Promise<boolean> {
    while (this.buf.length < n) {
      if (this.ended) return false
      await new Promise<void>((resolve) => (this.waiting = resolve))
      this.waiting = undefined
    }
    return true
  }

  private take(n: number): Buffer {
    const out = this.buf.subarray(0, n)
    this.buf = this.buf.subarray(n)
    return out
  }

  async startup(): Promise<number | undefined> {
    if (!(await this.need(8))) return undefined
    const len = this.buf.readInt32BE(0)
    if (!(await this.need(len))) return undefined
    return this.take(len).readInt32BE(4)
  }

  async message(): Promise<{ type: string; payload: Buffer } | undefined> {
    if (!(await this.need(5))) return undefined
    const len = this.buf.readInt32BE(1)
    if (!(await this.need(1 + len))) return undefined
    const m = this.take(1 + len)
    return { type: String.fromCharCode(m[0]!), payload: m.subarray(5) }
  }
}

const BENIGN_BASE: () => Promise<{ name: string; location: string; tar: Buffer }[]> = async () => [
  {
    name: 'base.tar',
    location: '',
    tar: await craftTar([
      { name: 'base', type: 'directory' },
      { name: 'base/1/1234', content: 'not a relation' },
    ]),
  },
]

/** Starts the fake server on 127.0.0.1 (a free port). */
export async function startHostileServer(scenario: HostileScenario = {}): Promise<HostileServer> {
  const sockets = new Set<net.Socket>()
  const finished: Promise<void>[] = []
  let bytesWritten = 0
  let connections = 0

  async function serve(socket: net.Socket): Promise<void> {
    const c = new FakeConnection(socket)
    const reader = new ClientReader(socket)
    let code = await reader.startup()
    if (code === SSL_REQUEST) {
      socket.write('N')
      code = await reader.startup()
    }
    if (code !== PROTOCOL_3) return
    await (scenario.startup ?? defaultStartup)(c)
    for (;;) {
      const m = await reader.message()
      if (!m || m.type === 'X') return
      if (m.type === 'c') {
        // The end of START_REPLICATION: answer CopyDone, then the command's end.
        await c.send(wire.copyDone(), wire.commandComplete('START_STREAMING'), wire.readyForQuery())
        continue
      }
      if (m.type !== 'Q') continue // standby status updates during START_REPLICATION
      const query = m.payload.toString('utf8').replace(/\0$/, '')
      await answer(c, query)
    }
  }

  async function answer(c: FakeConnection, query: string): Promise<void> {
    const word = query.split(/\s/)[0]
    if (await scenario.query?.(query, c)) return
    if (query === 'IDENTIFY_SYSTEM') {
      if (scenario.identifySystem) return scenario.identifySystem(c)
      await c.send(
        wire.resultSet(['systemid', 'timeline', 'xlogpos', 'dbname'], [['7000000000000000001', '1', '0/3000000', null]], 'IDENTIFY_SYSTEM'),
        wire.readyForQuery(),
      )
    } else if (word === 'SHOW') {
      const name = query.slice(5)
      const value = { block_size: '8192', wal_segment_size: '16MB', summarize_wal: 'off' }[name] ?? 'off'
      await c.send(wire.resultSet([name], [[value]], 'SHOW'), wire.readyForQuery())
    } else if (word === 'CREATE_REPLICATION_SLOT') {
      await c.send(
        wire.resultSet(
          ['slot_name', 'consistent_point', 'snapshot_name', 'output_plugin'],
          [[query.split(/\s/)[1]!, '0/0', null, null]],
          'CREATE_REPLICATION_SLOT',
        ),
        wire.readyForQuery(),
      )
    } else if (word === 'START_REPLICATION') {
      // Streams nothing: the backup fails on its archives long before it needs WAL.
      await c.send(wire.copyResponse('W'))
    } else if (word === 'BASE_BACKUP') {
      await baseBackup(c)
    } else {
      await c.send(wire.frame('E', Buffer.from('SERROR\0C0A000\0Mnot supported by the fake server\0\0')), wire.readyForQuery())
    }
  }

  async function baseBackup(c: FakeConnection): Promise<void> {
    if (!(await c.send(wire.resultSet(['recptr', 'tli'], [['0/2000028', '1']], 'SELECT')))) return
    if (scenario.tablespaceList) await scenario.tablespaceList(c)
    else {
      const rows = [...(scenario.tablespaces ?? []).map((t) => [t.oid, t.location, null]), [null, null, null]]
      if (!(await c.send(wire.resultSet(['spcoid', 'spclocation', 'size'], rows, 'SELECT')))) return
    }
    if (c.closed) return
    await c.send(wire.copyResponse('H'))
    for (const a of await (scenario.archives ?? BENIGN_BASE)()) {
      if (!(await c.send(wire.copyData(Buffer.concat([Buffer.from('n'), wire.cstr(a.name), wire.cstr(a.location)]))))) return
      // Chunks of SINK_BUFFER_LENGTH, as the server sends them.
      for (let off = 0; off < a.tar.length; off += 32768) {
        if (!(await c.send(wire.copyData(Buffer.concat([Buffer.from('d'), a.tar.subarray(off, off + 32768)]))))) return
      }
    }
    await c.send(
      wire.copyData(Buffer.from('m')),
      wire.copyData(Buffer.concat([Buffer.from('d'), Buffer.from('{ "PostgreSQL-Backup-Manifest-Version": 1, "Files": [] }\n')])),
      wire.copyDone(),
      wire.resultSet(['recptr', 'tli'], [['0/2000100', '1']], 'SELECT'),
      wire.commandComplete('BASE_BACKUP'),
      wire.readyForQuery(),
    )
  }

  const server = net.createServer((socket) => {
    connections++
    sockets.add(socket)
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
    finished.push(closed)
    socket.on('error', () => {})
    socket.once('close', () => {
      bytesWritten += socket.bytesWritten
      sockets.delete(socket)
    })
    serve(socket)
      .catch(() => {})
      .finally(() => socket.end())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const port = (server.address() as net.AddressInfo).port
  return {
    port,
    conninfo: `host=127.0.0.1 port=${port} user=hostile sslmode=disable connect_timeout=10`,
    get bytesWritten() {
      let live = 0
      for (const s of sockets) live += s.bytesWritten
      return bytesWritten + live
    },
    get connections() {
      return connections
    },
    settled: async () => {
      await Promise.all(finished)
    },
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

async function defaultStartup(c: FakeConnection): Promise<void> {
  await c.send(
    wire.authOk(),
    wire.parameterStatus('server_version', '16.4'),
    wire.parameterStatus('server_encoding', 'UTF8'),
    wire.parameterStatus('client_encoding', 'UTF8'),
    wire.parameterStatus('integer_datetimes', 'on'),
    wire.frame('K', wire.i32(4242), wire.i32(1)),
    wire.readyForQuery(),
  )
}
