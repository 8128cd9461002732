// How far the WAL stored in a repository takes recovery from a backup, along the timelines recovery follows, and
// the window of points in time a cluster can be restored to. Restore checks a recovery target against it before it
// writes anything (restore/target-reach.ts); `info` shows the window. The stored WAL is read as summary.ts
// summarizes it: ranges and gaps per timeline.

import { UsageError } from '../errors.js'
import { formatLsn, type Lsn, parseLsn } from '../pg/lsn.js'
import { parseTimelineHistory, type TimelineRange, timelineRanges } from '../pg/timeline-history.js'
import type { BackupRecord } from './backup-record.js'
import type { Repository } from './repository.js'
import { summarizeClusterWal, type TimelineWal } from './summary.js'
import { historyKey, readWalContent, readWalRecord, type WalHistoryRecord } from './wal-catalog.js'

/** recovery_target_timeline: 'latest' (the server's default), 'current' (the backup's), or a timeline id. */
export type TargetTimeline = 'latest' | 'current' | number

/** Where `pgkeep info` points people who are refused a target. */
export const INFO_HINT = "'pgkeep info' lists the backups, the stored WAL and its gaps"

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

/**
 * How far the stored WAL takes recovery from the end of `backup`, along the timelines recovery_target_timeline
 * selects: 'current' the backup's own, a number that timeline's history, 'latest' (the server's default) the newest
 * timeline whose history files are stored in an unbroken sequence after the backup's, as the server probes them
 * (findNewestTimeLine). At a timeline switch recovery continues on the child, in the segment holding the switch.
 * @throws UsageError when the chosen timeline does not descend from the backup's timeline after the backup's end
 */
export async function reachableWal(
  repo: Repository,
  backup: BackupRecord,
  targetTimeline: TargetTimeline | undefined,
  o: { signal?: AbortSignal; summary?: readonly TimelineWal[] } = {},
): Promise<ReachableWal> {
  const summary = o.summary ?? (await summarizeClusterWal(repo, backup.systemId, backup.walSegmentSizeBytes, o))
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

/** The points in time a cluster can be restored to, from its backups and the WAL stored after them. */
export interface RecoverableWindow {
  /** The earliest point: the end of the oldest backup (recovery cannot stop before a backup is consistent). */
  readonly from: { readonly lsn: string; readonly time: string; readonly backupId: string }
  /**
   * The latest point: where the WAL stored after the newest backup stops without a break (following timeline
   * 'latest'), and when the newest of that WAL was stored: no commit in it is later.
   */
  readonly to: { readonly lsn: string; readonly timeline: number; readonly storedBy: string; readonly backupId: string }
  /**
   * Stretches between `from` and `to` that restore cannot reach: WAL after one backup stops (a gap) before the next
   * backup's end. Empty when every point in between is reachable.
   */
  readonly holes: readonly { readonly from: string; readonly to: string }[]
}

/**
 * The recoverable window of a cluster: from each backup, recovery reaches from its end to where its WAL stops
 * (reachableWal, timeline 'latest'; 'current' if that timeline does not descend from the backup); the union of
 * those stretches, from the oldest backup's end to the newest backup's reach, and the holes in it. Undefined for a
 * cluster without backups. Reads the WAL catalog's keys once (and history files).
 * @param backups the cluster's backups (any order; all of one cluster)
 */
export async function recoverableWindow(
  repo: Repository,
  backups: readonly BackupRecord[],
  o: { signal?: AbortSignal; summary?: readonly TimelineWal[] } = {},
): Promise<RecoverableWindow | undefined> {
  if (backups.length === 0) return undefined
  const byEnd = [...backups].sort((a, b) => {
    const d = parseLsn(a.endLsn) - parseLsn(b.endLsn)
    return d < 0n ? -1 : d > 0n ? 1 : a.id < b.id ? -1 : 1
  })
  const summary = o.summary ?? (await summarizeClusterWal(repo, byEnd[0]!.systemId, byEnd[0]!.walSegmentSizeBytes, o))
  const reach = async (b: BackupRecord): Promise<ReachableWal> => {
    try {
      return await reachableWal(repo, b, 'latest', { ...o, summary })
    } catch (err) {
      if (!(err instanceof UsageError)) throw err
      return reachableWal(repo, b, 'current', { ...o, summary })
    }
  }
  const holes: { from: string; to: string }[] = []
  let furthest: { r: ReachableWal; b: BackupRecord } | undefined
  for (const b of byEnd) {
    const r = await reach(b)
    if (furthest && r.from > furthest.r.to) holes.push({ from: formatLsn(furthest.r.to), to: formatLsn(r.from) })
    if (!furthest || r.to >= furthest.r.to) furthest = { r, b }
  }
  const oldest = byEnd[0]!
  return {
    from: { lsn: oldest.endLsn, time: oldest.finishedAt, backupId: oldest.id },
    to: { lsn: formatLsn(furthest!.r.to), timeline: furthest!.r.timeline, storedBy: new Date(furthest!.r.storedBy).toISOString(), backupId: furthest!.b.id },
    holes,
  }
}
