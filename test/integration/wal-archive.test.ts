// archive_command / restore_command round trip through real servers: a cluster archives with `pgkeep wal push`
// (run by PostgreSQL as its own user), a copy restored from a base backup recovers with `pgkeep wal get` (through
// the prefetch daemon) and ends recovery cleanly at the first segment the repository does not have. Once on the
// filesystem (plain) and once on the S3 server (encrypted). Also: idempotent and conflicting pushes, history and
// backup history files, a missing file answered with exit 1 and one line.

import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster, startOnDataDir } from '../harness/cluster.js'
import { NEWEST_MAJOR } from '../harness/pg-binaries.js'
import { specLocation, startStorageFactory, type StorageFactory } from '../harness/repo-fixtures.js'
import { handOver } from '../harness/server-user.js'
import { takeTarBackup } from '../harness/tar-backup.js'
import { shareWithServer } from './restore-fixture.js'
import { BIN, ensureBuilt, waitUntil } from './wal-helpers.js'

beforeAll(() => ensureBuilt(), 120_000)

const PASSPHRASE = 'archive test passphrase'
const shellEnv = (env: Record<string, string>) =>
  Object.entries(env)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ')
const rows = async (c: Cluster, where: string) => Number((await c.sql<{ n: string }>(`select count(*)::text n from t where ${where}`))[0]!.n)

