// `pgkeep check --max-backup-age … --max-wal-age … --max-drill-age …`: whether a repository's backups, WAL and
// restore drills are recent enough, for cron, Nagios and Kubernetes probes. It judges the state monitoring reads
// (readRepositoryStatus, without measuring the store), one violation per late or missing thing.

import type { OperationOptions } from '../events.js'
import { formatLockAge as formatAge, type Repository, type RepositoryStatus, readRepositoryStatus, resolveCluster } from '../repo/index.js'

/** Stable codes of freshness violations; scripts may branch on them. */
export const FreshnessCodes = {
  NO_CLUSTER: 'NO_CLUSTER',
  NO_BACKUP: 'NO_BACKUP',
  BACKUP_STALE: 'BACKUP_STALE',
  NO_WAL: 'NO_WAL',
  WAL_STALE: 'WAL_STALE',
  NO_DRILL: 'NO_DRILL',
  DRILL_STALE: 'DRILL_STALE',
  DRILL_FAILED: 'DRILL_FAILED',
} as const

/** How old each thing may be; a limit left out is not checked. */
export interface FreshnessLimits {
  /** The newest backup must have finished at most this long ago. */
  maxBackupAgeMs?: number
  /** The newest WAL must have been stored at most this long ago. */
  maxWalAgeMs?: number
  /** The newest restore drill that passed must have finished at most this long ago, and the newest must have passed. */
  maxDrillAgeMs?: number
}

export interface FreshnessOptions extends OperationOptions, FreshnessLimits {
  repo: Repository
  /** One cluster by name or system identifier; default: every cluster of the repository. */
  cluster?: string
  /** "Now" in ms since the epoch (default: this host's clock). */
  now?: number
}

export interface FreshnessViolation {
  readonly code: keyof typeof FreshnessCodes
  /** The cluster (null when the repository holds none). */
  readonly systemId: string | null
  readonly clusterName: string | null
  /** One line for a person: what is late, by how much, and the limit. */
  readonly message: string
  /** How old the thing is (null when there is none). */
  readonly ageMs: number | null
  readonly limitMs: number
}

/** What was found for one cluster (ages in ms; null where there is nothing). */
export interface ClusterFreshness {
  readonly systemId: string
  readonly name: string
  readonly lastBackupAt: string | null
  readonly backupAgeMs: number | null
  readonly newestWalAt: string | null
  readonly walAgeMs: number | null
  readonly lastGoodDrillAt: string | null
  readonly drillAgeMs: number | null
  readonly lastDrillPassed: boolean | null
}

export interface FreshnessReport {
  /** True when nothing is late or missing. */
  readonly ok: boolean
  readonly repository: string
  readonly checkedAt: string
  readonly limits: FreshnessLimits
  readonly clusters: readonly ClusterFreshness[]
  readonly violations: readonly FreshnessViolation[]
}

/**
 * Judges the freshness of a repository's clusters (all of them, or the one `cluster` names) against the limits.
 * @throws UsageError when `cluster` names no cluster of the repository
 */
export async function checkFreshness(o: FreshnessOptions): Promise<FreshnessReport> {
  const selected = o.cluster === undefined ? undefined : (await resolveCluster(o.repo, o.cluster, { signal: o.signal })).systemId
  const status = await readRepositoryStatus(o.repo, { signal: o.signal, usage: false })
  return judgeFreshness(status, o, { systemId: selected, now: o.now })
}

/**
 * The judgement itself, on a repository state already read (readRepositoryStatus): one violation per late or
 * missing thing of each cluster (or only of the cluster `o.systemId`), for each limit given.
 */
export function judgeFreshness(status: RepositoryStatus, limitsGiven: FreshnessLimits, o: { systemId?: string; now?: number } = {}): FreshnessReport {
  const now = o.now ?? Date.now()
  const clusters = status.clusters.filter((c) => o.systemId === undefined || c.systemId === o.systemId)
  const violations: FreshnessViolation[] = []
  const limits: FreshnessLimits = { maxBackupAgeMs: limitsGiven.maxBackupAgeMs, maxWalAgeMs: limitsGiven.maxWalAgeMs, maxDrillAgeMs: limitsGiven.maxDrillAgeMs }
  const anyLimit = Object.values(limits).some((v) => v !== undefined)
  if (clusters.length === 0 && anyLimit) {
    violations.push({
      code: 'NO_CLUSTER',
      systemId: null,
      clusterName: null,
      message: `repository '${status.location}' holds no cluster: no backup and no WAL`,
      ageMs: null,
      limitMs: Math.min(...Object.values(limits).filter((v): v is number => v !== undefined)),
    })
  }
  const age = (iso: string | null | undefined) => (iso ? Math.max(0, now - Date.parse(iso)) : null)
  const out: ClusterFreshness[] = []
  for (const c of clusters) {
    const f: ClusterFreshness = {
      systemId: c.systemId,
      name: c.name,
      lastBackupAt: c.lastBackup?.finishedAt ?? null,
      backupAgeMs: age(c.lastBackup?.finishedAt),
      newestWalAt: c.wal.newestStoredAt,
      walAgeMs: age(c.wal.newestStoredAt),
      lastGoodDrillAt: c.drills.lastPassed?.finishedAt ?? null,
      drillAgeMs: age(c.drills.lastPassed?.finishedAt),
      lastDrillPassed: c.drills.last ? c.drills.last.passed : null,
    }
    out.push(f)
    const who = `cluster ${c.systemId}${c.name !== c.systemId ? ` (${c.name})` : ''}`
    const add = (code: FreshnessViolation['code'], ageMs: number | null, limitMs: number, text: string) =>
      violations.push({ code, systemId: c.systemId, clusterName: c.name, message: `${who}: ${text}`, ageMs, limitMs })
    const late = (what: string, at: string, ageMs: number, limitMs: number) =>
      `${what} ${formatAge(ageMs)} ago (${at}), more than the ${formatAge(limitMs)} allowed`
    if (limits.maxBackupAgeMs !== undefined) {
      const limit = limits.maxBackupAgeMs
      if (f.backupAgeMs === null) add('NO_BACKUP', null, limit, 'has no backup')
      else if (f.backupAgeMs > limit) add('BACKUP_STALE', f.backupAgeMs, limit, late('last backup finished', f.lastBackupAt!, f.backupAgeMs, limit))
    }
    if (limits.maxWalAgeMs !== undefined) {
      const limit = limits.maxWalAgeMs
      if (f.walAgeMs === null) add('NO_WAL', null, limit, 'has no WAL stored')
      else if (f.walAgeMs > limit) add('WAL_STALE', f.walAgeMs, limit, late('newest WAL was stored', f.newestWalAt!, f.walAgeMs, limit))
    }
    if (limits.maxDrillAgeMs !== undefined) {
      const limit = limits.maxDrillAgeMs
      const last = c.drills.last
      if (last && !last.passed) add('DRILL_FAILED', age(last.finishedAt), limit, `the last restore drill failed (${last.finishedAt})`)
      if (f.drillAgeMs === null) add('NO_DRILL', null, limit, 'has no restore drill that passed')
      else if (f.drillAgeMs > limit) add('DRILL_STALE', f.drillAgeMs, limit, late('last good restore drill finished', f.lastGoodDrillAt!, f.drillAgeMs, limit))
    }
  }
  return { ok: violations.length === 0, repository: status.location, checkedAt: new Date(now).toISOString(), limits, clusters: out, violations }
}
