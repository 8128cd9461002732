// Prometheus metrics of a repository (and of a running `wal stream`), in the text exposition format: what
// `pgkeep metrics` prints and `wal stream --metrics-listen` serves. Built on prom-client with a private registry
// per rendering (never the process-global one), from the plain state readRepositoryStatus returns. Names follow
// Prometheus conventions: base units (`_seconds`, `_bytes`), `_timestamp_seconds` for points in time, `_total` for
// counters; every per-cluster series has the labels `cluster` (system identifier) and `cluster_name`.
// docs/operations.md lists every metric.

import type { ClusterStatus, Repository, RepositoryStatus } from '../repo/index.js'
import { readRepositoryStatus } from '../repo/index.js'

/** The content type of the text exposition format rendered here (Prometheus text format 0.0.4). */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/**
 * The state of a running WAL streamer that its metrics show (WalStreamer.status() has this shape). Positions are
 * WAL locations (bigint byte positions).
 */
export interface StreamMetricsSource {
  readonly slot: string
  readonly systemId: string | undefined
  readonly connected: boolean
  readonly restarts: number
  readonly timeline: number | undefined
  readonly receivedLsn: bigint | undefined
  readonly durableLsn: bigint | undefined
  readonly serverWalEnd: bigint | undefined
  readonly lagBytes: number | undefined
  readonly lagSeconds: number | undefined
  readonly queuedBytes: number
  readonly segmentsStored: number
}

/** Options of {@link formatMetrics}. */
export interface FormatMetricsOptions {
  /** The streamer serving the metrics, when there is one (`wal stream --metrics-listen`). */
  stream?: StreamMetricsSource
  /** "Now" for ages, in ms since the epoch (default: this host's clock). */
  now?: number
}

/**
 * Renders the metrics of a repository's state (null when it could not be read: then only the streamer's own
 * metrics and `pgkeep_repository_readable 0`) in the Prometheus text format.
 */