describe.each([
  { major: 15, driver: 'fs', encrypted: false },
  { major: NEWEST_MAJOR, driver: 's3', encrypted: true },
] as const)('archive and restore commands on PostgreSQL $major, $driver repository, encrypted: $encrypted', ({ major, driver, encrypted }) => {
  let primary: Cluster
  let restored: Cluster | undefined
  let factory: StorageFactory
  let url: string
  let env: Record<string, string>
  let work: string

  beforeAll(async () => {
    factory = await startStorageFactory(driver)
    const spec = factory.spec()
    ;({ url, env } = specLocation(spec))
    if (encrypted) env = { ...env, PGKEEP_PASSPHRASE: PASSPHRASE.replace(/ /g, '_') }
    const init = await runMain(['init', '--repo', url, ...(encrypted ? ['--encrypt'] : [])], env)
    expect(init.code, init.stderr).toBe(0)
    if (spec.kind === 'fs') {
      // PostgreSQL runs archive_command as its own user: the repository must be theirs.
      await chmod(dirname(spec.root), 0o755)
      shareWithServer(spec.root)
    }
    work = await mkdtemp(join(tmpdir(), 'pgkeep-walarchive-'))
    await chmod(work, 0o755)
    primary = await startCluster({
      major,
      tablespaces: 0,
      conf: {
        archive_mode: 'on',
        archive_command: `${shellEnv(env)} ${process.execPath} ${BIN} wal push --repo ${url} %p`,
        wal_keep_size: '1GB',
      },
    })
  })
  afterAll(async () => {
    await restored?.destroy()
    await primary?.destroy()
    await factory?.stop()
    if (work) await rm(work, { recursive: true, force: true })
  })

  it('archives with wal push and recovers with wal get to the end of the archive', async () => {
    await primary.sql('create table t (id int primary key, v text)')
    await primary.sql(`insert into t select g, 'before backup' from generate_series(1, 5000) g`)
    const backup = await takeTarBackup(primary.url(), join(work, 'backup'))
    await primary.sql(`insert into t select g, 'archived' from generate_series(10001, 30000) g`)
    await primary.sql('select pg_switch_wal()')
    await primary.sql(`insert into t select g, 'archived' from generate_series(30001, 40000) g`)
    const [{ w }] = await primary.sql<{ w: string }>('select pg_walfile_name(pg_switch_wal()) w')
    await waitUntil(
      'the primary archived its last segment',
      async () => {
        const [r] = await primary.sql<{ last: string | null; failed: string }>('select last_archived_wal last, failed_count::text failed from pg_stat_archiver')
        if (r!.failed !== '0') throw new Error(`archive_command failed:\n${await primary.log()}`)
        return r!.last !== null && r!.last >= w
      },
      60_000,
    )
    // Committed after the last archived segment: must not be in the restored copy.
    await primary.sql(`insert into t select g, 'not archived' from generate_series(50001, 50100) g`)

    // The restored copy: the base backup without any WAL; everything comes through restore_command.
    const baseDir = await mkdtemp(join(tmpdir(), `pgkeep-walarchive-restored${major}-`))
    const dataDir = join(baseDir, 'data')
    await mkdir(dataDir)
    execFileSync('tar', ['-xf', backup.archives.find((a) => a.tablespaceOid === null)!.path, '-C', dataDir])
    expect((await readdir(join(dataDir, 'pg_wal'))).filter((f) => /^[0-9A-F]{24}$/.test(f))).toEqual([])
    await writeFile(join(dataDir, 'recovery.signal'), '')
    await handOver(baseDir)
    restored = await startOnDataDir(major, dataDir, {
      baseDir,
      conf: {
        archive_mode: 'off',
        restore_command: `${shellEnv(env)} ${process.execPath} ${BIN} wal get --repo ${url} --linger 2 %f %p`,
      },
    })
    const r = restored
    await waitUntil('recovery ended', async () => !(await r.sql<{ rec: boolean }>('select pg_is_in_recovery() rec'))[0]!.rec, 120_000)
    expect(await rows(r, `v = 'before backup'`)).toBe(5000)
    expect(await rows(r, `v = 'archived'`)).toBe(30000)
    expect(await rows(r, `v = 'not archived'`)).toBe(0)
    const log = await r.log()
    const restoredSegments = [...log.matchAll(/restored log file "([0-9A-F]{24})" from archive/g)].map((m) => m[1])
    expect(restoredSegments.length).toBeGreaterThanOrEqual(3)
    expect(restoredSegments).toContain(w)
    // The end of the archive: the next segment was asked for, answered "not there" in one line, and recovery ended.
    expect(log).toMatch(/pgkeep: [0-9A-F]{24} is not in the repository/)
    expect(log).toMatch(/archive recovery complete/)

    // The prefetch daemon served the segments, then left and emptied the spool.
    const spool = join(dataDir, 'pg_wal', '.pgkeep-prefetch')
    expect(await readFile(join(spool, 'daemon.log'), 'utf8')).toMatch(/fetched [0-9A-F]{24}/)
    await waitUntil('the prefetch daemon exited', () => !existsSync(join(spool, 'daemon.json')), 30_000)
    expect((await readdir(spool)).filter((f) => /^[0-9A-F]{24}/.test(f))).toEqual([])

    // Both the segments and the backup history file are in the catalog, byte for byte what the primary has.
    const repoEnv = env
    const getDest = join(work, 'fetched')
    const g = await runMain(['wal', 'get', '--repo', url, '--prefetch', '0', '--cluster', await systemIdOf(primary), w, getDest], repoEnv)
    expect(g.code, g.stderr).toBe(0)
    expect((await readFile(getDest)).equals(await readFile(join(primary.dataDir, 'pg_wal', w)))).toBe(true)
    const backupFile = (await readdir(join(primary.dataDir, 'pg_wal'))).find((f) => f.endsWith('.backup'))!
    expect(backupFile).toBeDefined()
    const gb = await runMain(['wal', 'get', '--repo', url, '--prefetch', '0', '--cluster', await systemIdOf(primary), backupFile, getDest], repoEnv)
    expect(gb.code, gb.stderr).toBe(0)
    expect((await readFile(getDest)).equals(await readFile(join(primary.dataDir, 'pg_wal', backupFile)))).toBe(true)

    // Idempotent push; a different segment under the same name fails loudly.
    const copy = join(work, w)
    await copyFile(join(primary.dataDir, 'pg_wal', w), copy)
    const again = await runMain(['wal', 'push', '--repo', url, '--verbose', copy], repoEnv)
    expect(again.code, again.stderr).toBe(0)
    expect(again.stderr).toMatch(/already stored/)
    const bytes = await readFile(copy)
    bytes[5 << 20] ^= 0xff
    await writeFile(copy, bytes)
    const conflict = await runMain(['wal', 'push', '--repo', url, copy], repoEnv)
    expect(conflict.code).toBe(30)
    expect(conflict.stderr).toMatch(/already in the repository with different content/)

    // The restored copy is on timeline 2 now; its history file is found by the cluster of its data directory.
    const history = join(dataDir, 'pg_wal', '00000002.history')
    expect(existsSync(history)).toBe(true)
    const ph = await runMain(['wal', 'push', '--repo', url, history], repoEnv)
    expect(ph.code, ph.stderr).toBe(0)
    const gh = await runMain(['wal', 'get', '--repo', url, '--prefetch', '0', '00000002.history', getDest], repoEnv)
    expect(gh.code, gh.stderr).toBe(0) // the only cluster of the repository
    expect((await readFile(getDest)).equals(await readFile(history))).toBe(true)

    // Missing: exit 1 at once, one short line.
    const t0 = performance.now()
    const missing = await runMain(['wal', 'get', '--repo', url, '--prefetch', '0', '00000003.history', getDest], repoEnv)
    expect(missing.code).toBe(1)
    expect(missing.stderr.trim().split('\n')).toHaveLength(1)
    expect(performance.now() - t0).toBeLessThan(10_000)

    // Any other failure is not "missing": exit 255, which PostgreSQL treats as fatal instead of the end of the archive.
    const broken = await runMain(['wal', 'get', '--repo', join(work, 'no-repository-here'), '--prefetch', '0', w, getDest], repoEnv)
    expect(broken.code, broken.stderr).toBe(255)
    expect(broken.stderr).toMatch(/^pgkeep: error: /)
  })
})

async function systemIdOf(c: Cluster): Promise<string> {
  return (await c.sql<{ s: string }>('select system_identifier::text s from pg_control_system()'))[0]!.s
}
