// A retention plan for one cluster: a snapshot of its backup records and WAL catalog keys, taken once, and what the
// policy decides for each (retention.ts). expire removes exactly what a plan marks, and nothing that appeared after
// its snapshot: a backup finishing or WAL arriving meanwhile is not in it, so it cannot be removed.

import { parseTimelineHistory } from '../pg/timeline-history.js'
import { type BackupRecord, listBackups } from './backup-record.js'
import type { RepoCluster } from './clusters.js'
import type { Repository } from './repository.js'
import { type BackupDecision, decideBackups, decideWal, type WalRetention } from './retention.js'
import type { RetentionPolicy } from './retention-policy.js'
import { listWalKeys, parseWalKey, readWalContent, readWalRecord, type WalHistoryRecord } from './wal-catalog.js'

/** One backup of a plan: its record and what the policy does with it. */
export interface PlannedBackup {
  readonly record: BackupRecord
  readonly decision: BackupDecision
}

export interface RetentionPlan {
  readonly cluster: RepoCluster
  readonly policy: RetentionPolicy
  /** When the snapshot was taken (ms since the epoch); keep-wal-within counts back from here. */
  readonly takenAt: number
  /** Newest first. */
  readonly backups: readonly PlannedBackup[]
  readonly wal: WalRetention
}

/**
 * Takes a snapshot of a cluster's backup records and WAL catalog keys and applies `policy`. Reads records only (a
 * history file's content too, for timeline ancestry). A history file that cannot be read keeps every history file.
 */
export async function planRetention(
  repo: Repository,
  cluster: RepoCluster,
  policy: RetentionPolicy,
  o: { signal?: AbortSignal; now?: number } = {},
): Promise<RetentionPlan> {
  const takenAt = o.now ?? Date.now()
  const records = await listBackups(repo, cluster.systemId, o)
  const keys = await listWalKeys(repo, cluster.systemId, '', o)
  const ancestors = new Map<number, readonly number[] | undefined>()
  for (const key of keys) {
    const k = parseWalKey(key)
    if (k?.kind !== 'history') continue
    ancestors.set(k.tli, await historyAncestors(repo, key, o))
  }
  const decisions = decideBackups(records, policy)
  const byId = new Map(records.map((r) => [r.id, r]))
  const wal = decideWal({ backups: records, decisions, keys, ancestors, keepWalWithin: policy.keepWalWithin, now: takenAt })
  return { cluster, policy, takenAt, backups: decisions.map((decision) => ({ record: byId.get(decision.id)!, decision })), wal }
}

/** The timelines a history file lists as ancestors; undefined when it cannot be read or parsed. */
async function historyAncestors(repo: Repository, key: string, o: { signal?: AbortSignal }): Promise<readonly number[] | undefined> {
  try {
    const rec = await readWalRecord<WalHistoryRecord>(repo, key, o)
    if (!rec) return []
    return parseTimelineHistory(await readWalContent(repo, rec, o)).map((e) => e.parentTli)
  } catch (err) {
    if (o.signal?.aborted) throw err
    return undefined
  }
}
