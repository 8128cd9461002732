// Whether the WAL stored in the repository can take recovery from the chosen backup to its target, decided before
// restore writes anything: a target inside a WAL gap, beyond the stored WAL or before the backup's end would
// otherwise be found out only by the started server. The stored WAL is read the way `pgkeep info` shows it
// (summarizeClusterWal: ranges and gaps per timeline), along the timelines recovery follows. docs/restore.md says
// what can and cannot be known up front.

import { UsageError } from '../errors.js'
import { formatLsn, type Lsn, parseLsn } from '../pg/lsn.js'
import { parseRecoveryTargetTime } from '../pg/recovery-conf.js'
import { parseTimelineHistory, timelineRanges, type TimelineRange } from '../pg/timeline-history.js'
import type { BackupRecord } from '../repo/index.js'
import type { Repository } from '../repo/index.js'
import { summarizeClusterWal, type TimelineWal } from '../repo/index.js'
import { historyKey, readWalContent, readWalRecord, type WalHistoryRecord } from '../repo/index.js'
import type { RecoveryOptions } from './recovery-config.js'

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

const INFO_HINT = "'pgkeep info' lists the backups, the stored WAL and its gaps"
/** Object stores keep modification times in whole seconds (S3's LastModified): a stored time may be this much early. */
const STORED_AT_GRANULARITY_MS = 1000

/**
 * Refuses a recovery target the stored WAL cannot reach from `backup`, before anything is written:
 * - an LSN before the backup's end, or after where the stored WAL stops (a gap, or its end);
 * - a time before the backup finished, or after the newest stored WAL was stored (no commit in it is later);
 * - an xid or a restore point name when no WAL after the backup's end is stored.
 * Only a restore with recovery through the repository ('recovery' mode) is checked against the stored WAL; a
 * standby may receive later WAL from its primary, so only "before the backup's end" applies to it. No target and
 * `immediate` need nothing beyond the backup's own WAL.
 * @throws UsageError naming the target and the reachable range
 */
export async function checkTargetReachable(repo: Repository, backup: BackupRecord, recovery: RecoveryOptions, o: { signal?: AbortSignal } = {}): Promise<void> {
  const target = recovery.target
  if (target === undefined || target.type === 'immediate') return
  const mode = recovery.mode ?? 'recovery'
  if (mode === 'none') return
  const end = parseLsn(backup.endLsn)
  const finished = Date.parse(backup.finishedAt)
  const earlier = `choose a target after it, or an earlier backup with --backup (without --backup the newest backup before the target is taken; ${INFO_HINT})`

  if (target.type === 'lsn') {
    const lsn = typeof target.lsn === 'bigint' ? target.lsn : parseLsn(target.lsn)
    if (lsn < end) {
      throw new UsageError(
        `recovery target LSN ${formatLsn(lsn)} is before the end of backup ${backup.id} (${backup.endLsn}): recovery cannot stop before the backup is consistent`,
        { hint: earlier },
      )
    }
    if (mode !== 'recovery') return
    const reach = await reachableWal(repo, backup, recovery.targetTimeline, o)
    if (lsn > reach.to) throw beyond(`recovery target LSN ${formatLsn(lsn)}`, backup, reach)
  } else if (target.type === 'time') {
    const when = parseRecoveryTargetTime(target.time)
    if (when.ms < finished) {
      throw new UsageError(
        `recovery target time ${when.text} is before backup ${backup.id} finished (${backup.finishedAt}): recovery cannot stop before the backup is consistent`,
        { hint: earlier },
      )
    }
    if (mode !== 'recovery') return
    const reach = await reachableWal(repo, backup, recovery.targetTimeline, o)
    if (when.ms > reach.storedBy + STORED_AT_GRANULARITY_MS) {
      throw beyond(
        `recovery target time ${when.text}`,
        backup,
        reach,
        `the newest of that WAL was stored at ${new Date(reach.storedBy).toISOString()}, so none of it is later than that`,
      )
    }
  } else {
    if (mode !== 'recovery') return
    const reach = await reachableWal(repo, backup, recovery.targetTimeline, o)
    if (reach.to <= end) {
      const what = target.type === 'xid' ? `recovery target transaction ${String(target.xid)}` : `restore point '${target.name}'`
      throw beyond(what, backup, reach, 'no WAL after the end of the backup is stored, so the target cannot lie in it')
    }
  }
}

function beyond(what: string, backup: BackupRecord, reach: ReachableWal, why?: string): UsageError {
  const range = `${formatLsn(reach.from)}..${formatLsn(reach.to)} (timeline ${reach.timelines.join(' → ')})`
  const gap = reach.resumesAt === undefined ? '' : `; a gap follows on timeline ${reach.timeline}, up to ${formatLsn(reach.resumesAt)}`
  return new UsageError(`${what} cannot be reached from backup ${backup.id}: the repository's WAL takes recovery from ${range}${gap}${why ? `; ${why}` : ''}`, {
    hint:
      reach.resumesAt === undefined
        ? `choose a target in that range. If the server is still running, its newest WAL may not be stored yet: wait until it is (select pg_switch_wal() on the server completes the current segment), then restore again; ${INFO_HINT}`
        : `choose a target in that range, or a backup taken after the gap with --backup; ${INFO_HINT}`,
  })
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
  targetTimeline: RecoveryOptions['targetTimeline'],
  o: { signal?: AbortSignal } = {},
): Promise<ReachableWal> {
  const summary = await summarizeClusterWal(repo, backup.systemId, backup.walSegmentSizeBytes, o)
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
