// The pure parts of monitoring: the freshness judgement (judgeFreshness) and the Prometheus rendering
// (formatMetrics) of a repository state given as a plain object, the durations and listen addresses the CLI takes,
// and the defensive reading of drill records. The same paths on a real server's backups and WAL are in
// test/integration/monitoring.test.ts; here every branch, with states chosen to reach it.

import { describe, expect, it } from 'vitest'
import { judgeFreshness } from '../../src/check/check-freshness.js'
import { parseDuration, parseListenAddress } from '../../src/cli/parse.js'
import { UsageError } from '../../src/errors.js'
import { formatMetrics, type StreamMetricsSource } from '../../src/metrics/prometheus.js'
import { type ClusterStatus, type DrillRecord, type DrillSummary, readDrillStatus, type RepositoryStatus, writeDrillRecord } from '../../src/repo/index.js'
import { parseMetrics } from '../harness/prometheus.js'
import { freshFsRepo } from '../harness/repo.js'

const NOW = Date.parse('2026-03-01T12:00:00Z')
const HOUR = 3_600_000
const SYS = '7000000000000000042'
const at = (msBefore: number) => new Date(NOW - msBefore).toISOString()

function drill(msBefore: number, passed: boolean, rtoMs: number | null = 42_000): DrillSummary {
  return { id: `d${msBefore}`, passed, finishedAt: at(msBefore), backupId: 'b', rtoMs }
}

function cluster(o: { backupAgo?: number | null; walAgo?: number | null; last?: DrillSummary; lastPassed?: DrillSummary; name?: string } = {}): ClusterStatus {
  const backupAgo = o.backupAgo === undefined ? 2 * HOUR : o.backupAgo
  const walAgo = o.walAgo === undefined ? 60_000 : o.walAgo
  return {
    systemId: SYS,
    name: o.name ?? 'main',
    backups: backupAgo === null ? 0 : 2,
    logicalBytes: backupAgo === null ? 0 : 11_000_000,
    storedBytes: backupAgo === null ? 0 : 3_500_000,
    lastBackup:
      backupAgo === null
        ? null
        : {
            id: 'b2',
            type: 'incremental',
            startedAt: at(backupAgo + 90_000),
            finishedAt: at(backupAgo),
            durationMs: 90_000,
            sizeBytes: 6_000_000,
            storedBytes: 500_000,
          },
    wal: { newestStoredAt: walAgo === null ? null : at(walAgo), segments: walAgo === null ? 0 : 4, gaps: 0 },
    window:
      backupAgo === null || walAgo === null
        ? null
        : {
            from: { lsn: '0/2000100', time: at(30 * HOUR), backupId: 'b1' },
            to: { lsn: '0/6000000', timeline: 1, storedBy: at(walAgo), backupId: 'b2' },
            holes: [],
          },
    windowProblem: null,
    drills: { last: o.last ?? o.lastPassed ?? null, lastPassed: o.lastPassed ?? null, count: (o.last ? 1 : 0) + (o.lastPassed ? 1 : 0) },
  }
}

function status(clusters: ClusterStatus[], extra: Partial<RepositoryStatus> = {}): RepositoryStatus {
  return {
    location: '/srv/pgkeep',
    encrypted: false,
    readAt: at(0),
    clusters,
    usage: { totalBytes: 4_200_000, objects: 17, packBytes: 4_000_000, packs: 3, indexBytes: 100_000, recordBytes: 100_000, records: 10 },
    dedupRatio: clusters.length > 0 ? 11 / 3.5 : null,
    locks: { live: 1, expired: 0, dead: 0, unreadable: 0 },
    ...extra,
  }
}

const LIMITS = { maxBackupAgeMs: 26 * HOUR, maxWalAgeMs: 5 * 60_000, maxDrillAgeMs: 8 * 24 * HOUR }
const codes = (s: RepositoryStatus, limits = LIMITS) => judgeFreshness(s, limits, { now: NOW }).violations.map((v) => v.code)

