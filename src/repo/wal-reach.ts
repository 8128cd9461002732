// How far the WAL stored in the repository takes recovery from a backup, and the window of points a restore can
// reach for a cluster. Restore checks a recovery target against it before writing anything (restore/target-reach.ts);
// `info`, `pgkeep metrics` and the freshness check show the window. The stored WAL is read the way `pgkeep info`
// shows it (summarizeClusterWal: ranges and gaps per timeline), along the timelines recovery follows.

import { UsageError } from '../errors.js'
import { formatLsn, type Lsn, parseLsn } from '../pg/lsn.js'
import { parseTimelineHistory, type TimelineRange, timelineRanges } from '../pg/timeline-history.js'
import type { BackupRecord } from './backup-record.js'
import type { Repository } from './repository.js'
import { summarizeClusterWal, type TimelineWal } from './summary.js'
import { historyKey, readWalContent, readWalRecord, type WalHistoryRecord } from './wal-catalog.js'

/** How far the stored WAL takes recovery from a backup. */
export interface ReachableWal {
  /** The backup's end: recovery cannot stop before it. */
  readonly from: Lsn
  /** Where the stored WAL stops without a break, following the timelines in `timelines`. */
  readonly to: Lsn
  /** The timeline `to` lies on. */
  readonly timeline: number
  /** The timelines recovery follows, oldest first. */
  readonly timelines: readonly number[]
  /** Where stored WAL resumes after a gap at `to` on the same timeline, if it does. */
  readonly resumesAt?: Lsn
  /** No WAL up to `to` was written by the server after this (ms; when its newest record was stored). */
  readonly storedBy: number
}

/** Which timeline recovery follows, as recovery_target_timeline says it (undefined: the server's default, latest). */
export type TargetTimeline = 'latest' | 'current' | number | undefined

const INFO_HINT = "'pgkeep info' lists the backups, the stored WAL and its gaps"

/**
 * How far the stored WAL takes recovery from the end of `backup`, along the timelines recovery_target_timeline
 * selects: 'current' the backup's own, a number that timeline's history, 'latest' (the server's default) the newest
 * timeline whose history files are stored in an unbroken sequence after the backup's, as the server probes them
 * (findNewestTimeLine). At a timeline switch recovery continues on the child, in the segment holding the switch.
 * @param o.wal the cluster's stored WAL when the caller has it already (summarizeClusterWal); read otherwise
 * @throws UsageError when the chosen timeline does not descend from the backup's timeline after the backup's end
 */
export async function reachableWal(
  repo: Repository,
  backup: BackupRecord,
  targetTimeline: TargetTimeline,
  o: { signal?: AbortSignal; wal?: readonly TimelineWal[] } = {},
): Promise<ReachableWal> {
  const summary = o.wal ?? (await summarizeClusterWal(repo, backup.systemId, backup.walSegmentSizeBytes, o))
  const end = parseLsn(backup.endLsn)
  let target = backup.timeline
  if (typeof targetTimeline === 'number') target = targetTimeline
  else if (targetTimeline !== 'current') {
    const histories = new Set(summary.filter((t) => t.historyStored).map((t) => t.timeline))
    while (histories.has(target + 1)) target++
  }
  const path = await timelinePath(repo, backup, target, end, o)
  let at = end
  let storedBy = Date.parse(backup.finishedAt)
  let onTimeline = backup.timeline
  let resumesAt: Lsn | undefined
  const used: number[] = []
  for (const step of path) {
    const spans = spansOf(summary, step.tli)
    used.push(step.tli)
    onTimeline = step.tli
    const span = spans.find((s) => s.start <= at && at <= s.end)
    if (!span) {
      resumesAt = spans.find((s) => s.start > at)?.start
      break
    }
    storedBy = Math.max(storedBy, span.storedAt)
    if (step.endLsn !== undefined && span.end >= step.endLsn) {
      at = step.endLsn
      continue
    }
    at = span.end
    resumesAt = spans.find((s) => s.start > at)?.start
    break
  }
  return { from: end, to: at, timeline: onTimeline, timelines: used, resumesAt, storedBy }
}

