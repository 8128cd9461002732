// `pgkeep backup` against a HOSTILE server (test/harness/hostile-server.ts, a loopback fake: no real server can be
// made to send these): tar names that escape, links outside pg_tblspc, hard links, fifos, devices, setuid modes,
// bad tablespace rows and archives, oversized frames before and after authentication, endless result sets. Each
// case runs through the library and as the built CLI (in a working directory inside a sentinel tree): it must fail
// with a protocol error naming what was refused, exit non-zero, record no backup, and leave every file outside the
// repository as it was (the sentinel tree is listed before and after). A benign archive is the control: the same
// fake then fails for another reason (its manifest), so the refusals are the entry checks' doing. Last, single
// replication commands against the fake: oversized or misnamed timeline histories, endless rows and notices; and
// bytes slipped in after the answer to SSLRequest.

import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { lstat, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect, show, timelineHistory } from '../../protocol/index.js'
import { takeBackup } from '../../src/backup/backup.js'
import { isPgkeepError } from '../../src/errors.js'
import { listBackups } from '../../src/repo/backup-record.js'
import { initRepository, type Repository } from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { runBin } from '../harness/cli.js'
import {
  craftTar,
  type CraftedEntry,
  type FakeConnection,
  type HostileScenario,
  type HostileServer,
  startHostileServer,
  wire,
} from '../harness/hostile-server.js'
import { ensureBuilt } from './wal-helpers.js'

beforeAll(() => ensureBuilt(), 120_000)

/** Every path under `dir` (except the repository) with its type, mode and size: what must not change. */
async function listTree(dir: string, skip: string): Promise<string[]> {
  const out: string[] = []
  async function walk(rel: string): Promise<void> {
    for (const name of await readdir(join(dir, rel))) {
      const path = rel ? `${rel}/${name}` : name
      if (path === skip) continue
      const st = await lstat(join(dir, path))
      out.push(`${path} ${st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : 'f'} ${(st.mode & 0o7777).toString(8)} ${st.isFile() ? st.size : 0}`)
      if (st.isDirectory()) await walk(path)
    }
  }
  await walk('')
  return out.sort()
}

const TS = { oid: '16385', location: '/srv/pgkeep-hostile-ts' }
/** A real PostgreSQL 16 pg_control (catalog version 202307071), from the fixtures. */
const PG_CONTROL_16 = gunzipSync(readFileSync(join(import.meta.dirname, '..', 'fixtures', 'pg', 'pg_control-16.gz')))
const realBase: CraftedEntry[] = [
  { name: 'global', type: 'directory' },
  { name: 'global/pg_control', content: PG_CONTROL_16 },
  { name: 'pg_tblspc', type: 'directory' },
  { name: 'pg_tblspc/16385', type: 'symlink', mode: 0o777, linkname: TS.location },
]
const baseTar = (entries: CraftedEntry[]) => async () => [{ name: 'base.tar', location: '', tar: await craftTar(entries) }]
const withTablespace =
  (tsEntries: CraftedEntry[], baseEntries: CraftedEntry[] = [{ name: 'base', type: 'directory' }]) =>
  async () => [
    { name: '16385.tar', location: TS.location, tar: await craftTar(tsEntries) },
    { name: 'base.tar', location: '', tar: await craftTar(baseEntries) },
  ]
/** A 64 KiB piece of zeros sent again and again, up to 256 MiB, after a header declaring 1 GiB. */
const FLOOD = Buffer.alloc(64 << 10)
const FLOOD_MAX = 256 << 20
const flood = async (c: FakeConnection, ...head: Buffer[]) => {
  await c.send(...head)
  await c.flood(FLOOD, FLOOD_MAX)
}
const endlessRows = async (c: FakeConnection, names: string[], row: string[]) => {
  if (!(await c.send(wire.rowDescription(names)))) return
  await c.flood(Buffer.concat(Array.from({ length: 256 }, () => wire.dataRow(row))), FLOOD_MAX)
}

