// Point-in-time recovery with WAL archived continuously by `pgkeep wal stream`: rows are committed, a restore point,
// an LSN, a time and the xid of a destructive transaction (DELETE without WHERE) are noted, later rows follow, and a
// second backup is taken after the damage. Restores to each target bring the destroyed rows back and leave the later
// ones out; for time, LSN and xid the backup before the target is chosen without being named. Without a target the
// copy replays the whole archive; with --standby it follows the primary.

import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { takeBackup, type BackupResult } from '../../src/backup/backup.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, PASSWORD, ROLES, startCluster } from '../harness/cluster.js'
import { type Major, NEWEST_MAJOR } from '../harness/pg-binaries.js'
import { startPgbench } from '../harness/load.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'
import { ensureBuilt, spawnPgkeep, waitUntil, type PgkeepProcess } from './wal-helpers.js'
import { shareWithServer, startRestored, stopRestored, waitForPromotion } from './restore-fixture.js'

beforeAll(() => ensureBuilt(), 120_000)

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const content = `select count(*)::int n, coalesce(md5(string_agg(t::text, ',' order by id)), '') sum from t`

describe.each<Major>([14, NEWEST_MAJOR])('point-in-time restore on PG %i', (major) => {
  let pg: Cluster
  let r: TestRepo
  let streamer: PgkeepProcess
  let before: BackupResult
  let after: BackupResult
  const points: { name: string; lsn: string; time: string; xid: string } = { name: 'before_delete', lsn: '', time: '', xid: '' }
  let rowsBefore: { n: number; sum: string }
  let rowsAtEnd: { n: number; sum: string }

  beforeAll(async () => {
    pg = await startCluster({ major })
    r = await freshFsRepo()
    streamer = spawnPgkeep(['wal', 'stream', '-d', pg.url(), '--repo', r.dir, '--slot', 'pgkeep_pitr', '--create-slot', '--status-interval', '1'])
    await streamer.waitFor(/streaming cluster \d+/)
    const load = startPgbench(pg, 2)
    try {
      await pg.sql(`create table t (id int primary key, v text)`)
      await pg.sql(`insert into t select g, md5(g::text) from generate_series(1, 1000) g`)
      before = await takeBackup({ server: { conninfo: pg.url() }, repo: r.repo })
      await pg.sql(`insert into t select g, md5(g::text) from generate_series(1001, 2000) g`)
      rowsBefore = (await pg.sql<{ n: number; sum: string }>(content))[0]!
      await pg.sql(`select pg_create_restore_point('${points.name}')`)
      points.lsn = (await pg.sql<{ l: string }>('select pg_current_wal_lsn()::text l'))[0]!.l
      await sleep(300)
      points.time = (await pg.sql<{ t: string }>(`select clock_timestamp()::text t`))[0]!.t
      await sleep(300)
      // The accident.
      await pg.sql('begin')
      await pg.sql('delete from t')
      points.xid = (await pg.sql<{ x: string }>('select txid_current()::text x'))[0]!.x
      await pg.sql('commit')
      await sleep(300)
      await pg.sql(`insert into t select g, 'later' from generate_series(5001, 5100) g`)
      after = await takeBackup({ server: { conninfo: pg.url() }, repo: r.repo })
      await pg.sql(`insert into t select g, 'even later' from generate_series(6001, 6010) g`)
    } finally {
      await load.stop()
    }
    rowsAtEnd = (await pg.sql<{ n: number; sum: string }>(content))[0]!
    // Stop the streamer once it holds everything the server flushed: it stores the partial segment on SIGTERM.
    const [{ flushed }] = await pg.sql<{ flushed: string }>('select pg_current_wal_flush_lsn()::text flushed')
    // write_lsn, not sent_lsn: what the streamer reports it received (sent WAL may still be in flight on a loaded
    // machine, and a SIGTERM then stores a partial segment without the last rows).
    await waitUntil('the streamer received everything', async () => {
      const [s] = await pg.sql<{ ok: boolean }>(`select write_lsn >= '${flushed}'::pg_lsn ok from pg_stat_replication where application_name = 'pgkeep_pitr'`)
      return s?.ok === true
    })
    streamer.kill('SIGTERM')
    expect(await streamer.exited, streamer.output()).toBe(0)
    // The restored servers run `pgkeep wal get` as the server user.
    shareWithServer(r.dir)
  })
  afterAll(async () => {
    streamer?.kill('SIGKILL')
    await pg?.destroy()
    await r?.close()
  })

  async function restoreTo(name: string, args: string[], expected: { n: number; sum: string }, backup: BackupResult) {
    const dir = join(pg.baseDir, `pitr-${name}`)
    const res = await runMain(['restore', '--repo', r.dir, '--pgdata', dir, '--tablespace-mapping', `${pg.tablespaceDirs[0]}=${dir}-ts`, '--json', ...args])
    expect(res.code, res.stderr).toBe(0)
    const out = JSON.parse(res.stdout)
    expect(out.backupId, out.reason).toBe(backup.id)
    const c = await startRestored(major, dir, pg.baseDir, [`${dir}-ts`], { repoDir: r.dir })
    try {
      await waitForPromotion(c)
      expect((await c.sql<{ n: number; sum: string }>(content))[0]).toEqual(expected)
      expect(await c.log()).toMatch(/restored log file "[0-9A-F]{24}" from archive/)
    } finally {
      await stopRestored(c)
    }
  }

  it('to a named restore point (backup named explicitly: a name cannot choose one)', async () => {
    await restoreTo('name', ['--backup', before.id, '--target-name', points.name, '--target-action', 'promote'], rowsBefore, before)
  })

  it('to a time, the backup chosen by the target', async () => {
    await restoreTo('time', ['--target-time', points.time, '--target-action', 'promote'], rowsBefore, before)
  })

  it('to an LSN, the backup chosen by the target', async () => {
    await restoreTo('lsn', ['--target-lsn', points.lsn, '--target-action', 'promote'], rowsBefore, before)
  })

  it('to just before the destructive transaction, by its xid', async () => {
    await restoreTo('xid', ['--target-xid', points.xid, '--target-exclusive', '--target-action', 'promote'], rowsBefore, before)
  })

  it('without a target: the whole archive, from the newest backup', async () => {
    expect(rowsAtEnd.n).toBe(110)
    await restoreTo('end', [], rowsAtEnd, after)
  })

  it('as a standby of the primary', async () => {
    const dir = join(pg.baseDir, 'standby')
    const conninfo = `host=127.0.0.1 port=${pg.port} user=${ROLES.repl} password='${PASSWORD.replace(/'/g, "\\'")}' application_name=restored_standby`
    const res = await runMain([
      'restore',
      '--repo',
      r.dir,
      '--pgdata',
      dir,
      '--tablespace-mapping',
      `${pg.tablespaceDirs[0]}=${dir}-ts`,
      '--standby',
      '--primary-conninfo',
      conninfo,
    ])
    expect(res.code, res.stderr).toBe(0)
    expect(res.stdout).toMatch(/standby\.signal: the server starts as a standby/)
    const c = await startRestored(major, dir, pg.baseDir, [`${dir}-ts`], { repoDir: r.dir })
    try {
      expect((await c.sql<{ r: boolean }>('select pg_is_in_recovery() r'))[0]!.r).toBe(true)
      await pg.sql(`insert into t values (7777, 'streamed')`)
      await waitUntil(
        'the standby has the new row',
        async () => (await c.sql<{ n: number }>(`select count(*)::int n from t where id = 7777`))[0]!.n === 1,
        30_000,
      )
    } finally {
      await stopRestored(c)
    }
  })
})
