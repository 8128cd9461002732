// Backups across a major upgrade: a PostgreSQL 18 cluster (with a tablespace) is backed up, upgraded to 19 with the
// real pg_upgrade of 19 (old bindir: Debian's 18 server package, which has the pg_controldata pg_upgrade needs), and
// backed up again. pg_upgrade gives the new cluster the system identifier of its own initdb, so the first 19 backup
// lands in a new cluster record as a full one; it is restored, started and checked by pg_verifybackup 19. Then the
// engine's guard: when the latest backup under a system identifier is of another major, the next backup is full.

import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type BackupRecord, listBackups, newBackupId, writeBackupRecord } from '../../src/repo/backup-record.js'
import { openRepository } from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, freePort, startCluster } from '../harness/cluster.js'
import { debianPgMissingReason, debianPgTool } from '../harness/debian-pg.js'
import { MAJORS, pgBinaries } from '../harness/pg-binaries.js'
import { noteSkip } from '../harness/reference-tools.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'
import { handOver, runAsServer } from '../harness/server-user.js'
import { startRestored, tableChecksums, verifyRestored } from './restore-fixture.js'

const oldControldata = debianPgTool(18, 'pg_controldata')
const canRun = MAJORS.includes(19) && oldControldata !== undefined
if (!canRun) noteSkip('backups across a pg_upgrade from 18 to 19', debianPgMissingReason())

interface Result {
  id: string
  type: string
  parent: string | null
}

async function backup(c: Cluster, repoDir: string, extra: string[] = []): Promise<{ result: Result; stderr: string }> {
  const r = await runMain(['backup', '-d', c.url(), '--repo', repoDir, '--json', ...extra])
  expect(r.code, r.stderr).toBe(0)
  return { result: JSON.parse(r.stdout) as Result, stderr: r.stderr }
}

const systemId = async (c: Cluster) => (await c.sql<{ id: string }>('select system_identifier::text as id from pg_control_system()'))[0]!.id