interface Case {
  name: string
  scenario: (sentinel: string) => HostileScenario
  refused: RegExp
  /** The server floods: it must not get far before pgkeep hangs up. */
  floods?: boolean
}

const CASES: Case[] = [
  {
    name: "tar name '../x'",
    scenario: () => ({ archives: baseTar([{ name: '../x' }]) }),
    refused: /archive 'base\.tar' from the server has entry '\.\.\/x' that pgkeep refuses: the path has a '\.\.' segment/,
  },
  {
    name: "tar name '/etc/x'",
    scenario: () => ({ archives: baseTar([{ name: '/etc/x' }]) }),
    refused: /entry '\/etc\/x' that pgkeep refuses: the path is absolute/,
  },
  { name: 'absolute tar name into the sentinel', scenario: (s) => ({ archives: baseTar([{ name: `${s}/abs-x` }]) }), refused: /the path is absolute/ },
  {
    name: "tar name 'base/../../x'",
    scenario: () => ({ archives: baseTar([{ name: 'base', type: 'directory' }, { name: 'base/../../x' }]) }),
    refused: /entry 'base\/\.\.\/\.\.\/x' that pgkeep refuses: the path has a '\.\.' segment/,
  },
  {
    name: 'symlink outside pg_tblspc',
    scenario: () => ({ archives: baseTar([{ name: 'base/1/evil', type: 'symlink', mode: 0o777, linkname: '/etc' }]) }),
    refused: /entry 'base\/1\/evil' that pgkeep refuses: a symlink is only allowed at pg_tblspc\/<oid>/,
  },
  {
    name: 'pg_tblspc link to a place that is not the tablespace',
    scenario: () => ({
      tablespaces: [TS],
      archives: withTablespace([{ name: 'PG_16_202307071', type: 'directory' }], [{ name: 'pg_tblspc/16385', type: 'symlink', mode: 0o777, linkname: '/etc' }]),
    }),
    refused: /entry 'pg_tblspc\/16385' that pgkeep refuses: it links to '\/etc', but tablespace 16385 is at '\/srv\/pgkeep-hostile-ts'/,
  },
  {
    name: 'hard link',
    scenario: () => ({ archives: baseTar([{ name: 'base/1/hard', type: 'link', linkname: 'base/1/1' }]) }),
    refused: /entry 'base\/1\/hard' that pgkeep refuses: entries of type 'link' are not allowed/,
  },
  { name: 'fifo', scenario: () => ({ archives: baseTar([{ name: 'base/1/fifo', type: 'fifo' }]) }), refused: /entry 'base\/1\/fifo'.*type 'fifo'/ },
  {
    name: 'character device',
    scenario: () => ({ archives: baseTar([{ name: 'dev/null', type: 'character-device' }]) }),
    refused: /entry 'dev\/null'.*type 'character-device'/,
  },
  {
    name: 'setuid mode',
    scenario: () => ({ archives: baseTar([{ name: 'base/1/suid', mode: 0o4755, content: '#!/bin/sh\n' }]) }),
    refused: /entry 'base\/1\/suid' that pgkeep refuses: mode 4755 has bits beyond 0777/,
  },
  {
    name: 'tablespace row with oid 0',
    scenario: () => ({ tablespaces: [{ oid: '0', location: TS.location }] }),
    refused: /tablespace list is not acceptable: tablespace 0 at '\/srv\/pgkeep-hostile-ts': tablespace oid 0 is not a positive 32-bit integer/,
  },
  {
    name: 'tablespace row with an oid that is a path',
    scenario: () => ({ tablespaces: [{ oid: '16385/../..', location: TS.location }] }),
    refused: /tablespace oid '16385\/\.\.\/\.\.' is not a decimal number/,
  },
  {
    name: 'tablespace row with a relative location',
    scenario: () => ({ tablespaces: [{ oid: '16385', location: 'relative/ts' }] }),
    refused: /tablespace 16385 at 'relative\/ts': the location is not an absolute path/,
  },
  {
    name: 'tablespace archive entry outside its version directory',
    scenario: () => ({ tablespaces: [TS], archives: withTablespace([{ name: 'base/1/x' }]) }),
    refused:
      /archive '16385\.tar' from the server has entry 'base\/1\/x' that pgkeep refuses: a tablespace archive holds only its PG_16_<catversion> directory/,
  },
  {
    name: "tablespace directory of another catalog version than pg_control's",
    scenario: () => ({ tablespaces: [TS], archives: withTablespace([{ name: 'PG_16_202307072', type: 'directory' }], realBase) }),
    refused: /archive '16385\.tar' from the server holds directory PG_16_202307072, but the cluster's pg_control says PG_16_202307071/,
  },
  {
    name: 'archive named to escape',
    scenario: () => ({ archives: async () => [{ name: '../../x.tar', location: '', tar: await craftTar([{ name: 'base', type: 'directory' }]) }] }),
    refused: /archive '\.\.\/\.\.\/x\.tar' for the data directory, not 'base\.tar'/,
  },
  {
    name: 'a 1 GiB frame declared before authentication',
    scenario: () => ({ startup: (c) => flood(c, wire.header('R', 1 << 30)) }),
    refused: /message of type 'R' declaring 1073741824 bytes; at most 2000 are allowed before authentication/,
    floods: true,
  },
  {
    name: 'a 1 GiB frame declared after authentication',
    scenario: () => ({ identifySystem: (c) => flood(c, wire.rowDescription(['systemid', 'timeline', 'xlogpos', 'dbname']), wire.header('D', 1 << 30)) }),
    refused: /message of type 'D' declaring 1073741824 bytes; at most 2097152 are allowed for it/,
    floods: true,
  },
  {
    name: 'an endless IDENTIFY_SYSTEM result set',
    scenario: () => ({ identifySystem: (c) => endlessRows(c, ['systemid', 'timeline', 'xlogpos', 'dbname'], ['7000000000000000001', '1', '0/3000000', '']) }),
    refused: /the server answered IDENTIFY_SYSTEM with more than 16 rows/,
    floods: true,
  },
  {
    name: 'an endless tablespace list',
    scenario: () => ({ tablespaceList: (c) => endlessRows(c, ['spcoid', 'spclocation', 'size'], ['16385', TS.location, '1']) }),
    refused: /the server answered BASE_BACKUP tablespace list with more than 10000 rows/,
    floods: true,
  },
]

