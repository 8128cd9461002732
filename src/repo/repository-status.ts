// The state of a repository that monitoring and freshness alerts judge, in one plain object: per cluster the newest
// backup, the newest stored WAL, the recoverable window and the restore drills; for the repository its size, the
// deduplication of its backups and its locks. Reads records and listings only, never data. `pgkeep metrics`
// renders it as Prometheus metrics, `pgkeep check --max-*-age` judges it (docs/operations.md).

import type { BackupRecord } from './backup-record.js'
import { type DrillStatus, readDrillStatus } from './drill-status.js'
import type { LockState } from './lock.js'
import type { Repository } from './repository.js'
import { measureRepository, type RepositoryUsage } from './repository-usage.js'
import { summarizeRepository, type TimelineWal } from './summary.js'
import { type RecoverableWindow, recoverableWindow } from './wal-reach.js'

/** The newest backup of a cluster, as monitoring shows it. */
export interface LastBackupStatus {
  readonly id: string
  readonly type: 'full' | 'incremental'
  readonly startedAt: string
  readonly finishedAt: string
  readonly durationMs: number
  /** Logical size of the data directory and tablespaces. */
  readonly sizeBytes: number
  /** Plain bytes of the blobs this backup added to the repository (the rest it shares with earlier backups). */
  readonly storedBytes: number
}

/** One cluster of the repository. */
export interface ClusterStatus {
  /** System identifier (decimal). */
  readonly systemId: string
  readonly name: string
  readonly backups: number
  /** Logical size of all its backups together (what restoring each of them would write). */
  readonly logicalBytes: number
  /** Plain bytes its backups added to the repository, together. */
  readonly storedBytes: number
  readonly lastBackup: LastBackupStatus | null
  readonly wal: {
    /** When the newest WAL of the cluster was stored (ISO 8601, the storage's clock); null: none stored. */
    readonly newestStoredAt: string | null
    readonly segments: number
    /** Breaks in the stored WAL that recovery cannot cross, over all timelines. */
    readonly gaps: number
  }
  /** The points a restore can reach; null without a backup (or when it could not be worked out: `windowProblem`). */
  readonly window: RecoverableWindow | null
  readonly windowProblem: string | null
  readonly drills: DrillStatus
}

/** Everything `readRepositoryStatus` learns. */
export interface RepositoryStatus {
  readonly location: string
  readonly encrypted: boolean
  /** When the status was read (ISO 8601, this host's clock). */
  readonly readAt: string
  readonly clusters: readonly ClusterStatus[]
  /** Sizes as the storage lists them; null when not asked for (`usage: false`). */
  readonly usage: RepositoryUsage | null
  /** All backups' logical bytes over the plain bytes they stored: how much deduplication saves; null without backups. */
  readonly dedupRatio: number | null
  /** Locks by state (see `pgkeep unlock`). */
  readonly locks: Readonly<Record<LockState, number>>
}

/** Options of {@link readRepositoryStatus}. */
export interface RepositoryStatusOptions {
  signal?: AbortSignal
  /** List every object to measure the repository (default true; one request per 1000 objects on S3). */
  usage?: boolean
}

/** Reads the repository's state for monitoring: records and listings only. */
export async function readRepositoryStatus(repo: Repository, o: RepositoryStatusOptions = {}): Promise<RepositoryStatus> {
  const readAt = new Date().toISOString()
  const clusters: ClusterStatus[] = []
  for (const c of await summarizeRepository(repo, o)) {
    const wal = c.wal as TimelineWal[]
    let window: RecoverableWindow | null = null
    let windowProblem: string | null = null
    try {
      window = (await recoverableWindow(repo, c.backups, { signal: o.signal, summary: wal })) ?? null
    } catch (err) {
      o.signal?.throwIfAborted()
      windowProblem = (err as Error).message
    }
    const ranges = wal.flatMap((t) => t.ranges)
    const newest = ranges.reduce<string | null>((m, r) => (m === null || r.storedAt > m ? r.storedAt : m), null)
    clusters.push({
      systemId: c.systemId,
      name: c.name,
      backups: c.backups.length,
      logicalBytes: sum(c.backups, (b) => b.files.sizeBytes),
      storedBytes: sum(c.backups, (b) => b.storedBytes),
      lastBackup: lastBackupOf(c.backups),
      wal: { newestStoredAt: newest, segments: sum(ranges, (r) => r.segments), gaps: sum(wal, (t) => t.gaps.length) },
      window,
      windowProblem,
      drills: await readDrillStatus(repo, c.systemId, o),
    })
  }
  const locks: Record<LockState, number> = { live: 0, expired: 0, dead: 0, unreadable: 0 }
  for (const l of await repo.listLocks(o)) locks[l.state]++
  const logical = sum(clusters, (c) => c.logicalBytes)
  const stored = sum(clusters, (c) => c.storedBytes)
  return {
    location: repo.location,
    encrypted: repo.encrypted,
    readAt,
    clusters,
    usage: o.usage === false ? null : await measureRepository(repo, o),
    dedupRatio: stored > 0 ? logical / stored : null,
    locks,
  }
}

function lastBackupOf(backups: readonly BackupRecord[]): LastBackupStatus | null {
  const b = backups[backups.length - 1]
  if (!b) return null
  return {
    id: b.id,
    type: b.type,
    startedAt: b.startedAt,
    finishedAt: b.finishedAt,
    durationMs: b.durationMs,
    sizeBytes: b.files.sizeBytes,
    storedBytes: b.storedBytes,
  }
}

const sum = <T>(items: readonly T[], f: (t: T) => number) => items.reduce((s, t) => s + f(t), 0)