describe('judgeFreshness', () => {
  it('is ok when backups, WAL and drills are recent, and reports their ages', () => {
    const r = judgeFreshness(status([cluster({ lastPassed: drill(48 * HOUR, true) })]), LIMITS, { now: NOW })
    expect(r.ok).toBe(true)
    expect(r.violations).toEqual([])
    expect(r.clusters).toEqual([
      {
        systemId: SYS,
        name: 'main',
        lastBackupAt: at(2 * HOUR),
        backupAgeMs: 2 * HOUR,
        newestWalAt: at(60_000),
        walAgeMs: 60_000,
        lastGoodDrillAt: at(48 * HOUR),
        drillAgeMs: 48 * HOUR,
        lastDrillPassed: true,
      },
    ])
  })

  it('names a stale backup with its age, time and the limit', () => {
    const [v, ...more] = judgeFreshness(status([cluster({ backupAgo: 30 * HOUR })]), { maxBackupAgeMs: 26 * HOUR }, { now: NOW }).violations
    expect(more).toEqual([])
    expect(v).toEqual({
      code: 'BACKUP_STALE',
      systemId: SYS,
      clusterName: 'main',
      message: `cluster ${SYS} (main): last backup finished 30h00m ago (${at(30 * HOUR)}), more than the 26h00m allowed`,
      ageMs: 30 * HOUR,
      limitMs: 26 * HOUR,
    })
  })

  it('names stale WAL, missing backups and WAL, one violation per limit', () => {
    expect(codes(status([cluster({ walAgo: 10 * 60_000, lastPassed: drill(HOUR, true) })]))).toEqual(['WAL_STALE'])
    expect(codes(status([cluster({ backupAgo: null, walAgo: null, lastPassed: drill(HOUR, true) })]))).toEqual(['NO_BACKUP', 'NO_WAL'])
    expect(codes(status([cluster({ backupAgo: 30 * HOUR, walAgo: 10 * 60_000 })]))).toEqual(['BACKUP_STALE', 'WAL_STALE', 'NO_DRILL'])
    // A limit not given is not judged.
    expect(codes(status([cluster({ backupAgo: 30 * HOUR, walAgo: 10 * 60_000 })]), { maxWalAgeMs: HOUR } as typeof LIMITS)).toEqual([])
    // Exactly at the limit is still fresh.
    expect(codes(status([cluster({ backupAgo: 26 * HOUR })]), { maxBackupAgeMs: 26 * HOUR } as typeof LIMITS)).toEqual([])
  })

  it('names a failed newest drill even when an older good one is recent, and a stale good one', () => {
    expect(codes(status([cluster({ last: drill(HOUR, false), lastPassed: drill(3 * HOUR, true) })]))).toEqual(['DRILL_FAILED'])
    expect(codes(status([cluster({ last: drill(HOUR, false) })]))).toEqual(['DRILL_FAILED', 'NO_DRILL'])
    expect(codes(status([cluster({ lastPassed: drill(9 * 24 * HOUR, true) })]))).toEqual(['DRILL_STALE'])
  })

  it('says when the repository holds no cluster, and judges only the selected cluster', () => {
    const empty = judgeFreshness(status([]), { maxBackupAgeMs: HOUR, maxWalAgeMs: 60_000 }, { now: NOW })
    expect(empty.violations).toEqual([
      {
        code: 'NO_CLUSTER',
        systemId: null,
        clusterName: null,
        message: "repository '/srv/pgkeep' holds no cluster: no backup and no WAL",
        ageMs: null,
        limitMs: 60_000,
      },
    ])
    const other = { ...cluster({ backupAgo: 30 * HOUR }), systemId: '7000000000000000099', name: 'other' }
    const s = status([cluster({ lastPassed: drill(HOUR, true) }), other])
    expect(codes(s)).toEqual(['BACKUP_STALE', 'NO_DRILL'])
    expect(judgeFreshness(s, LIMITS, { now: NOW, systemId: SYS }).ok).toBe(true)
  })
})