describe('pgkeep backup from a hostile server', () => {
  let sentinel: string
  let work: string
  let repoDir: string
  let repo: Repository
  let snapshot: string[]

  beforeAll(async () => {
    sentinel = await mkdtemp(join(tmpdir(), 'pgkeep-hostile-'))
    work = join(sentinel, 'work')
    repoDir = join(sentinel, 'repo')
    await mkdir(join(work, 'base'), { recursive: true })
    await mkdir(join(sentinel, 'keep', 'sub'), { recursive: true })
    await writeFile(join(sentinel, 'keep', 'a.txt'), 'sentinel\n', { mode: 0o644 })
    await writeFile(join(sentinel, 'keep', 'sub', 'b.txt'), 'sentinel too\n', { mode: 0o600 })
    await mkdir(repoDir)
    repo = await initRepository(await openFsStorage(repoDir), {})
    snapshot = await listTree(sentinel, 'repo')
    expect(snapshot.length).toBeGreaterThan(4)
    expect(existsSync('/etc/x')).toBe(false)
  })
  afterAll(async () => {
    await repo?.close()
    if (sentinel) await rm(sentinel, { recursive: true, force: true })
  })

  async function expectNothingChanged(): Promise<void> {
    expect(await listTree(sentinel, 'repo')).toEqual(snapshot)
    expect(existsSync('/etc/x')).toBe(false)
    expect(await listBackups(repo)).toEqual([])
  }

  /** Runs `attempt` against a fake server playing case `c`, then checks what pgkeep left behind. */
  async function against(c: Case, attempt: (server: HostileServer) => Promise<void>): Promise<void> {
    const server = await startHostileServer(c.scenario(sentinel))
    try {
      await attempt(server)
      await server.settled()
      // pgkeep hung up at the refusal: the server got nowhere near the 256 MiB it tried to send.
      if (c.floods) expect(server.bytesWritten).toBeLessThan(32 << 20)
    } finally {
      await server.close()
    }
    await expectNothingChanged()
  }

  for (const c of CASES) {
    it(`${c.name}: the library refuses it and records nothing`, async () => {
      await against(c, async (server) => {
        const buffersBefore = process.memoryUsage().arrayBuffers
        const err = await takeBackup({ server: { conninfo: server.conninfo, env: {} }, repo }).then(
          () => undefined,
          (e: unknown) => e,
        )
        // The flood reuses one 64 KiB buffer, so growth here would be pgkeep holding what it was sent.
        if (c.floods) expect(process.memoryUsage().arrayBuffers - buffersBefore).toBeLessThan(64 << 20)
        expect(isPgkeepError(err), String(err)).toBe(true)
        expect((err as { code: string }).code, String(err)).toBe('PROTOCOL')
        expect((err as Error).message).toMatch(c.refused)
        expect((err as { hint?: string }).hint).toMatch(/genuine PostgreSQL server/)
      })
    }, 60_000)

    it(`${c.name}: bin/pgkeep.js backup exits 13 naming it and records nothing`, async () => {
      await against(c, async (server) => {
        const res = await runBin(['backup', '-d', server.conninfo, '--repo', repoDir], { HOME: work }, { cwd: work })
        expect(res.code, res.stderr).toBe(13)
        expect(res.stderr).toMatch(c.refused)
        expect(res.stderr).toMatch(/HINT: .*genuine PostgreSQL server/)
      })
    }, 60_000)
  }

  it('control: a benign archive from the same fake passes the entry checks and fails on its (fake) manifest', async () => {
    const server = await startHostileServer({
      tablespaces: [TS],
      archives: withTablespace(
        [
          { name: 'PG_16_202307071', type: 'directory' },
          { name: 'PG_16_202307071/1', type: 'directory' },
          { name: 'PG_16_202307071/1/16400', content: 'x' },
        ],
        [...realBase, { name: 'base', type: 'directory' }, { name: 'base/1/1234', content: 'x' }],
      ),
    })
    try {
      const err = await takeBackup({ server: { conninfo: server.conninfo, env: {} }, repo }).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect((err as { code: string }).code, String(err)).toBe('FORMAT')
      expect((err as Error).message).toMatch(/backup manifest/)
    } finally {
      await server.close()
    }
    await expectNothingChanged()
  }, 60_000)
})