describe.skipIf(!canRun)('backups across a pg_upgrade from PostgreSQL 18 to 19', () => {
  let old: Cluster
  let upgraded: Cluster
  let r: TestRepo
  let oldId: string
  let want: Record<string, string>

  beforeAll(async () => {
    old = await startCluster({ major: 18 })
    r = await freshFsRepo()
    await old.sql('create table t (id int primary key, v text)')
    await old.sql(`insert into t select g, md5(g::text) from generate_series(1, 20000) g`)
    await old.sql('create table t_ts (id int primary key, v text) tablespace ts1')
    await old.sql(`insert into t_ts select g, md5(g::text) from generate_series(1, 5000) g`)
    want = await tableChecksums(old)
    oldId = await systemId(old)
    expect((await backup(old, r.dir)).result.type).toBe('full')
    await old.stop()

    // The new cluster: initdb of 19 with the harness's settings, not started (pg_upgrade wants it empty).
    upgraded = await startCluster({ major: 19, noStart: true, tablespaces: 0 })
    const sock = join(upgraded.baseDir, 'upgrade-sock')
    await mkdir(sock, { mode: 0o700 })
    await handOver(sock)
    const bin19 = pgBinaries(19).bin
    await runAsServer(
      join(bin19, 'pg_upgrade'),
      [
        '-b',
        join(oldControldata!, '..'),
        '-B',
        bin19,
        '-d',
        old.dataDir,
        '-D',
        upgraded.dataDir,
        '-p',
        String(await freePort()),
        '-P',
        String(await freePort()),
        '-s',
        sock,
        '--no-sync',
      ],
      { cwd: upgraded.baseDir },
    )
    await upgraded.start()
    // The old cluster's tablespace now also holds a PG_19_<catversion> directory beside PG_18_<catversion>.
    ;(upgraded.tablespaceDirs as string[]).push(old.tablespaceDirs[0]!)
  })
  afterAll(async () => {
    await upgraded?.destroy()
    await old?.destroy()
    await r?.close()
  })

  it('gets a new system identifier, so its first backup is a full one of a new cluster; it restores and verifies', async () => {
    expect(Number((await upgraded.sql<{ v: string }>(`select current_setting('server_version_num') v`))[0]!.v)).toBeGreaterThanOrEqual(190000)
    expect(await tableChecksums(upgraded)).toEqual(want)
    const newId = await systemId(upgraded)
    // pg_upgrade runs pg_resetwal for xids, OIDs and the WAL position, never for the system identifier.
    expect(newId).not.toBe(oldId)

    const { result } = await backup(upgraded, r.dir, ['--type', 'auto'])
    expect(result.type).toBe('full')
    expect(result.parent).toBeNull()
    const repo = await openRepository(await openFsStorage(r.dir))
    try {
      expect((await listBackups(repo, oldId)).map((b) => b.server.major)).toEqual([18])
      expect((await listBackups(repo, newId)).map((b) => b.server.major)).toEqual([19])
    } finally {
      await repo.close()
    }

    // The repository with both majors' backups and WAL verifies, data re-hashed.
    const verify = await runMain(['verify', '--repo', r.dir, '--read-data', '--json'])
    expect(verify.code, verify.stdout + verify.stderr).toBe(0)
    expect(JSON.parse(verify.stdout).ok).toBe(true)

    const target = join(upgraded.baseDir, 'restored')
    const ts = join(upgraded.baseDir, 'restored-ts1')
    const tsOid = (await upgraded.sql<{ oid: number }>(`select oid from pg_tablespace where spcname = 'ts1'`))[0]!.oid
    const cli = await runMain([
      'restore',
      '--repo',
      r.dir,
      '--pgdata',
      target,
      '--backup',
      result.id,
      '--tablespace-mapping',
      `${tsOid}=${ts}`,
      '--target-immediate',
      '--target-action',
      'promote',
      '--json',
    ])
    expect(cli.code, cli.stderr).toBe(0)
    const v = await verifyRestored(19, target)
    if (!v.ran) noteSkip('pg_verifybackup of the restored upgraded cluster', v.output)
    else {
      console.log(`pg_verifybackup of the restored upgraded cluster: ${v.output.trim()}`)
      expect(v.output).toMatch(/backup successfully verified/)
    }
    const c = await startRestored(19, target, upgraded.baseDir, [ts], { repoDir: r.dir })
    try {
      for (let i = 0; (await c.sql<{ r: boolean }>('select pg_is_in_recovery() as r'))[0]!.r; i++) {
        if (i > 600) throw new Error(`restored server still in recovery:\n${await c.log()}`)
        await new Promise((res) => setTimeout(res, 100))
      }
      expect(await tableChecksums(c)).toEqual(want)
    } finally {
      // stop(), not destroy(): the restored copy lives under the upgraded cluster's base directory.
      await c.stop()
      await rm(target, { recursive: true, force: true })
      await rm(ts, { recursive: true, force: true })
    }
  })

  it('takes a full backup when the latest backup under the same system identifier is of another major', async () => {
    // No real upgrade path keeps the system identifier today (see above); a repository may still hold such a
    // record (a future pg_upgrade, a cluster record shared by hand). Stand one up from the real 19 backup's record,
    // claiming 18, newer than it, then ask for an incremental.
    const repo = await openRepository(await openFsStorage(r.dir))
    const newId = await systemId(upgraded)
    let fake: BackupRecord
    try {
      const real = (await listBackups(repo, newId)).at(-1)!
      fake = { ...real, id: newBackupId(new Date(Date.now() + 1000)), server: { ...real.server, major: 18, versionNum: 180006, version: '18.6' } }
      await writeBackupRecord(repo, fake)
    } finally {
      await repo.close()
    }
    await new Promise((res) => setTimeout(res, 1100)) // the next backup's id must sort after the stand-in's
    const { result, stderr } = await backup(upgraded, r.dir, ['--type', 'incremental'])
    expect(result.type).toBe('full')
    expect(result.parent).toBeNull()
    expect(stderr).toContain(`(${fake.id}) is of PostgreSQL 18 and the server now runs 19: taking a full backup`)
  })
})
