// The lean entry point of `wal get` (src/cli/wal-get-lean.ts) against real recoveries. bin/pgkeep.js tries it
// first; it serves only through a live prefetch daemon bound to the same repository and cluster, else the full
// command runs. Which one asked is in the daemon's log ("answered NAME: STATUS (lean client)"), so these tests see
// which path served each file, not how fast.
// - A recovery through restore_command: the first call (no daemon yet) starts the daemon from the lean path too,
//   which serves every file; the full command never runs; every segment is replayed.
// - The same through the pgkeep command (bin/pgkeep): once the first call has left its key, the launcher answers
//   every later call without starting node: it serves prefetched segments ("taken NAME (fast path)" in the daemon's
//   log) and asks the daemon for the others ("(shell client)"), the files recovery ends on included (missing).
// - By hand: the first call starts the daemon from the lean path; a daemon of another repository on the spool →
//   the full command (which replaces the daemon); then lean again.
// - A daemon bound to another cluster than the data directory's (a wrong --cluster): the lean path gets the
//   daemon's answer and refuses it, the full command refuses it too with exit 255, and the server stops (FATAL).

import { execFileSync, spawnSync } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster, startOnDataDir } from '../harness/cluster.js'
import { handOver, runAsServer } from '../harness/server-user.js'
import { type TarBackup, takeTarBackup } from '../harness/tar-backup.js'
import { shareWithServer } from './restore-fixture.js'
import { BIN, ensureBuilt, startExpectingFailure, stopPrefetchDaemons, waitUntil } from './wal-helpers.js'

beforeAll(() => ensureBuilt(), 120_000)

const MAJOR = 16

/** The daemon log's answers: file name, status and which entry point asked. */
const answers = (log: string) =>
  [...log.matchAll(/answered (\S+): (\w+) \((lean|full|shell) client\)/g)].map((m) => ({ name: m[1]!, status: m[2]!, client: m[3]! }))