/** One end of a recoverable window: a WAL location and the time it stands for. */
export interface WindowPoint {
  /** WAL location ('0/3000028'). */
  readonly lsn: string
  readonly timeline: number
  /** ISO 8601. The earliest point: when its backup finished; the latest: when the newest WAL it needs was stored. */
  readonly time: string
  /** The backup a restore to this point starts from. */
  readonly backupId: string
}

/** The points a restore of one cluster can reach through the repository, from the oldest backup to the newest WAL. */
export interface RecoverableWindow {
  /** The end of the oldest backup: no restore stops earlier. */
  readonly earliest: WindowPoint
  /**
   * How far the stored WAL takes recovery from the newest backup along the latest timeline (the server's
   * default): restore refuses a later target time or LSN.
   */
  readonly latest: WindowPoint
}

/**
 * The recoverable window of a cluster: from the end of its oldest backup to where the stored WAL takes recovery
 * from its newest backup (reachableWal, timeline 'latest'). Undefined when the cluster has no backup.
 * @param backups the cluster's backups, oldest first (listBackups)
 * @param o.wal the cluster's stored WAL when the caller has it already
 */
export async function recoverableWindow(
  repo: Repository,
  backups: readonly BackupRecord[],
  o: { signal?: AbortSignal; wal?: readonly TimelineWal[] } = {},
): Promise<RecoverableWindow | undefined> {
  const oldest = backups[0]
  const newest = backups[backups.length - 1]
  if (!oldest || !newest) return undefined
  const reach = await reachableWal(repo, newest, 'latest', o)
  return {
    earliest: { lsn: oldest.endLsn, timeline: oldest.timeline, time: oldest.finishedAt, backupId: oldest.id },
    latest: { lsn: formatLsn(reach.to), timeline: reach.timeline, time: new Date(reach.storedBy).toISOString(), backupId: newest.id },
  }
}

/** The timelines recovery follows from the backup's timeline to `target`, each with the WAL range it covers. */
async function timelinePath(repo: Repository, backup: BackupRecord, target: number, end: Lsn, o: { signal?: AbortSignal }): Promise<TimelineRange[]> {
  if (target === backup.timeline) return [{ tli: target, beginLsn: 0n, endLsn: undefined }]
  const notChild = (why: string) =>
    new UsageError(`recovery target timeline ${target} ${why}`, {
      hint: `give --target-timeline current to stay on the backup's timeline ${backup.timeline}, or the number of a timeline that branched off it after the backup; ${INFO_HINT}`,
    })
  const rec = await readWalRecord<WalHistoryRecord>(repo, historyKey(backup.systemId, target), o)
  if (!rec) throw notChild(`has no history file in the repository, so recovery cannot follow it`)
  const ranges = timelineRanges(parseTimelineHistory(await readWalContent(repo, rec, o)), target)
  const from = ranges.findIndex((r) => r.tli === backup.timeline)
  if (from < 0) throw notChild(`does not descend from timeline ${backup.timeline} of backup ${backup.id}`)
  const branch = ranges[from]!.endLsn
  if (branch !== undefined && branch < end) {
    throw notChild(`branched off timeline ${backup.timeline} at ${formatLsn(branch)}, before the end of backup ${backup.id} (${backup.endLsn})`)
  }
  return ranges.slice(from)
}

interface Span {
  start: Lsn
  end: Lsn
  storedAt: number
}

function spansOf(summary: readonly TimelineWal[], tli: number): Span[] {
  const t = summary.find((s) => s.timeline === tli)
  return (t?.ranges ?? []).map((r) => ({ start: parseLsn(r.start), end: parseLsn(r.end), storedAt: Date.parse(r.storedAt) }))
}