describe('replication commands against a hostile server', () => {
  /**
   * Runs `command` on a connection to a fake that answers with `answer`; resolves with the error it fails with.
   * A response over its bound must also have dropped the connection (`dropped`).
   */
  async function failure(
    answer: (query: string, c: FakeConnection) => Promise<boolean>,
    command: (conn: Awaited<ReturnType<typeof connect>>) => Promise<unknown>,
    dropped = true,
  ) {
    const server = await startHostileServer({ query: answer })
    try {
      const conn = await connect(server.conninfo, { env: {} })
      try {
        const err = await command(conn).then(
          () => undefined,
          (e: unknown) => e,
        )
        expect(conn.isClosed).toBe(dropped)
        return err as Error & { code?: string }
      } finally {
        conn.destroy()
      }
    } finally {
      await server.close()
    }
  }
  const history = (name: string, content: string) => async (q: string, c: FakeConnection) =>
    q.startsWith('TIMELINE_HISTORY') && c.send(wire.resultSet(['filename', 'content'], [[name, content]], 'TIMELINE_HISTORY'), wire.readyForQuery())

  it('a timeline history over 1 MiB, and one under another name, are refused', async () => {
    const big = await failure(history('00000002.history', '1\t0/3000000\tx\n'.repeat(80_000)), (c) => timelineHistory(c, 2))
    expect(big.code).toBe('PROTOCOL')
    expect(big.message).toMatch(/the server answered TIMELINE_HISTORY with more than 1114112 bytes/)
    const over = await failure(history('00000002.history', '1\t0/3000000\tx\n'.repeat(75_000)), (c) => timelineHistory(c, 2), false)
    expect(over.message).toBe('the history file of timeline 2 has 1050000 bytes; at most 1048576 are accepted')
    const renamed = await failure(history('../../00000002.history', '1\t0/3000000\tx\n'), (c) => timelineHistory(c, 2), false)
    expect(renamed.message).toMatch(/TIMELINE_HISTORY 2 answered with file name '\.\.\/\.\.\/00000002\.history', not '00000002\.history'/)
  }, 60_000)

  it('endless SHOW rows and endless notices are cut off at the bound', async () => {
    const rows = await failure(
      async (q, c) =>
        q.startsWith('SHOW') &&
        (await c.send(wire.rowDescription(['x'])), await c.flood(Buffer.concat(Array(256).fill(wire.dataRow(['8192']))), FLOOD_MAX), true),
      (c) => show(c, 'block_size'),
    )
    expect(rows.message).toMatch(/the server answered SHOW with more than 16 rows/)
    const notice = Buffer.concat(Array(256).fill(wire.frame('N', Buffer.from('SNOTICE\0C00000\0Mhello\0\0'))))
    const notices = await failure(
      async (q, c) => q.startsWith('SHOW') && (await c.send(wire.rowDescription(['x'])), await c.flood(notice, FLOOD_MAX), true),
      (c) => show(c, 'block_size'),
    )
    expect(notices.message).toMatch(/the server answered SHOW with more than 65536 bytes/)
  }, 60_000)
})

