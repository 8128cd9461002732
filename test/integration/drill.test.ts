// `pgkeep drill` (the real binary, as root when the tests run as root: the copy then runs as user postgres) on
// PostgreSQL 14 and 18: a full and an incremental backup, each restored into a scratch directory with the
// tablespace under it, started from the embedded server binaries, recovered, checked (amcheck on one, user SQL
// checks on one), recorded in the repository and shown by `info`, and the scratch directory gone afterwards.
// Then damaged backups: a flipped byte in a pack (restore refuses it, naming the file) and a page corrupted on
// the source before the backup (the backup stores it as the server sent it; the drill's table read and the
// server's checksum count find it; a user check on the table fails too). Each fails the drill with exit status 40
// and the check named.

import { existsSync, readdirSync } from 'node:fs'
import { mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { takeBackup } from '../../src/backup/backup.js'
import type { DrillResult } from '../../src/drill/drill.js'
import { bootstrapSuperuserNames, mappedFileNumber, PG_AUTHID_OID } from '../../src/pg/bootstrap-superuser.js'
import { runBin } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { type Major, pgBinaries } from '../harness/pg-binaries.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'
import { handOver, serverUser } from '../harness/server-user.js'
import { shareWithServer } from './restore-fixture.js'
import { ensureBuilt } from './wal-helpers.js'

beforeAll(() => ensureBuilt(), 120_000)

const CHECKS = `-- check: every row of t is there
select count(*), sum(id) from t;
-- expect: 20000|200010000

-- check: the tablespace table
select count(*) from in_ts where v like '%a%';
-- expect-rows: 1
`

async function drill(r: TestRepo, scratch: string, args: string[]): Promise<{ code: number; report: DrillResult; stderr: string }> {
  const { code, stdout, stderr } = await runBin(['drill', '--repo', r.dir, '--scratch', scratch, '--json', ...args])
  let report: DrillResult
  try {
    report = JSON.parse(stdout) as DrillResult
  } catch {
    throw new Error(`drill printed no report (exit ${code}):\n${stdout}\n${stderr}`)
  }
  if (process.env.DRILL_DEBUG) console.log(JSON.stringify({ checks: report.checks, timings: report.timings }), stderr)
  return { code, report, stderr }
}

async function fill(pg: Cluster, from: number, to: number): Promise<void> {
  await pg.sql(`insert into t select g, md5(g::text) from generate_series(${from}, ${to}) g`)
  await pg.sql(`insert into in_ts select g, md5(g::text) from generate_series(${from}, ${to}) g`)
}

describe.each<Major>([14, 18])('pgkeep drill on PG %i', (major) => {
  let pg: Cluster
  let r: TestRepo
  let scratch: string
  let checkFile: string
  const ids: { full: string; incremental: string } = { full: '', incremental: '' }

  beforeAll(async () => {
    pg = await startCluster({ major })
    r = await freshFsRepo()
    scratch = await mkdtemp(join(tmpdir(), 'pgkeep-drill-test-'))
    await handOver(scratch)
    checkFile = join(scratch, 'checks.sql')
    await writeFile(checkFile, CHECKS)
    await pg.sql('create table t (id int primary key, v text)')
    await pg.sql('create table in_ts (id int primary key, v text) tablespace ts1')
    await pg.sql('create index in_ts_v on in_ts (v) tablespace ts1')
    await fill(pg, 1, 10000)
    ids.full = (await takeBackup({ server: { conninfo: pg.url() }, repo: r.repo })).id
    await fill(pg, 10001, 20000)
    await pg.sql('update t set v = v || v where id % 100 = 0')
    ids.incremental = (await takeBackup({ server: { conninfo: pg.url() }, repo: r.repo })).id
    // The copy runs `pgkeep wal get` as the server's user.
    shareWithServer(r.dir)
  })
  afterAll(async () => {
    await pg?.destroy()
    await r?.close()
    if (scratch) await rm(scratch, { recursive: true, force: true })
  })

  it("reads the bootstrap superuser's name from the cluster's own files", async () => {
    const map = await readFile(join(pg.dataDir, 'global', 'pg_filenode.map'))
    const file = mappedFileNumber(map, PG_AUTHID_OID)
    expect(file).toBe(1260)
    await pg.sql('checkpoint')
    expect(bootstrapSuperuserNames(await readFile(join(pg.dataDir, 'global', String(file))))).toEqual(['postgres'])
  })

  it.runIf(major === 18)('refuses, before writing anything, a scratch location in a running server and binaries of another major', async () => {
    const inServer = await runBin(['drill', '--repo', r.dir, '--scratch', pg.dataDir])
    expect(inServer.code, inServer.stderr).toBe(2)
    expect(inServer.stderr).toMatch(
      /^pgkeep: error: data directory '.*\/pgkeep-drill-[^/]+\/data' overlaps the data directory '.*' of the server running with pid \d+$/m,
    )
    expect((await readdir(pg.dataDir)).filter((n) => n.startsWith('pgkeep-drill-'))).toEqual([])

    const other = await runBin(['drill', '--repo', r.dir, '--scratch', scratch, '--pg-bin', pgBinaries(14).bin])
    expect(other.code, other.stderr).toBe(2)
    expect(other.stderr).toMatch(/^pgkeep: error: --pg-bin '.*pg14.*' holds no PostgreSQL 18 server; looked at .*: PostgreSQL 14\.\d+$/m)
    expect(other.stderr).toMatch(/^HINT: install PostgreSQL 18's server .* --pg-bin DIR/m)
    expect(readdirSync(scratch).filter((n) => n.startsWith('pgkeep-drill-'))).toEqual([])

    if (serverUser().drop) {
      // A repository private to root: the copy's restore_command (as postgres) could not read it.
      const priv = join(scratch, 'private-repo')
      expect((await runBin(['init', '--repo', priv])).code).toBe(0)
      const denied = await runBin(['drill', '--repo', priv, '--scratch', scratch])
      expect(denied.code, denied.stderr).toBe(2)
      expect(denied.stderr).toMatch(
        /^pgkeep: error: user 'postgres', who runs the copy and its restore_command, cannot read repository '.*private-repo': it may not enter .*\(owner 0:0, mode 0700\)$/m,
      )
      expect(denied.stderr).toMatch(/^HINT: share the repository with that user's group: 'pgkeep init --group postgres'/m)
    }
  })

  it('drills the full backup (binaries found without --pg-bin) and cleans up', async () => {
    const { code, report, stderr } = await drill(r, scratch, ['--backup', ids.full])
    expect(code, `${JSON.stringify(report, null, 2)}\n${stderr}`).toBe(0)
    expect(report.passed).toBe(true)
    expect(report.backupId).toBe(ids.full)
    expect(report.server?.version).toMatch(new RegExp(`^${major}\\.`))
    const byName = Object.fromEntries(report.checks.map((c) => [c.name, c]))
    for (const name of ['restore', 'start', 'recovery', 'connections', 'catalog', 'tables', 'checksums']) expect(byName[name]?.status, name).toBe('passed')
    expect(byName.amcheck?.status).toBe('skipped')
    expect(byName.tables?.detail).toMatch(/tables read in full/)
    expect(report.timings.rtoMs).toBe((report.timings.restoreMs ?? 0) + (report.timings.recoveryMs ?? 0))
    // The scratch directory is gone, and the tablespace never went near its original location.
    expect(readdirSync(scratch).filter((n) => n.startsWith('pgkeep-drill-'))).toEqual([])
    expect((await readdir(pg.tablespaceDirs[0]!)).filter((n) => n.startsWith('PG_'))).toHaveLength(1)
  })

  it('drills the incremental backup with --amcheck, --check and --pg-bin, keeping the copy', async () => {
    const { code, report, stderr } = await drill(r, scratch, ['--amcheck', '--check', checkFile, '--pg-bin', pgBinaries(major).bin, '--keep'])
    expect(code, `${JSON.stringify(report, null, 2)}\n${stderr}`).toBe(0)
    expect(report.backupId).toBe(ids.incremental)
    expect(report.backupType).toBe('incremental')
    const byName = Object.fromEntries(report.checks.map((c) => [c.name, c]))
    expect(byName.amcheck?.status).toBe('passed')
    expect(Number(/^(\d+) B-tree indexes/.exec(byName.amcheck!.detail)?.[1])).toBeGreaterThan(10)
    expect(byName['user-checks']).toMatchObject({ status: 'passed', detail: '2 user checks gave the expected results' })
    // Kept: the stopped copy with its tablespace under the scratch directory.
    expect(report.kept).toBe(true)
    const ts = join(report.scratchDir, 'tablespaces')
    expect((await readdir(ts)).length).toBe(1)
    expect(existsSync(join(report.scratchDir, 'data', 'global', 'pg_control'))).toBe(true)
    await rm(report.scratchDir, { recursive: true, force: true })

    // info shows the last drill.
    const info = await runBin(['info', '--repo', r.dir, '--json'])
    const cluster = (JSON.parse(info.stdout) as { clusters: { drills: { count: number; last: { id: string; passed: boolean; rtoMs: number } } }[] })
      .clusters[0]!
    expect(cluster.drills.count).toBe(2)
    expect(cluster.drills.last).toMatchObject({ id: report.drillId, passed: true, rtoMs: report.timings.rtoMs })
    const text = await runBin(['info', '--repo', r.dir])
    expect(text.stdout).toMatch(new RegExp(`last drill: .* passed: backup ${ids.incremental} to the end of the archived WAL, RTO`))
  })
})

describe('pgkeep drill of damaged backups (PG 18)', () => {
  let pg: Cluster
  let r: TestRepo
  let scratch: string

  beforeAll(async () => {
    pg = await startCluster({ major: 18 })
    r = await freshFsRepo()
    scratch = await mkdtemp(join(tmpdir(), 'pgkeep-drill-test-'))
    await handOver(scratch)
  })
  afterAll(async () => {
    await pg?.destroy()
    await r?.close()
    if (scratch) await rm(scratch, { recursive: true, force: true })
  })

  it('a page corrupted on the source: the table read and the checksum count fail the drill', async () => {
    await pg.sql('create table victim (id int primary key, v text)')
    await pg.sql(`insert into victim select g, md5(g::text) from generate_series(1, 2000) g`)
    const [{ path }] = await pg.sql<{ path: string }>(`select pg_relation_filepath('victim') as path`)
    await pg.sql('checkpoint')
    await pg.stop()
    // One byte in the middle of the first page's tuples: the page checksum no longer matches.
    const fh = await open(join(pg.dataDir, path), 'r+')
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, 4000)
    b[0] ^= 0xff
    await fh.write(b, 0, 1, 4000)
    await fh.close()
    await pg.start()
    const backup = await takeBackup({ server: { conninfo: pg.url() }, repo: r.repo })
    expect(backup.checksumFailures).toBeGreaterThan(0)
    shareWithServer(r.dir)

    // A user check that does not hold either: reported beside the first failure.
    const bad = join(scratch, 'bad.sql')
    await writeFile(bad, '-- check: too many rows\nselect count(*) from victim;\n-- expect: 1999\n')
    const { code, report, stderr } = await drill(r, scratch, ['--target-immediate', '--check', bad])
    expect(code).toBe(40)
    expect(stderr).toMatch(/^pgkeep: drill failed: tables: 1 tables could not be read: postgres\.public\.victim: invalid page/m)
    const byName = Object.fromEntries(report.checks.map((c) => [c.name, c]))
    expect(byName['user-checks']).toMatchObject({
      status: 'failed',
      detail: expect.stringMatching(/^1 of 1 user checks failed: 'too many rows': invalid page in block 0/),
    })
    expect(byName.restore?.status).toBe('passed')
    expect(byName.tables?.status).toBe('failed')
    expect(byName.tables?.detail).toMatch(/postgres\.public\.victim: invalid page in block 0 of relation/)
    expect(byName.checksums?.status).toBe('failed')
    expect(byName.checksums?.detail).toMatch(/page checksum failures: postgres: [1-9]/)
    expect(report.failure).toMatch(/^tables: 1 tables could not be read: postgres\.public\.victim: invalid page/)
    expect(readdirSync(scratch).filter((n) => n.startsWith('pgkeep-drill-'))).toEqual([])
  })

  it('a flipped byte in a pack: the restore refuses the file, the drill fails and is recorded as failed', async () => {
    // The largest pack holds relation data.
    const packs: { path: string; size: number }[] = []
    for (const dir of await readdir(join(r.dir, 'packs'))) {
      for (const name of await readdir(join(r.dir, 'packs', dir))) {
        const p = join(r.dir, 'packs', dir, name)
        packs.push({ path: p, size: (await stat(p)).size })
      }
    }
    const victim = packs.sort((a, b) => b.size - a.size)[0]!
    const fh = await open(victim.path, 'r+')
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, 100)
    b[0] ^= 0x01
    await fh.write(b, 0, 1, 100)
    await fh.close()

    const { code, report, stderr } = await drill(r, scratch, ['--target-immediate'])
    expect(code, stderr).toBe(40)
    expect(report.failure).toMatch(/^restore: cannot restore '[^']+' of backup \S+: /)
    expect(report.checks.filter((c) => c.status === 'skipped').map((c) => c.name)).toEqual([
      'start',
      'recovery',
      'connections',
      'catalog',
      'tables',
      'amcheck',
      'user-checks',
      'checksums',
    ])
    expect(readdirSync(scratch).filter((n) => n.startsWith('pgkeep-drill-'))).toEqual([])
    const info = await runBin(['info', '--repo', r.dir])
    expect(info.stdout).toMatch(/last drill: .* FAILED \(restore: cannot restore/)
    expect(info.stdout).toMatch(/last good drill: none/)
  })
})