export async function formatMetrics(status: RepositoryStatus | null, o: FormatMetricsOptions = {}): Promise<string> {
  // Loaded here, not at startup: `wal push` and `wal get` run for every WAL file and never need it.
  const { Counter, Gauge, Registry } = await import('prom-client')
  const registry = new Registry()
  const now = o.now ?? Date.now()
  const clusterLabels = ['cluster', 'cluster_name'] as const
  // A metric is registered at its first value: one no cluster has a value for is left out, not shown empty.
  const gauge = (name: string, help: string, labelNames: readonly string[] = clusterLabels) => {
    let g: InstanceType<typeof Gauge> | undefined
    return {
      set(labels: Record<string, string> | number, value?: number): void {
        g ??= new Gauge({ name, help, labelNames, registers: [registry] })
        if (typeof labels === 'number') g.set(labels)
        else g.set(labels, value!)
      },
    }
  }
  const seconds = (iso: string) => Date.parse(iso) / 1000
  // Ages in whole milliseconds, then seconds: `now / 1000 - end` would print float noise (1.7209999561309814).
  const ageSeconds = (iso: string) => Math.max(0, now - Date.parse(iso)) / 1000

  const readable = gauge('pgkeep_repository_readable', 'Whether the repository could be read for these metrics (1) or not (0)', [])
  readable.set(status ? 1 : 0)
  const stream = o.stream
  if (status) {
    gauge('pgkeep_repository_status_timestamp_seconds', 'When the repository state shown was read', []).set(seconds(status.readAt))
    gauge('pgkeep_repository_clusters', 'Clusters in the repository', []).set(status.clusters.length)
    const locks = gauge('pgkeep_repository_locks', 'Repository locks by state (live, expired, dead, unreadable)', ['state'])
    for (const [state, n] of Object.entries(status.locks)) locks.set({ state }, n)
    if (status.usage) {
      gauge('pgkeep_repository_size_bytes', 'Bytes of every object in the repository, as its storage lists them', []).set(status.usage.totalBytes)
      gauge('pgkeep_repository_objects', 'Objects in the repository', []).set(status.usage.objects)
      gauge('pgkeep_repository_pack_bytes', 'Bytes of the packs (compressed, encrypted blobs of backups and WAL)', []).set(status.usage.packBytes)
    }
    if (status.dedupRatio !== null) {
      gauge('pgkeep_repository_dedup_ratio', "All backups' logical bytes over the plain bytes they stored (deduplication)", []).set(status.dedupRatio)
    }
  }
  clusterMetrics(status?.clusters ?? [], { gauge, seconds, ageSeconds, stream })
  if (stream) {
    const labels = { cluster: stream.systemId ?? '', slot: stream.slot }
    const sg = (name: string, help: string, value: number | bigint | undefined) => {
      if (value !== undefined) gauge(name, help, ['cluster', 'slot']).set(labels, Number(value))
    }
    sg('pgkeep_wal_stream_connected', 'Whether the streamer has a replication stream running (1) or not (0)', stream.connected ? 1 : 0)
    sg('pgkeep_wal_stream_timeline', 'Timeline being streamed', stream.timeline)
    sg('pgkeep_wal_stream_received_position_bytes', 'WAL location received from the server', stream.receivedLsn)
    sg('pgkeep_wal_stream_durable_position_bytes', 'WAL location durable in the repository (the flush position reported)', stream.durableLsn)
    sg('pgkeep_wal_stream_server_position_bytes', "The server's WAL end as it last reported it", stream.serverWalEnd)
    sg('pgkeep_wal_stream_queued_bytes', 'WAL received and not yet stored', stream.queuedBytes)
    const counter = (name: string, help: string, value: number) =>
      new Counter({ name, help, labelNames: ['cluster', 'slot'], registers: [registry] }).inc(labels, value)
    counter('pgkeep_wal_stream_restarts_total', 'Reconnections after a lost connection', stream.restarts)
    counter('pgkeep_wal_stream_segments_stored_total', 'Complete WAL segments stored by this streamer', stream.segmentsStored)
  }
  return registry.metrics()
}

type GaugeOf = (name: string, help: string, labelNames?: readonly string[]) => { set(labels: Record<string, string>, value: number): void }