describe('formatMetrics', () => {
  it('renders a repository state as Prometheus text a parser reads back, with the values of the state', async () => {
    const c = cluster({ last: drill(HOUR, false), lastPassed: drill(5 * HOUR, true, 12_500) })
    const m = parseMetrics(await formatMetrics(status([c]), { now: NOW }))
    const l = { cluster: SYS, cluster_name: 'main' }
    expect(m.value('pgkeep_repository_readable')).toBe(1)
    expect(m.value('pgkeep_repository_status_timestamp_seconds')).toBe(NOW / 1000)
    expect(m.value('pgkeep_repository_size_bytes')).toBe(4_200_000)
    expect(m.value('pgkeep_repository_objects')).toBe(17)
    expect(m.value('pgkeep_repository_pack_bytes')).toBe(4_000_000)
    expect(m.value('pgkeep_repository_dedup_ratio')).toBe(11 / 3.5)
    expect(m.samples('pgkeep_repository_locks')).toHaveLength(4)
    expect(m.value('pgkeep_repository_locks', { state: 'live' })).toBe(1)
    expect(m.value('pgkeep_backups', l)).toBe(2)
    expect(m.value('pgkeep_backups_logical_bytes', l)).toBe(11_000_000)
    expect(m.value('pgkeep_backups_stored_bytes', l)).toBe(3_500_000)
    expect(m.value('pgkeep_last_backup_end_timestamp_seconds', l)).toBe((NOW - 2 * HOUR) / 1000)
    expect(m.value('pgkeep_last_backup_age_seconds', l)).toBe(7200)
    expect(m.value('pgkeep_last_backup_duration_seconds', l)).toBe(90)
    expect(m.value('pgkeep_last_backup_size_bytes', l)).toBe(6_000_000)
    expect(m.value('pgkeep_last_backup_stored_bytes', l)).toBe(500_000)
    expect(m.value('pgkeep_wal_newest_stored_timestamp_seconds', l)).toBe((NOW - 60_000) / 1000)
    expect(m.value('pgkeep_wal_archive_lag_seconds', l)).toBe(60)
    expect(m.value('pgkeep_wal_stored_segments', l)).toBe(4)
    expect(m.value('pgkeep_wal_gaps', l)).toBe(0)
    expect(m.value('pgkeep_recoverable_window_start_timestamp_seconds', l)).toBe((NOW - 30 * HOUR) / 1000)
    expect(m.value('pgkeep_recoverable_window_end_timestamp_seconds', l)).toBe((NOW - 60_000) / 1000)
    expect(m.value('pgkeep_drills', l)).toBe(2)
    expect(m.value('pgkeep_last_drill_passed', l)).toBe(0)
    expect(m.value('pgkeep_last_good_drill_timestamp_seconds', l)).toBe((NOW - 5 * HOUR) / 1000)
    expect(m.value('pgkeep_last_good_drill_rto_seconds', l)).toBe(12.5)
    // Every metric has a HELP and TYPE line and a conventional name.
    for (const [name, type] of m.types) {
      expect(name).toMatch(/^pgkeep_[a-z_]+$/)
      expect(type === 'COUNTER').toBe(name.endsWith('_total'))
    }
    // A streamer's metrics only come with a streamer.
    expect(m.samples('pgkeep_wal_stream_connected')).toEqual([])
    expect(m.samples('pgkeep_wal_archive_lag_bytes')).toEqual([])
  })

  it('leaves out what a cluster does not have instead of showing empty series', async () => {
    const m = parseMetrics(await formatMetrics(status([cluster({ backupAgo: null, walAgo: null })], { dedupRatio: null }), { now: NOW }))
    expect(m.value('pgkeep_backups', { cluster: SYS })).toBe(0)
    for (const name of [
      'pgkeep_last_backup_end_timestamp_seconds',
      'pgkeep_wal_newest_stored_timestamp_seconds',
      'pgkeep_recoverable_window_start_timestamp_seconds',
      'pgkeep_last_drill_passed',
    ]) {
      expect(m.types.has(name), name).toBe(false)
    }
    expect(m.types.has('pgkeep_repository_dedup_ratio')).toBe(false)
  })

  it("adds a streamer's state; its lag replaces the one the stored WAL implies", async () => {
    const stream: StreamMetricsSource = {
      slot: 'pgkeep',
      systemId: SYS,
      connected: true,
      restarts: 2,
      timeline: 1,
      receivedLsn: 0x6000100n,
      durableLsn: 0x6000000n,
      serverWalEnd: 0x6000200n,
      lagBytes: 0x200,
      lagSeconds: 1.5,
      queuedBytes: 256,
      segmentsStored: 5,
    }
    const m = parseMetrics(await formatMetrics(status([cluster()]), { now: NOW, stream }))
    const s = { cluster: SYS, slot: 'pgkeep' }
    const l = { cluster: SYS, cluster_name: 'main' }
    expect(m.value('pgkeep_wal_stream_connected', s)).toBe(1)
    expect(m.types.get('pgkeep_wal_stream_restarts_total')).toBe('COUNTER')
    expect(m.value('pgkeep_wal_stream_restarts_total', s)).toBe(2)
    expect(m.value('pgkeep_wal_stream_segments_stored_total', s)).toBe(5)
    expect(m.value('pgkeep_wal_stream_received_position_bytes', s)).toBe(0x6000100)
    expect(m.value('pgkeep_wal_stream_durable_position_bytes', s)).toBe(0x6000000)
    expect(m.value('pgkeep_wal_stream_server_position_bytes', s)).toBe(0x6000200)
    expect(m.value('pgkeep_wal_stream_queued_bytes', s)).toBe(256)
    expect(m.value('pgkeep_wal_archive_lag_bytes', l)).toBe(0x200)
    expect(m.value('pgkeep_wal_archive_lag_seconds', l)).toBe(1.5)

    // The repository unreadable (or not yet holding the cluster): the streamer's metrics and its lag still.
    const alone = parseMetrics(await formatMetrics(null, { now: NOW, stream: { ...stream, connected: false } }))
    expect(alone.value('pgkeep_repository_readable')).toBe(0)
    expect(alone.value('pgkeep_wal_stream_connected', s)).toBe(0)
    expect(alone.value('pgkeep_wal_archive_lag_bytes', { cluster: SYS, cluster_name: SYS })).toBe(0x200)
    expect(alone.types.has('pgkeep_backups')).toBe(false)
  })

  it('prints ages in whole milliseconds, without float noise', async () => {
    const m = parseMetrics(await formatMetrics(status([cluster({ backupAgo: 1721, walAgo: 1732 })]), { now: NOW }))
    expect(m.value('pgkeep_last_backup_age_seconds', { cluster: SYS })).toBe(1.721)
    expect(m.value('pgkeep_wal_archive_lag_seconds', { cluster: SYS })).toBe(1.732)
  })

  it('escapes label values a parser must read back intact', async () => {
    const name = 'a "quoted"\\name'
    const m = parseMetrics(await formatMetrics(status([cluster({ name })]), { now: NOW }))
    expect(m.value('pgkeep_backups', { cluster: SYS, cluster_name: name })).toBe(2)
  })
})

