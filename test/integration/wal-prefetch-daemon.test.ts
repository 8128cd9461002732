// The prefetch daemon of `wal get` against real recoveries: two recoveries in a row against a repository replaced
// at the same location while the first recovery's daemon still lingers (restore_command with a long --linger). It
// must be replaced, not trusted: the second recovery replays every segment the new repository holds, and at no
// moment do two daemons serve the spool. Once with the default spool in a data directory made again at the same
// path (the new repository holding another cluster), once with a --spool both recoveries name (the new repository
// encrypted, holding more WAL of the same cluster). The daemon's files are private (0600), its spool 0700.
// The second test continues the first one's cluster A.

import { execFileSync } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster, startOnDataDir } from '../harness/cluster.js'
import { handOver } from '../harness/server-user.js'
import { type TarBackup, takeTarBackup } from '../harness/tar-backup.js'
import { shareWithServer } from './restore-fixture.js'
import { BIN, ensureBuilt, prefetchDaemons, stopPrefetchDaemons, waitUntil, watchPrefetchDaemons } from './wal-helpers.js'

beforeAll(() => ensureBuilt(), 120_000)

const MAJOR = 15
const rows = async (c: Cluster, v: string) => Number((await c.sql<{ n: string }>(`select count(*)::text n from t where v = $1`, [v]))[0]!.n)

