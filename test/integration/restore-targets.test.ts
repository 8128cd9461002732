// Recovery targets the stored WAL cannot reach are refused before restore writes anything (PG 16): two backups
// with WAL between them that was never stored (a gap, as `pgkeep info` shows it), and WAL after the second that
// was not stored either. A target in the gap, past the end, or before the chosen backup's end (as an LSN or a
// time), and a time without a zone or on a day that does not exist: exit 2, the message gives the reachable range
// that `info` lists, and neither the data directory nor the tablespace location is created. A reachable target
// restores.

import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { takeBackup, type BackupResult } from '../../src/backup/backup.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'

describe('restore refuses recovery targets the stored WAL cannot reach (PG 16)', () => {
  let pg: Cluster
  let r: TestRepo
  let b1: BackupResult
  let b2: BackupResult
  let inGap: string
  let pastEnd: string
  /** A time after b1 finished and before b2 began. */
  let between: string
  let wal: { ranges: { start: string; end: string }[]; gaps: { from: string; to: string }[] }
  let n = 0

  beforeAll(async () => {
    pg = await startCluster({ major: 16 })
    r = await freshFsRepo()
    await pg.sql('create table t (id int primary key, v text)')
    b1 = await takeBackup({ server: { conninfo: pg.url() }, repo: r.repo })
    // WAL no one stores: the rest of b1's last segment and two more.
    between = new Date().toISOString()
    await pg.sql('select pg_switch_wal()')
    await pg.sql(`insert into t select g, md5(g::text) from generate_series(1, 1000) g`)
    inGap = (await pg.sql<{ l: string }>('select pg_current_wal_lsn()::text l'))[0]!.l
    await pg.sql('select pg_switch_wal()')
    await pg.sql(`insert into t select g, 'x' from generate_series(1001, 1010) g`)
    await pg.sql('select pg_switch_wal()')
    b2 = await takeBackup({ server: { conninfo: pg.url() }, repo: r.repo })
    await pg.sql('select pg_switch_wal()')
    await pg.sql(`insert into t select g, 'y' from generate_series(2001, 2010) g`)
    pastEnd = (await pg.sql<{ l: string }>('select pg_current_wal_lsn()::text l'))[0]!.l
    const info = await runMain(['info', '--repo', r.dir, '--json'])
    expect(info.code, info.stderr).toBe(0)
    wal = JSON.parse(info.stdout).clusters[0].wal[0]
    expect(wal.gaps.length, info.stdout).toBe(1)
  }, 300_000)
  afterAll(async () => {
    await pg?.destroy()
    await r?.close()
  })

  /** Runs `pgkeep restore` into a new directory (tablespace mapped beside it); both must stay missing on refusal. */
  async function restore(args: string[]) {
    const dir = join(pg.baseDir, `restore-${++n}`)
    const res = await runMain(['restore', '--repo', r.dir, '--pgdata', dir, '--tablespace-mapping', `${pg.tablespaceDirs[0]}=${dir}-ts`, ...args])
    return { ...res, dir, created: existsSync(dir) || existsSync(`${dir}-ts`) }
  }

  it('a target LSN in the gap: refused with the range info shows, nothing created', async () => {
    const res = await restore(['--target-lsn', inGap])
    expect(res.code, res.stderr).toBe(2)
    expect(res.stderr).toContain(
      `recovery target LSN ${inGap} cannot be reached from backup ${b1.id}: the repository's WAL takes recovery from ${b1.endLsn}..${wal.ranges[0]!.end} (timeline 1); a gap follows on timeline 1, up to ${wal.gaps[0]!.to}`,
    )
    expect(wal.gaps[0]!.from).toBe(wal.ranges[0]!.end)
    expect(res.stderr).toMatch(/HINT: choose a target in that range, or a backup taken after the gap/)
    expect(res.created).toBe(false)
  })

  it('the same target with the later backup named: before its end', async () => {
    const res = await restore(['--backup', b2.id, '--target-lsn', inGap])
    expect(res.code, res.stderr).toBe(2)
    expect(res.stderr).toContain(`recovery target LSN ${inGap} is before the end of backup ${b2.id} (${b2.endLsn})`)
    expect(res.created).toBe(false)
  })

  it('a target LSN past the end of the stored WAL', async () => {
    const res = await restore(['--target-lsn', pastEnd])
    expect(res.code, res.stderr).toBe(2)
    expect(res.stderr).toContain(
      `cannot be reached from backup ${b2.id}: the repository's WAL takes recovery from ${b2.endLsn}..${wal.ranges[1]!.end} (timeline 1)\n`,
    )
    expect(res.stderr).toMatch(/HINT: .*pg_switch_wal\(\)/)
    expect(res.created).toBe(false)
  })

  it('a target time after the newest stored WAL, and one before the named backup finished', async () => {
    const later = await restore(['--target-time', new Date(Date.now() + 3_600_000).toISOString()])
    expect(later.code, later.stderr).toBe(2)
    expect(later.stderr).toMatch(new RegExp(`cannot be reached from backup ${b2.id}: .*; the newest of that WAL was stored at `))
    expect(later.created).toBe(false)
    const earlier = await restore(['--backup', b2.id, '--target-time', between])
    expect(earlier.code, earlier.stderr).toBe(2)
    expect(earlier.stderr).toMatch(new RegExp(`is before backup ${b2.id} finished`))
    expect(earlier.created).toBe(false)
  })

  it('a target time without a zone, or on a day that does not exist', async () => {
    const bare = await restore(['--target-time', '2026-11-21 05:27:37'])
    expect(bare.code, bare.stderr).toBe(2)
    expect(bare.stderr).toMatch(/recovery target time '2026-11-21 05:27:37' has no time zone\nHINT: PostgreSQL would read it in the server's timezone setting/)
    const feb31 = await restore(['--target-time', '2026-02-31 00:00:00+00'])
    expect(feb31.code, feb31.stderr).toBe(2)
    expect(feb31.stderr).toMatch(/2026-02 has no day 31/)
    expect(bare.created || feb31.created).toBe(false)
  })

  it('a reachable target restores', async () => {
    const res = await restore(['--target-lsn', b2.endLsn, '--json'])
    expect(res.code, res.stderr).toBe(0)
    expect(JSON.parse(res.stdout).backupId).toBe(b2.id)
    expect(existsSync(join(res.dir, 'global', 'pg_control'))).toBe(true)
  })
})