describe('durations and listen addresses of the CLI', () => {
  it('reads durations with units and refuses bare numbers and nonsense', () => {
    expect(parseDuration('26h', 'x')).toBe(26 * HOUR)
    expect(parseDuration('1h30m', 'x')).toBe(90 * 60_000)
    expect(parseDuration('90s', 'x')).toBe(90_000)
    expect(parseDuration('8d', 'x')).toBe(8 * 24 * HOUR)
    expect(parseDuration('1w', 'x')).toBe(7 * 24 * HOUR)
    expect(parseDuration('1.5h', 'x')).toBe(90 * 60_000)
    for (const bad of ['26', '', 'h', '0s', '5m extra', '-1h', '5 m']) {
      expect(() => parseDuration(bad, '--max-wal-age'), bad).toThrow(UsageError)
    }
    expect(() => parseDuration('26', '--max-backup-age')).toThrow("invalid --max-backup-age '26'")
  })

  it('reads HOST:PORT, [IPV6]:PORT, :PORT and PORT', () => {
    expect(parseListenAddress('127.0.0.1:9187', 'x')).toEqual({ host: '127.0.0.1', port: 9187 })
    expect(parseListenAddress('[::1]:0', 'x')).toEqual({ host: '::1', port: 0 })
    expect(parseListenAddress(':9187', 'x')).toEqual({ host: undefined, port: 9187 })
    expect(parseListenAddress('9187', 'x')).toEqual({ host: undefined, port: 9187 })
    expect(parseListenAddress('localhost:9187', 'x')).toEqual({ host: 'localhost', port: 9187 })
    for (const bad of ['127.0.0.1', '127.0.0.1:70000', 'host:port', '[::1]', 'a b:1', '']) {
      expect(() => parseListenAddress(bad, '--metrics-listen'), bad).toThrow(UsageError)
    }
  })
})

