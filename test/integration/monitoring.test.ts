// Monitoring on a real PostgreSQL server: `pgkeep metrics` and the /metrics endpoint of `wal stream
// --metrics-listen`, read back with a Prometheus parser (parse-prometheus-text-format), their values compared with
// `pgkeep info --json`, with the server itself (system identifier, the flush position pg_stat_replication shows)
// and with the files of the repository's directory; then the freshness check's exit statuses for fresh backups and
// WAL, a stale backup and stale WAL. Staleness comes from waiting a few seconds against limits of a few seconds,
// never from made-up records.

import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseLsn } from '../../src/pg/lsn.js'
import { runBin, runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { type ParsedMetrics, parseMetrics } from '../harness/prometheus.js'
import { ensureBuilt, type PgkeepProcess, spawnPgkeep, waitUntil } from './wal-helpers.js'

const SLOT = 'pgkeep_metrics'

interface InfoBackup {
  id: string
  type: string
  finishedAt: string
  durationMs: number
  sizeBytes: number
  storedBytes: number
  endLsn: string
}
interface InfoCluster {
  systemId: string
  name: string
  backups: InfoBackup[]
  wal: { timeline: number; ranges: { start: string; end: string; segments: number; storedAt: string }[]; gaps: unknown[] }[]
}
interface Info {
  clusters: InfoCluster[]
  locks: { state: string }[]
}

beforeAll(() => ensureBuilt(), 300_000)

describe('monitoring a repository of a real PostgreSQL 17 server', () => {
  let pg: Cluster
  let repoDir: string
  let stream: PgkeepProcess | undefined
  let metricsUrl: string
  let systemId: string

  const info = async (): Promise<Info> => {
    const r = await runMain(['info', '--repo', repoDir, '--json'])
    expect(r.code, r.stderr).toBe(0)
    return JSON.parse(r.stdout)
  }
  const metrics = async (): Promise<ParsedMetrics> => {
    const r = await runMain(['metrics', '--repo', repoDir])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    return parseMetrics(r.stdout)
  }
  const scrape = async () => {
    const res = await fetch(metricsUrl)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/)
    return parseMetrics(await res.text())
  }
  /** Writes a little WAL, switches to a new segment and waits until the streamer has stored the one it closed. */
  const switchAndStore = async () => {
    // Without WAL since the last switch pg_switch_wal does nothing and names a segment that stays open.
    await pg.sql('update t set v = v where id = 1')
    const [{ name }] = await pg.sql<{ name: string }>('select pg_walfile_name(pg_switch_wal()) as name')
    await stream!.waitFor(new RegExp(`stored segment ${name}`))
  }
  const newestWalAt = (c: InfoCluster) => Math.max(...c.wal.flatMap((t) => t.ranges.map((r) => Date.parse(r.storedAt))))
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

  beforeAll(async () => {
    pg = await startCluster({ major: 17, conf: { summarize_wal: 'on' } })
    ;[{ systemId }] = await pg.sql<{ systemId: string }>('select system_identifier::text as "systemId" from pg_control_system()')
    repoDir = await mkdtemp(join(tmpdir(), 'pgkeep-monitoring-'))
    expect((await runMain(['init', '--repo', repoDir])).code).toBe(0)
    await pg.sql('create table t (id int primary key, v text)')
    await pg.sql(`insert into t select g, repeat('x', 200) from generate_series(1, 20000) g`)
    stream = spawnPgkeep([
      'wal',
      'stream',
      '-d',
      pg.url(),
      '--repo',
      repoDir,
      '--slot',
      SLOT,
      '--create-slot',
      '--status-interval',
      '1',
      '--metrics-listen',
      '127.0.0.1:0',
    ])
    metricsUrl = (await stream.waitFor(/serving metrics at (http:\/\/\S+)/))[1]!
    await stream.waitFor(/streaming cluster/)
  }, 300_000)
  afterAll(async () => {
    stream?.kill('SIGTERM')
    await stream?.exited
    await pg?.destroy()
    if (repoDir) await rm(repoDir, { recursive: true, force: true })
  })

  it('pgkeep metrics says what info --json says about a full and an incremental backup and the stored WAL', async () => {
    const full = await runMain(['backup', '-d', pg.url(), '--repo', repoDir, '--type', 'full'])
    expect(full.code, full.stderr).toBe(0)
    await pg.sql('update t set v = repeat($1, 200) where id <= 2000', ['y'])
    const incr = await runMain(['backup', '-d', pg.url(), '--repo', repoDir, '--type', 'incremental'])
    expect(incr.code, incr.stderr).toBe(0)
    await switchAndStore()

    const m = await metrics()
    const i = await info()
    expect(i.clusters).toHaveLength(1)
    const c = i.clusters[0]!
    // The cluster label is the server's own system identifier.
    expect(c.systemId).toBe(systemId)
    const l = { cluster: systemId, cluster_name: c.name }
    const [first, newest] = [c.backups[0]!, c.backups[c.backups.length - 1]!]
    expect(c.backups.map((b) => b.type)).toEqual(['full', 'incremental'])

    expect(m.types.get('pgkeep_last_backup_end_timestamp_seconds')).toBe('GAUGE')
    expect(m.value('pgkeep_repository_readable')).toBe(1)
    expect(m.value('pgkeep_repository_clusters')).toBe(1)
    expect(m.value('pgkeep_backups', l)).toBe(2)
    expect(m.value('pgkeep_last_backup_end_timestamp_seconds', l)).toBe(Date.parse(newest.finishedAt) / 1000)
    expect(m.value('pgkeep_last_backup_duration_seconds', l)).toBe(newest.durationMs / 1000)
    expect(m.value('pgkeep_last_backup_size_bytes', l)).toBe(newest.sizeBytes)
    expect(m.value('pgkeep_last_backup_stored_bytes', l)).toBe(newest.storedBytes)
    expect(m.value('pgkeep_last_backup_age_seconds', l)).toBeGreaterThanOrEqual(0)
    const logical = first.sizeBytes + newest.sizeBytes
    const stored = first.storedBytes + newest.storedBytes
    expect(m.value('pgkeep_backups_logical_bytes', l)).toBe(logical)
    expect(m.value('pgkeep_backups_stored_bytes', l)).toBe(stored)
    expect(m.value('pgkeep_repository_dedup_ratio')).toBe(logical / stored)
    // The incremental stored far less than it describes: deduplication shows.
    expect(m.value('pgkeep_repository_dedup_ratio')).toBeGreaterThan(1.5)

    const ranges = c.wal.flatMap((t) => t.ranges)
    expect(c.wal.flatMap((t) => t.gaps)).toEqual([])
    expect(m.value('pgkeep_wal_gaps', l)).toBe(0)
    expect(m.value('pgkeep_wal_stored_segments', l)).toBe(ranges.reduce((s, r) => s + r.segments, 0))
    expect(m.value('pgkeep_wal_newest_stored_timestamp_seconds', l)).toBe(newestWalAt(c) / 1000)
    // The window: from the end of the oldest backup to the newest WAL (gap-free from the newest backup on).
    expect(ranges).toHaveLength(1)
    expect(parseLsn(ranges[0]!.start)).toBeLessThanOrEqual(parseLsn(first.endLsn))
    expect(m.value('pgkeep_recoverable_window_start_timestamp_seconds', l)).toBe(Date.parse(first.finishedAt) / 1000)
    expect(m.value('pgkeep_recoverable_window_end_timestamp_seconds', l)).toBe(newestWalAt(c) / 1000)

    // The streamer holds a shared lock: info lists it, the metrics count it.
    const live = i.locks.filter((x) => x.state === 'live').length
    expect(live).toBe(1)
    expect(m.value('pgkeep_repository_locks', { state: 'live' })).toBe(live)
    // No drill has run, and a repository read by `pgkeep metrics` has no streamer.
    expect(m.value('pgkeep_drills', l)).toBe(0)
    expect(m.samples('pgkeep_last_good_drill_timestamp_seconds')).toEqual([])
    expect(m.samples('pgkeep_wal_stream_connected')).toEqual([])
  })

  it("wal stream's /metrics adds the streamer's state, matching what the server says it was told", async () => {
    const viaCli = await metrics()
    const l = { cluster: systemId, slot: SLOT }
    // The flush position the streamer reports is what pg_stat_replication shows; WAL the server writes meanwhile
    // (its background activity) can make them differ for a moment, so scrape until they agree.
    let m: ParsedMetrics | undefined
    let serverFlush = 0n
    await waitUntil(
      'the durable position of /metrics equals the flush position the server shows',
      async () => {
        m = await scrape()
        const [r] = await pg.sql<{ flush: string | null }>(`select flush_lsn::text as flush from pg_stat_replication where application_name = '${SLOT}'`)
        serverFlush = r?.flush ? parseLsn(r.flush) : -1n
        return BigInt(m.value('pgkeep_wal_stream_durable_position_bytes', l) ?? -2) === serverFlush
      },
      60_000,
      500,
    )
    const s = m!
    expect(s.value('pgkeep_wal_stream_connected', l)).toBe(1)
    expect(s.types.get('pgkeep_wal_stream_restarts_total')).toBe('COUNTER')
    expect(s.value('pgkeep_wal_stream_restarts_total', l)).toBe(0)
    expect(s.value('pgkeep_wal_stream_timeline', l)).toBe(1)
    const received = s.value('pgkeep_wal_stream_received_position_bytes', l)!
    const durable = s.value('pgkeep_wal_stream_durable_position_bytes', l)!
    const serverEnd = s.value('pgkeep_wal_stream_server_position_bytes', l)!
    expect(received).toBeGreaterThanOrEqual(durable)
    expect(serverEnd).toBeGreaterThanOrEqual(durable)
    const [{ now }] = await pg.sql<{ now: string }>('select pg_current_wal_flush_lsn()::text as now')
    expect(BigInt(serverEnd)).toBeLessThanOrEqual(parseLsn(now))
    const cl = { cluster: systemId, cluster_name: systemId }
    expect(s.value('pgkeep_wal_archive_lag_bytes', cl)).toBe(serverEnd - durable)
    expect(s.value('pgkeep_wal_archive_lag_seconds', cl)).toBeGreaterThanOrEqual(0)
    expect(s.value('pgkeep_wal_stream_segments_stored_total', l)).toBeGreaterThanOrEqual(1)
    // The repository's part says what info --json says, and is the one `pgkeep metrics` prints.
    const c = (await info()).clusters[0]!
    const newest = c.backups.at(-1)!
    expect(s.value('pgkeep_backups', cl)).toBe(c.backups.length)
    expect(s.value('pgkeep_last_backup_end_timestamp_seconds', cl)).toBe(Date.parse(newest.finishedAt) / 1000)
    expect(s.value('pgkeep_last_backup_stored_bytes', cl)).toBe(newest.storedBytes)
    expect(s.value('pgkeep_wal_newest_stored_timestamp_seconds', cl)).toBe(newestWalAt(c) / 1000)
    for (const name of ['pgkeep_backups', 'pgkeep_last_backup_end_timestamp_seconds', 'pgkeep_last_backup_size_bytes', 'pgkeep_backups_stored_bytes']) {
      expect(s.value(name, cl), name).toBe(viaCli.value(name, cl))
    }
    expect(s.value('pgkeep_repository_dedup_ratio')).toBe(viaCli.value('pgkeep_repository_dedup_ratio'))

    expect((await fetch(metricsUrl.replace(/\/metrics$/, '/other'))).status).toBe(404)
    expect((await fetch(metricsUrl, { method: 'POST' })).status).toBe(405)
  })

  it('pgkeep check --max-*-age: 0 when fresh, 1 with one line per stale backup or stale WAL', async () => {
    const check = (...args: string[]) => runMain(['check', '--repo', repoDir, ...args])
    const { name } = (await info()).clusters[0]!
    const who = `cluster ${systemId}${name === systemId ? '' : ` \\(${name}\\)`}`

    const fresh = await check('--max-backup-age', '1h', '--max-wal-age', '1h')
    expect(fresh.stderr).toBe('')
    expect(fresh.code).toBe(0)
    expect(fresh.stdout).toMatch(new RegExp(`^OK: ${who}: last backup \\S+ ago, newest WAL \\S+ ago\\n$`))

    // A stale backup: more than 2 s since the newest backup, while the streamer keeps the WAL fresh.
    const lastBackup = (await info()).clusters[0]!.backups.at(-1)!
    await sleep(Math.max(0, Date.parse(lastBackup.finishedAt) + 3000 - Date.now()))
    await switchAndStore()
    const staleBackup = await check('--max-backup-age', '2s', '--max-wal-age', '1h')
    expect(staleBackup.code).toBe(1)
    expect(staleBackup.stdout).toMatch(
      new RegExp(`^BACKUP_STALE: ${who}: last backup finished \\S+ ago \\(${lastBackup.finishedAt.replace(/\./g, '\\.')}\\), more than the \\S+ allowed\\n$`),
    )

    // Stale WAL: the streamer stopped, more than 2 s since the newest WAL was stored; the backup limit is met.
    stream!.kill('SIGTERM')
    expect(await stream!.exited, stream!.output()).toBe(0)
    stream = undefined
    const newest = newestWalAt((await info()).clusters[0]!)
    await sleep(Math.max(0, newest + 3000 - Date.now()))
    // The installed binary, as cron and probes run it: the process's exit status.
    const staleWal = await runBin(['check', '--repo', repoDir, '--max-backup-age', '1h', '--max-wal-age', '2s'])
    expect(staleWal.stderr).toBe('')
    expect(staleWal.code).toBe(1)
    expect(staleWal.stdout).toMatch(new RegExp(`^WAL_STALE: ${who}: newest WAL was stored \\S+ ago \\(.+Z\\), more than the \\S+ allowed\\n$`))
    const json = await check('--max-backup-age', '1h', '--max-wal-age', '2s', '--json')
    expect(json.code).toBe(1)
    const report = JSON.parse(json.stdout)
    expect(report.ok).toBe(false)
    expect(report.violations).toMatchObject([{ code: 'WAL_STALE', systemId, limitMs: 2000, ageMs: expect.any(Number) }])
    expect(report.violations[0].ageMs).toBeGreaterThan(2000)
    expect(report.clusters[0]).toMatchObject({ systemId, newestWalAt: new Date(newest).toISOString(), lastBackupAt: lastBackup.finishedAt })

    // Both late, and a drill limit without any drill: one line each, in that order.
    const all = await check('--max-backup-age', '2s', '--max-wal-age', '2s', '--max-drill-age', '8d')
    expect(all.code).toBe(1)
    expect(
      all.stdout
        .trim()
        .split('\n')
        .map((x) => x.split(':')[0]),
    ).toEqual(['BACKUP_STALE', 'WAL_STALE', 'NO_DRILL'])
    // Limits the repository meets again: fresh.
    expect((await check('--max-backup-age', '1h', '--max-wal-age', '1h')).code).toBe(0)
  })

  it('with nothing writing, the repository size in the metrics is the size of its files, and no lock is live', async () => {
    const m = await metrics()
    let bytes = 0
    let files = 0
    for (const e of await readdir(repoDir, { recursive: true, withFileTypes: true })) {
      if (!e.isFile()) continue
      bytes += (await stat(join(e.parentPath, e.name))).size
      files++
    }
    expect(m.value('pgkeep_repository_size_bytes')).toBe(bytes)
    expect(m.value('pgkeep_repository_objects')).toBe(files)
    expect(m.value('pgkeep_repository_locks', { state: 'live' })).toBe(0)
  })
})
