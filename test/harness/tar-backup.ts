// A pg_basebackup -Ft -X stream built directly on protocol/: BASE_BACKUP on one connection, WAL on a second one
// through a temporary slot, tar files and WAL segments written to a directory. Used to prove the protocol client
// against pg_verifybackup, against the server's own pg_wal files, and by starting the result.

import { createWriteStream, type WriteStream } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  baseBackup,
  type BaseBackupEvent,
  type BaseBackupOptions,
  connect,
  createReplicationSlot,
  formatLsn,
  identifySystem,
  type Lsn,
  type ReplicationConnection,
  show,
  startReplication,
} from '../../protocol/index.js'

export interface TarBackup {
  readonly dir: string
  readonly startLsn: Lsn
  readonly endLsn: Lsn
  readonly timeline: number
  readonly archives: { name: string; path: string; tablespaceOid: number | null; location: string | null }[]
  readonly manifestPath: string
  readonly walDir: string
  /** Segment names written, in order; the last one is partial (zero-padded) unless the WAL ended on a boundary. */
  readonly walSegments: string[]
  readonly completeSegments: string[]
  readonly notices: string[]
  readonly bytes: number
}

export interface TarBackupOptions extends BaseBackupOptions {
  /** Called for each event before it is written; may sleep to simulate a slow consumer. */
  onEvent?: (e: BaseBackupEvent, conn: ReplicationConnection) => Promise<void> | void
  /** Called with the bytes of each WAL message before they are copied into their segment. */
  onWalData?: (data: Buffer) => void
}

export async function takeTarBackup(url: string, dir: string, o: TarBackupOptions = {}): Promise<TarBackup> {
  await mkdir(dir, { recursive: true })
  const walDir = join(dir, 'pg_wal')
  await mkdir(walDir, { recursive: true })
  const a = await connect(url)
  const b = await connect(url)
  try {
    const id = await identifySystem(b)
    const segSize = parseSize(await show(b, 'wal_segment_size'))
    const archives: TarBackup['archives'] = []
    const notices: string[] = []
    let out: WriteStream | undefined
    let startLsn = 0n
    let endLsn: Lsn | undefined
    let timeline = id.timeline
    let wal: Promise<{ segments: string[]; complete: string[] }> | undefined
    let stream: Awaited<ReturnType<typeof startReplication>> | undefined
    let bytes = 0
    const manifestPath = join(dir, 'backup_manifest')
    const manifest: Buffer[] = []

    for await (const e of baseBackup(a, { label: 'pgkeep test', checkpoint: 'fast', progress: true, ...o })) {
      await o.onEvent?.(e, a)
      switch (e.type) {
        case 'start': {
          startLsn = e.startLsn
          timeline = e.timeline
          const slot = `pgkeep_test_${b.backendPid}`
          await createReplicationSlot(b, slot, { temporary: true, reserveWal: true })
          // With transientData the WAL stream's bytes are transient too: receiveWal copies each message before it
          // asks for the next.
          const walStart = startLsn - (startLsn % BigInt(segSize))
          stream = await startReplication(b, { slot, startLsn: walStart, timeline, statusIntervalMs: 1000, transientData: o.transientData })
          wal = receiveWal(stream, walDir, segSize, timeline, () => endLsn, o.onWalData)
          wal.catch(() => {}) // observed below
          break
        }
        case 'archive': {
          const path = join(dir, e.name)
          archives.push({ name: e.name, path, tablespaceOid: e.tablespace.oid, location: e.tablespace.location })
          out = createWriteStream(path)
          break
        }
        case 'data':
          bytes += e.data.length
          // The stream writes later: with transientData the bytes are valid only until the next event.
          if (!out!.write(o.transientData ? Buffer.from(e.data) : e.data)) await new Promise<void>((r) => out!.once('drain', () => r()))
          break
        case 'archive-end':
          await new Promise<void>((resolve, reject) => out!.end((err?: Error | null) => (err ? reject(err) : resolve())))
          out = undefined
          break
        case 'manifest':
          manifest.push(Buffer.from(e.data))
          break
        case 'notice':
          notices.push(e.notice.message)
          break
        case 'end':
          endLsn = e.endLsn
          stream!.sendStatus(true) // wake the WAL loop so it sees the end position even if no WAL is flowing
          break
      }
    }
    await writeFile(manifestPath, Buffer.concat(manifest))
    const { segments, complete } = await wal!
    return {
      dir,
      startLsn,
      endLsn: endLsn!,
      timeline,
      archives,
      manifestPath,
      walDir,
      walSegments: segments,
      completeSegments: complete,
      notices,
      bytes,
    }
  } finally {
    await a.close()
    await b.close()
  }
}

/** Writes streamed WAL into segment files, until the end position is known and reached. */
async function receiveWal(
  stream: Awaited<ReturnType<typeof startReplication>>,
  walDir: string,
  segSize: number,
  timeline: number,
  end: () => Lsn | undefined,
  onData?: (data: Buffer) => void,
): Promise<{ segments: string[]; complete: string[] }> {
  const seg = BigInt(segSize)
  const segments: string[] = []
  const complete: string[] = []
  let buf: Buffer | undefined
  let segno = -1n
  const flush = async (partial: boolean) => {
    if (!buf) return
    const name = walName(timeline, segno, segSize)
    await writeFile(join(walDir, name), buf)
    segments.push(name)
    if (!partial) complete.push(name)
    buf = undefined
  }
  const done = () => {
    const e = end()
    return e !== undefined && stream.receivedLsn >= e
  }
  for await (const ev of stream) {
    if (ev.type === 'xlogdata') {
      onData?.(ev.data)
      let pos = ev.walStart
      let data = ev.data
      while (data.length > 0) {
        const s = pos / seg
        if (s !== segno) {
          await flush(false)
          segno = s
          buf = Buffer.alloc(segSize)
        }
        const off = Number(pos % seg)
        const n = Math.min(data.length, segSize - off)
        data.copy(buf!, off, 0, n)
        pos += BigInt(n)
        data = data.subarray(n)
        if (off + n === segSize) await flush(false)
      }
      stream.confirmFlushed(pos)
    }
    if (done()) break
  }
  await flush(true)
  return { segments, complete }
}

export function walName(tli: number, segno: bigint, segSize: number): string {
  const perId = 0x100000000n / BigInt(segSize)
  const hex = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0')
  return hex(tli) + hex(segno / perId) + hex(segno % perId)
}

function parseSize(text: string): number {
  const m = /^(\d+)(kB|MB|GB)$/.exec(text)
  if (!m) throw new Error(`cannot parse size '${text}'`)
  return Number(m[1]) * { kB: 1024, MB: 1 << 20, GB: 1 << 30 }[m[2] as 'kB' | 'MB' | 'GB']
}

export const describeRange = (b: TarBackup) => `${formatLsn(b.startLsn)}..${formatLsn(b.endLsn)}`