describe('drill records as monitoring reads them', () => {
  it('takes the newest drill and the newest that passed, passing over records it cannot trust', async () => {
    const r = await freshFsRepo()
    try {
      const drill = (id: string, passed: boolean, finishedAt: string, rtoMs: number | null): DrillRecord => ({
        formatVersion: 1,
        id,
        systemId: SYS,
        clusterName: SYS,
        backupId: passed ? 'b1' : null,
        backupType: passed ? 'full' : null,
        serverVersion: '17.10',
        target: 'end of the archived WAL',
        startedAt: finishedAt,
        finishedAt,
        passed,
        failure: passed ? null : 'restore: no backup',
        timings: { restoreMs: rtoMs, recoveryMs: rtoMs === null ? null : 0, checksMs: null, rtoMs },
        recoveredTo: { lsn: null, lastCommitAt: null },
        checks: [],
      })
      const put = (key: string, value: unknown) => r.repo.writeRecord('drill', `${SYS}/${key}`, value)
      expect(await readDrillStatus(r.repo, SYS)).toEqual({ last: null, lastPassed: null, count: 0 })
      await writeDrillRecord(r.repo, drill('20260301T080000.000Z-aaaaaa', true, at(4 * HOUR), 9000))
      await writeDrillRecord(r.repo, drill('20260301T090000.000Z-bbbbbb', false, at(3 * HOUR), null))
      // Newer, but not what a drill record says: fields missing, a result of the wrong type or against its key, not
      // an object; and a key without its result, which is not a drill record's key at all.
      await put('20260301T100000.000Z-cccccc.passed', { passed: true })
      await put('20260301T103000.000Z-dddddd.failed', { ...drill('20260301T103000.000Z-dddddd', false, at(HOUR), null), passed: 'yes' })
      await put('20260301T104000.000Z-eeeeee.failed', drill('20260301T104000.000Z-eeeeee', true, at(HOUR), 1))
      await put('20260301T110000.000Z-ffffff.passed', [1, 2, 3])
      await put('20260301T120000.000Z-999999', drill('20260301T120000.000Z-999999', true, at(HOUR), 1))
      const s = await readDrillStatus(r.repo, SYS)
      expect(s.count).toBe(6)
      expect(s.last).toEqual({ id: '20260301T090000.000Z-bbbbbb', passed: false, finishedAt: at(3 * HOUR), backupId: null, rtoMs: null })
      expect(s.lastPassed).toEqual({ id: '20260301T080000.000Z-aaaaaa', passed: true, finishedAt: at(4 * HOUR), backupId: 'b1', rtoMs: 9000 })
      // Another cluster's drills are not this one's.
      expect((await readDrillStatus(r.repo, '7000000000000000099')).count).toBe(0)
    } finally {
      await r.close()
    }
  })
})