describe('a server that slips bytes in after its answer to SSLRequest (CVE-2021-23222)', () => {
  /** A loopback stand-in that answers the 8-byte SSLRequest with `answer` and closes 300 ms later. */
  async function answering(answer: Buffer): Promise<{ port: number; close: () => Promise<void> }> {
    const server = createServer((socket) => {
      socket.on('error', () => {})
      socket.once('data', () => {
        socket.write(answer)
        setTimeout(() => socket.destroy(), 300)
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
    const port = (server.address() as { port: number }).port
    return { port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) }
  }

  it("refuses 'N' or 'S' followed by anything in the same packet", async () => {
    for (const [first, sslmode] of [
      ['N', 'prefer'],
      ['S', 'require'],
    ] as const) {
      // An AuthenticationOk and ReadyForQuery right behind the answer: a man in the middle's would-be session.
      const s = await answering(Buffer.concat([Buffer.from(first), wire.authOk(), wire.readyForQuery()]))
      try {
        const err = await connect(`host=127.0.0.1 port=${s.port} user=x sslmode=${sslmode} connect_timeout=5`).then(
          () => undefined,
          (e: unknown) => e as Error,
        )
        expect(err?.message, first).toBe('received unencrypted data after SSL request')
      } finally {
        await s.close()
      }
    }
  }, 30_000)

  it("control: 'N' alone goes on to the startup message", async () => {
    const s = await answering(Buffer.from('N'))
    try {
      const err = await connect(`host=127.0.0.1 port=${s.port} user=x sslmode=prefer connect_timeout=5`).then(
        () => undefined,
        (e: unknown) => e as Error,
      )
      // The stand-in answers nothing to the startup message and closes: a lost connection, not the SSL refusal.
      expect(err?.message).toMatch(/closed the connection/)
    } finally {
      await s.close()
    }
  }, 30_000)
})