function clusterMetrics(
  clusters: readonly ClusterStatus[],
  o: { gauge: GaugeOf; seconds: (iso: string) => number; ageSeconds: (iso: string) => number; stream: StreamMetricsSource | undefined },
): void {
  const { seconds, ageSeconds } = o
  // Every metric is registered once; clusters that lack a value get no series for it.
  const defs = {
    backups: ['pgkeep_backups', 'Backups of the cluster in the repository'],
    logical: ['pgkeep_backups_logical_bytes', 'Logical size of all backups of the cluster together'],
    stored: ['pgkeep_backups_stored_bytes', 'Plain bytes the backups of the cluster added to the repository, together'],
    lastEnd: ['pgkeep_last_backup_end_timestamp_seconds', 'When the newest backup finished'],
    lastAge: ['pgkeep_last_backup_age_seconds', 'Seconds since the newest backup finished'],
    lastDuration: ['pgkeep_last_backup_duration_seconds', 'How long the newest backup took'],
    lastSize: ['pgkeep_last_backup_size_bytes', 'Logical size of the newest backup'],
    lastStored: ['pgkeep_last_backup_stored_bytes', 'Plain bytes the newest backup added to the repository'],
    walNewest: ['pgkeep_wal_newest_stored_timestamp_seconds', 'When the newest WAL of the cluster was stored'],
    walLag: ['pgkeep_wal_archive_lag_seconds', 'Seconds since the newest WAL was stored (wal stream: how long the oldest WAL not yet stored has waited)'],
    walLagBytes: ['pgkeep_wal_archive_lag_bytes', 'WAL on the server not yet durable in the repository (wal stream only)'],
    walSegments: ['pgkeep_wal_stored_segments', 'WAL segments stored for the cluster'],
    walGaps: ['pgkeep_wal_gaps', 'Breaks in the stored WAL that recovery cannot cross'],
    windowStart: ['pgkeep_recoverable_window_start_timestamp_seconds', 'Earliest point a restore can reach (end of the oldest backup)'],
    windowEnd: ['pgkeep_recoverable_window_end_timestamp_seconds', 'Latest point a restore can reach (newest stored WAL reachable from the newest backup)'],
    drills: ['pgkeep_drills', 'Restore drills recorded for the cluster'],
    drillPassed: ['pgkeep_last_drill_passed', 'Whether the newest restore drill passed (1) or failed (0)'],
    goodDrill: ['pgkeep_last_good_drill_timestamp_seconds', 'When the newest restore drill that passed finished'],
    goodDrillRto: ['pgkeep_last_good_drill_rto_seconds', 'Recovery time (restore and recovery) measured by the newest drill that passed'],
  } as const
  const g = Object.fromEntries(Object.entries(defs).map(([k, [name, help]]) => [k, o.gauge(name, help)])) as Record<keyof typeof defs, ReturnType<GaugeOf>>
  for (const c of clusters) {
    const l = { cluster: c.systemId, cluster_name: c.name }
    g.backups.set(l, c.backups)
    g.logical.set(l, c.logicalBytes)
    g.stored.set(l, c.storedBytes)
    if (c.lastBackup) {
      g.lastEnd.set(l, seconds(c.lastBackup.finishedAt))
      g.lastAge.set(l, ageSeconds(c.lastBackup.finishedAt))
      g.lastDuration.set(l, c.lastBackup.durationMs / 1000)
      g.lastSize.set(l, c.lastBackup.sizeBytes)
      g.lastStored.set(l, c.lastBackup.storedBytes)
    }
    g.walSegments.set(l, c.wal.segments)
    g.walGaps.set(l, c.wal.gaps)
    const streamed = o.stream?.systemId === c.systemId ? o.stream : undefined
    if (c.wal.newestStoredAt !== null) {
      g.walNewest.set(l, seconds(c.wal.newestStoredAt))
      if (!streamed) g.walLag.set(l, ageSeconds(c.wal.newestStoredAt))
    }
    if (streamed?.lagSeconds !== undefined) g.walLag.set(l, streamed.lagSeconds)
    if (streamed?.lagBytes !== undefined) g.walLagBytes.set(l, streamed.lagBytes)
    if (c.window) {
      g.windowStart.set(l, seconds(c.window.from.time))
      g.windowEnd.set(l, seconds(c.window.to.storedBy))
    }
    g.drills.set(l, c.drills.count)
    if (c.drills.last) g.drillPassed.set(l, c.drills.last.passed ? 1 : 0)
    if (c.drills.lastPassed) {
      g.goodDrill.set(l, seconds(c.drills.lastPassed.finishedAt))
      if (c.drills.lastPassed.rtoMs !== null) g.goodDrillRto.set(l, c.drills.lastPassed.rtoMs / 1000)
    }
  }
  // The streamed cluster before the repository lists it (or when the repository could not be read): its lag still.
  const s = o.stream
  if (s?.systemId !== undefined && !clusters.some((c) => c.systemId === s.systemId)) {
    const l = { cluster: s.systemId, cluster_name: s.systemId }
    if (s.lagSeconds !== undefined) g.walLag.set(l, s.lagSeconds)
    if (s.lagBytes !== undefined) g.walLagBytes.set(l, s.lagBytes)
  }
}

/** Reads a repository's state and renders its metrics: what `pgkeep metrics` prints. */
export async function repositoryMetrics(repo: Repository, o: { signal?: AbortSignal; now?: number } = {}): Promise<string> {
  return formatMetrics(await readRepositoryStatus(repo, { signal: o.signal }), { now: o.now })
}