describe(`wal get's lean entry point (PostgreSQL ${MAJOR})`, () => {
  let a: Cluster
  let b: Cluster
  let work: string
  let repo: string
  let backupA: TarBackup
  let heldA: string[] = []
  let heldB: string[] = []
  const spools: string[] = []

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'pgkeep-lean-'))
    await chmod(work, 0o755)
    a = await startCluster({ major: MAJOR, tablespaces: 0, conf: { wal_keep_size: '1GB' } })
    b = await startCluster({ major: MAJOR, tablespaces: 0, conf: { wal_keep_size: '1GB' } })
    repo = join(work, 'repo')
    expect((await runMain(['init', '--repo', repo])).code).toBe(0)
    backupA = await backupAndWrite(a, 'a', 5)
    const backupB = await backupAndWrite(b, 'b', 1)
    heldA = await pushFinished(a, repo, backupA)
    heldB = await pushFinished(b, repo, backupB)
  }, 300_000)
  afterAll(async () => {
    for (const s of spools) await stopPrefetchDaemons(s)
    await a?.destroy()
    await b?.destroy()
    if (work) await rm(work, { recursive: true, force: true })
  })

  async function backupAndWrite(c: Cluster, label: string, segments: number): Promise<TarBackup> {
    await c.sql('create table t (id int primary key, v text)')
    const backup = await takeTarBackup(c.url(), join(work, `backup-${label}`))
    for (let i = 0; i < segments; i++) {
      await c.sql(`insert into t select g, $1 from generate_series($2::int, $2::int + 9999) g`, [label, 10000 * (i + 1)])
      await c.sql('select pg_switch_wal()')
    }
    return backup
  }

  /** Stores every finished segment of `c` from the backup's first one on (and the backup history file). */
  async function pushFinished(c: Cluster, to: string, backup: TarBackup): Promise<string[]> {
    const [{ current }] = await c.sql<{ current: string }>('select pg_walfile_name(pg_current_wal_lsn() + 1) current')
    const walDir = join(c.dataDir, 'pg_wal')
    const names = (await readdir(walDir)).filter((f) => (/^[0-9A-F]{24}$/.test(f) && f >= backup.walSegments[0]! && f < current) || f.endsWith('.backup'))
    for (const f of names.sort()) {
      const r = await runMain(['wal', 'push', '--repo', to, join(walDir, f)])
      expect(r.code, r.stderr).toBe(0)
    }
    shareWithServer(to)
    return names.filter((f) => !f.endsWith('.backup'))
  }

  const systemIdOf = async (c: Cluster) => (await c.sql<{ s: string }>('select system_identifier::text s from pg_control_system()'))[0]!.s

  /** A copy of A's base backup in a fresh data directory, set to recover through `restoreCommand` alone. */
  async function restoredDataDir(label: string): Promise<{ baseDir: string; dataDir: string }> {
    const baseDir = join(work, label)
    const dataDir = join(baseDir, 'data')
    await mkdir(dataDir, { recursive: true })
    await chmod(baseDir, 0o755)
    execFileSync('tar', ['-xf', backupA.archives.find((x) => x.tablespaceOid === null)!.path, '-C', dataDir])
    await writeFile(join(dataDir, 'recovery.signal'), '')
    return { baseDir, dataDir }
  }

  it('a recovery: the lean path starts the daemon on the first call and serves every file, the full command never runs', async () => {
    const { baseDir, dataDir } = await restoredDataDir('restored')
    const spool = join(dataDir, 'pg_wal', '.pgkeep-prefetch')
    spools.push(spool)
    const c = await startOnDataDir(MAJOR, dataDir, {
      baseDir,
      conf: { archive_mode: 'off', restore_command: `${process.execPath} ${BIN} wal get --repo ${repo} --linger 30 %f %p` },
    })
    try {
      await waitUntil('recovery ended', async () => !(await c.sql<{ rec: boolean }>('select pg_is_in_recovery() rec'))[0]!.rec, 120_000)
      const serverLog = await c.log()
      expect(Number((await c.sql<{ n: string }>(`select count(*)::text n from t where v = 'a'`))[0]!.n), serverLog).toBe(50000)
      const replayed = new Set([...serverLog.matchAll(/restored log file "([0-9A-F]{24})" from archive/g)].map((m) => m[1]))
      expect(heldA.filter((s) => !replayed.has(s))).toEqual([])

      const log = () => readFile(join(spool, 'daemon.log'), 'utf8')
      await waitUntil('every replayed segment is in the daemon log', async () => answers(await log()).filter((x) => x.status === 'ok').length >= replayed.size)
      const all = answers(await log())
      // The first call of a recovery (it asks for a timeline history file) started the daemon from the lean path,
      // without loading the CLI; every call after it found the daemon live.
      expect(all[0], await log()).toMatchObject({ status: 'missing', client: 'lean' })
      expect(
        all.filter((x) => x.client !== 'lean'),
        await log(),
      ).toEqual([])
      const ok = all.filter((x) => x.status === 'ok' && /^[0-9A-F]{24}$/.test(x.name))
      expect(ok.length).toBeGreaterThanOrEqual(heldA.length)
    } finally {
      await c.destroy()
    }
  })

  it('a recovery through the pgkeep command: after the first call left its key, the launcher answers every call without node', async () => {
    const { baseDir, dataDir } = await restoredDataDir('restored-fast')
    const spool = join(dataDir, 'pg_wal', '.pgkeep-prefetch')
    spools.push(spool)
    const launcher = join(BIN, '..', 'pgkeep')
    const c = await startOnDataDir(MAJOR, dataDir, {
      baseDir,
      conf: { archive_mode: 'off', restore_command: `${launcher} wal get --repo ${repo} --linger 30 %f %p` },
    })
    try {
      await waitUntil('recovery ended', async () => !(await c.sql<{ rec: boolean }>('select pg_is_in_recovery() rec'))[0]!.rec, 120_000)
      const serverLog = await c.log()
      expect(Number((await c.sql<{ n: string }>(`select count(*)::text n from t where v = 'a'`))[0]!.n), serverLog).toBe(50000)
      const replayed = [...serverLog.matchAll(/restored log file "([0-9A-F]{24})" from archive/g)].map((m) => m[1]!)
      expect(heldA.filter((s) => !replayed.includes(s))).toEqual([])
      // Every replayed segment was served once: answered to a client (a request), or taken by the launcher from
      // the spool without asking.
      const log = () => readFile(join(spool, 'daemon.log'), 'utf8')
      const taken = async () => [...(await log()).matchAll(/taken ([0-9A-F]{24}) \(fast path\)/g)].map((m) => m[1]!)
      const answered = async () =>
        answers(await log())
          .filter((x) => x.status === 'ok' && /^[0-9A-F]{24}$/.test(x.name))
          .map((x) => x.name)
      await waitUntil('the daemon noticed every segment taken', async () => (await taken()).length + (await answered()).length >= replayed.length)
      expect([...(await answered()), ...(await taken())].sort(), await log()).toEqual([...replayed].sort())
      // Node ran once (the lean path): the first call (a timeline history file, missing) started the daemon and left
      // the key. Every later request came from the launcher: segments not fetched yet when the server asked (how
      // many depends on the machine's load), and the files recovery ends on, which the repository does not have.
      const all = answers(await log())
      expect(all[0], await log()).toMatchObject({ status: 'missing', client: 'lean' })
      expect(
        all.slice(1).filter((x) => x.client !== 'shell'),
        await log(),
      ).toEqual([])
      expect(all.slice(1).filter((x) => x.status === 'missing').length, await log()).toBeGreaterThanOrEqual(1)
      expect((await taken()).length, await log()).toBeGreaterThanOrEqual(1)
    } finally {
      await c.destroy()
    }
  })

  it('by hand: the lean path starts the daemon; a daemon of another repository means the full command, which replaces it; then lean again', async () => {
    const repo2 = join(work, 'repo2')
    expect((await runMain(['init', '--repo', repo2])).code).toBe(0)
    const heldA2 = await pushFinished(a, repo2, backupA)
    const spool = join(work, 'spool-by-hand')
    spools.push(spool)
    const dest = join(work, 'dest')
    await mkdir(dest)
    const sysA = await systemIdOf(a)
    const get = (r: string, name: string) => {
      const out = spawnSync(process.execPath, [BIN, 'wal', 'get', '--repo', r, '--cluster', sysA, '--spool', spool, '--linger', '30', name, join(dest, name)], {
        encoding: 'utf8',
      })
      expect(out.status, out.stderr).toBe(0)
    }
    const log = () => readFile(join(spool, 'daemon.log'), 'utf8').catch(() => '')
    // The daemon logs an answer after writing it, and appends to its log in the background: the client may have
    // been served and gone before the line is there, so wait for the answer to this call's file.
    let seen = 0
    const answerTo = async (name: string) => {
      let found: ReturnType<typeof answers>[number] | undefined
      await waitUntil(`the daemon logged its answer to ${name}`, async () => {
        const all = answers(await log())
        const i = all.findIndex((x, k) => k >= seen && x.name === name)
        if (i < 0) return false
        found = all[i]
        seen = i + 1
        return true
      })
      return found
    }
    const [s1, s2, s3, s4] = heldA2 as [string, string, string, string]

    get(repo, s1)
    expect(await answerTo(s1)).toEqual({ name: s1, status: 'ok', client: 'lean' })
    get(repo, s2)
    expect(await answerTo(s2)).toEqual({ name: s2, status: 'ok', client: 'lean' })
    get(repo2, s3)
    expect(await answerTo(s3)).toEqual({ name: s3, status: 'ok', client: 'full' })
    expect(await log()).toMatch(/retired: asked for repository '.*repo2'/)
    expect(JSON.parse(await readFile(join(spool, 'daemon.json'), 'utf8')).repo).toBe(repo2)
    get(repo2, s4)
    expect(await answerTo(s4)).toEqual({ name: s4, status: 'ok', client: 'lean' })
    for (const s of [s1, s2, s3, s4]) expect((await readFile(join(dest, s))).equals(await readFile(join(a.dataDir, 'pg_wal', s))), s).toBe(true)
  })

  it('by hand through the pgkeep command: the daemon has its settings, the first call leaves the key, a replaced repository retires the daemon', async () => {
    const repo3 = join(work, 'repo3')
    expect((await runMain(['init', '--repo', repo3])).code).toBe(0)
    const held = await pushFinished(a, repo3, backupA)
    expect(held.length).toBeGreaterThanOrEqual(5)
    // A directory standing for a data directory whose server runs (postmaster.pid), as restore_command sees it.
    const data = join(work, 'by-hand-fast')
    await mkdir(join(data, 'pg_wal'), { recursive: true })
    await writeFile(join(data, 'postmaster.pid'), `4242\n${data}\n1733400000\n5432\n`)
    const spool = join(data, 'pg_wal', '.pgkeep-prefetch')
    spools.push(spool)
    const sysA = await systemIdOf(a)
    const launcher = join(BIN, '..', 'pgkeep')
    const get = (name: string) =>
      spawnSync(launcher, ['wal', 'get', '--repo', repo3, '--cluster', sysA, '--linger', '30', name, 'pg_wal/RECOVERYXLOG'], { cwd: data, encoding: 'utf8' })
    const log = () => readFile(join(spool, 'daemon.log'), 'utf8').catch(() => '')
    const [s1, s2, s3, s4, s5] = held as [string, string, string, string, string]
    expect(get(s1).status).toBe(0)
    // The daemon runs as the pgkeep command runs node: with its process settings.
    const daemonPid = JSON.parse(await readFile(join(spool, 'daemon.json'), 'utf8')).pid as number
    const tunables = /GLIBC_TUNABLES=(\S+)/.exec(await readFile(launcher, 'utf8'))![1]!
    // glibc ends each tunable with a NUL in place when it reads them: only the first shows as part of the variable.
    expect((await readFile(`/proc/${daemonPid}/environ`, 'utf8')).split('\0')).toContain(`GLIBC_TUNABLES=${tunables.split(':')[0]}`)
    expect((await readFile(`/proc/${daemonPid}/cmdline`, 'utf8')).split('\0')).toContainEqual(expect.stringMatching(/^--max-semi-space-size=/))
    // The first call (node's full command: it started the daemon) left the key: the launcher serves the next ones.
    expect(await readdir(spool)).toContain('fast-path')
    for (const s of [s2, s3]) {
      await waitUntil(`${s} is prefetched`, async () => (await readdir(spool)).includes(s))
      expect(get(s).status).toBe(0)
      await waitUntil(`the daemon noticed ${s} taken`, async () => (await log()).includes(`taken ${s} (fast path)`))
    }
    expect((await readFile(join(data, 'pg_wal', 'RECOVERYXLOG'))).equals(await readFile(join(a.dataDir, 'pg_wal', s3)))).toBe(true)

    // Another repository at the same location, holding only the first segment: within a second of a segment taken
    // by the launcher the daemon looks, and retires, spool emptied, key included. It may look after s3's take already
    // (the replacement came within that second), and node then answers s4 from the new repository (exit 1: not
    // there); otherwise the launcher serves s4, fetched from the old one, and that take makes it look.
    await waitUntil(`${s4} is prefetched`, async () => (await readdir(spool)).includes(s4))
    await rm(repo3, { recursive: true, force: true })
    expect((await runMain(['init', '--repo', repo3])).code).toBe(0)
    expect((await runMain(['wal', 'push', '--repo', repo3, join(a.dataDir, 'pg_wal', s1)])).code).toBe(0)
    const r4 = get(s4)
    expect([0, 1], r4.stderr).toContain(r4.status)
    await waitUntil('the daemon retired', async () => /retired: the repository at .* is no longer the one it opened/.test(await log()), 10_000)
    // The retired daemon's key is gone. When node answered s4 from the new repository, it may have started a daemon
    // of its own and left that one's key (its pid on the key's second line): not the retired daemon's.
    const key = await readFile(join(spool, 'fast-path'), 'utf8').catch(() => '')
    expect(key.split('\n')[1]).not.toBe(String(daemonPid))
    // Node answers again, from the repository now at the location.
    const r = get(s5)
    expect(r.status, r.stderr).toBe(1)
    expect(r.stderr).toContain('is not in the repository')
  })

  it('a daemon bound to another cluster than the data directory: refused by both paths, exit 255, the server stops', async () => {
    const { baseDir, dataDir } = await restoredDataDir('wrong-cluster')
    const sysB = await systemIdOf(b)
    // A spool of the server's user with a daemon bound to cluster B, started by hand (as a wrong --cluster would).
    const home = join(work, 'spool-home')
    await mkdir(home, { mode: 0o755 })
    await handOver(home)
    const spool = join(home, 'spool')
    spools.push(spool)
    await runAsServer(process.execPath, [BIN, 'wal', 'get', '--repo', repo, '--cluster', sysB, '--spool', spool, '--linger', '60', heldB[0]!, join(home, 'x')])
    const restore = `${process.execPath} ${BIN} wal get --repo ${repo} --cluster ${sysB} --spool ${spool} --linger 60 %f %p`
    const { started, log: serverLog } = await startExpectingFailure(MAJOR, dataDir, { baseDir, conf: { archive_mode: 'off', restore_command: restore } })
    expect(started, serverLog).toBe(false)
    expect(serverLog).toMatch(/FATAL: {2}could not restore file "[^"]+" from archive: child process exited with exit code 255/)
    expect(serverLog).toContain(`is cluster ${sysB}, but the data directory restore_command runs in is cluster ${await systemIdOf(a)}`)
    expect(serverLog).not.toMatch(/archive recovery complete|database system is ready to accept connections/)
    // The lean path asked (and got B's answer, which it refused), then the full command asked again (the daemon
    // appends its log lines in the background: wait for both).
    const clients = async () =>
      answers(await readFile(join(spool, 'daemon.log'), 'utf8'))
        .filter((x) => heldA.includes(x.name))
        .map((x) => x.client)
    await waitUntil('the daemon logged answers to both entry points', async () => {
      const c = await clients()
      return c.includes('lean') && c.includes('full')
    }).catch(() => {})
    expect(await clients()).toEqual(expect.arrayContaining(['lean', 'full']))
    await rm(baseDir, { recursive: true, force: true })
  })
})