describe(`wal get prefetch daemon across recoveries (PostgreSQL ${MAJOR})`, () => {
  let a: Cluster
  let b: Cluster
  let work: string
  let restoredDir: string
  let spool: string
  const restored: Cluster[] = []

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'pgkeep-prefetch-'))
    await chmod(work, 0o755)
    // Both recoveries run in the same data directory (removed and made again in between), so they share the
    // default spool, pg_wal/.pgkeep-prefetch.
    restoredDir = join(work, 'restored')
    spool = join(restoredDir, 'data', 'pg_wal', '.pgkeep-prefetch')
    a = await startCluster({ major: MAJOR, tablespaces: 0, conf: { wal_keep_size: '1GB' } })
    b = await startCluster({ major: MAJOR, tablespaces: 0, conf: { wal_keep_size: '1GB' } })
  })
  afterAll(async () => {
    // The daemons first: one may still be writing into a spool inside a restored data directory.
    if (spool) await stopPrefetchDaemons(spool)
    if (work) await stopPrefetchDaemons(join(work, 'spool-home', 'spool'))
    for (const r of restored) await r.destroy()
    await a?.destroy()
    await b?.destroy()
    if (work) await rm(work, { recursive: true, force: true })
  })

  /** Stores every finished segment of `c` from the backup's first one on (and the backup history file). */
  async function pushFinished(c: Cluster, repo: string, backup: TarBackup, env: Record<string, string> = {}): Promise<string[]> {
    // + 1: pg_walfile_name names the previous segment for an LSN exactly at a segment boundary.
    const [{ current }] = await c.sql<{ current: string }>('select pg_walfile_name(pg_current_wal_lsn() + 1) current')
    const walDir = join(c.dataDir, 'pg_wal')
    const names = (await readdir(walDir)).filter((f) => (/^[0-9A-F]{24}$/.test(f) && f >= backup.walSegments[0]! && f < current) || f.endsWith('.backup'))
    for (const f of names.sort()) {
      const r = await runMain(['wal', 'push', '--repo', repo, join(walDir, f)], env)
      expect(r.code, r.stderr).toBe(0)
    }
    shareWithServer(repo)
    return names.filter((f) => !f.endsWith('.backup'))
  }

  /** Writes rows in two finished segments after a base backup of `c`. */
  async function backupAndWrite(c: Cluster, label: string): Promise<TarBackup> {
    await c.sql('create table t (id int primary key, v text)')
    await c.sql(`insert into t select g, 'before' from generate_series(1, 1000) g`)
    const backup = await takeTarBackup(c.url(), join(work, `backup-${label}`))
    await c.sql(`insert into t select g, $1 from generate_series(10001, 20000) g`, [label])
    await c.sql('select pg_switch_wal()')
    await c.sql(`insert into t select g, $1 from generate_series(20001, 30000) g`, [label])
    await c.sql('select pg_switch_wal()')
    return backup
  }

  /** A copy of the base backup in the shared data directory, recovering through restore_command alone. */
  async function recover(label: string, backup: TarBackup, repo: string, o: { spool?: string; env?: string } = {}): Promise<Cluster> {
    const dataDir = join(restoredDir, 'data')
    await mkdir(dataDir, { recursive: true })
    await chmod(restoredDir, 0o755)
    execFileSync('tar', ['-xf', backup.archives.find((x) => x.tablespaceOid === null)!.path, '-C', dataDir])
    await writeFile(join(dataDir, 'recovery.signal'), '')
    // A long linger: the first recovery's daemon is still there when the second recovery starts.
    await rm(dataDir + '.log', { force: true })
    const c = await startOnDataDir(MAJOR, dataDir, {
      baseDir: restoredDir,
      conf: {
        archive_mode: 'off',
        restore_command: `${o.env ?? ''} ${process.execPath} ${BIN} wal get --repo ${repo} ${o.spool ? `--spool ${o.spool}` : ''} --linger 120 %f %p`,
      },
    })
    restored.push(c)
    await waitUntil(`recovery ${label} ended`, async () => !(await c.sql<{ rec: boolean }>('select pg_is_in_recovery() rec'))[0]!.rec, 120_000)
    return c
  }

  it('a second recovery against a replaced repository gets every segment of the new one, from one daemon at a time', async () => {
    const repo = join(work, 'repo')
    const backupA = await backupAndWrite(a, 'a')
    const backupB = await backupAndWrite(b, 'b')
    expect((await runMain(['init', '--repo', repo])).code).toBe(0)
    await pushFinished(a, repo, backupA)

    const daemons = watchPrefetchDaemons(spool)
    try {
      const r1 = await recover('r1', backupA, repo)
      expect(await rows(r1, 'a'), await r1.log()).toBe(20000)
      expect(prefetchDaemons(spool), 'the first recovery left its daemon lingering').toHaveLength(1)
      await r1.destroy() // removes the data directory, spool included

      // The same location, a new repository (another id) with the WAL of another cluster.
      await rm(repo, { recursive: true, force: true })
      expect((await runMain(['init', '--repo', repo])).code).toBe(0)
      const held = await pushFinished(b, repo, backupB)

      const r2 = await recover('r2', backupB, repo)
      const log = await r2.log()
      expect(await rows(r2, 'b'), log).toBe(20000)
      const replayed = new Set([...log.matchAll(/restored log file "([0-9A-F]{24})" from archive/g)].map((m) => m[1]))
      expect(
        held.filter((s) => !replayed.has(s)),
        'segments of the new repository not replayed',
      ).toEqual([])
      expect(daemons.max(), 'prefetch daemons alive at once for one spool').toBeLessThanOrEqual(1)

      // The daemon's spool and files are private.
      expect((await stat(spool)).mode & 0o777).toBe(0o700)
      for (const f of await readdir(spool, { withFileTypes: true })) {
        if (f.isFile()) expect((await stat(join(spool, f.name))).mode & 0o777, f.name).toBe(0o600)
      }
      await r2.destroy()
    } finally {
      daemons.stop()
    }
  })

  it('with a spool both recoveries name (--spool), the daemon of the replaced repository retires at the first request', async () => {
    const repo = join(work, 'repo-shared-spool')
    const shared = join(work, 'spool-home', 'spool')
    await mkdir(join(work, 'spool-home'), { mode: 0o755 })
    await handOver(join(work, 'spool-home'))
    const backup = await takeTarBackup(a.url(), join(work, 'backup-a2'))
    await a.sql(`insert into t select g, 'a2' from generate_series(30001, 40000) g`)
    await a.sql('select pg_switch_wal()')
    expect((await runMain(['init', '--repo', repo])).code).toBe(0)
    await pushFinished(a, repo, backup)

    const daemons = watchPrefetchDaemons(shared)
    try {
      const r3 = await recover('r3', backup, repo, { spool: shared })
      expect(await rows(r3, 'a2')).toBe(10000)
      expect(await rows(r3, 'a3')).toBe(0)
      expect(prefetchDaemons(shared), 'the first recovery left its daemon lingering').toHaveLength(1)
      await r3.destroy()

      // Replaced by an encrypted repository (another id) at the same location, with more WAL of the same cluster.
      await rm(repo, { recursive: true, force: true })
      await a.sql(`insert into t select g, 'a3' from generate_series(40001, 50000) g`)
      await a.sql('select pg_switch_wal()')
      const env = { PGKEEP_PASSPHRASE: 'shared-spool-test' }
      expect((await runMain(['init', '--repo', repo, '--encrypt'], env)).code).toBe(0)
      const held = await pushFinished(a, repo, backup, env)

      const r4 = await recover('r4', backup, repo, { spool: shared, env: `PGKEEP_PASSPHRASE=${env.PGKEEP_PASSPHRASE}` })
      const log = await r4.log()
      expect(await rows(r4, 'a3'), log).toBe(10000)
      const replayed = new Set([...log.matchAll(/restored log file "([0-9A-F]{24})" from archive/g)].map((m) => m[1]))
      expect(
        held.filter((s) => !replayed.has(s)),
        'segments of the new repository not replayed',
      ).toEqual([])
      expect(daemons.max(), 'prefetch daemons alive at once for one spool').toBeLessThanOrEqual(1)
      expect(await readFile(join(shared, 'daemon.log'), 'utf8')).toMatch(/retired: the repository at .* is no longer the one it opened/)
      expect((await stat(join(shared, 'daemon.log'))).mode & 0o777).toBe(0o600)
    } finally {
      daemons.stop()
    }
  })
})
