// Whether the WAL stored in the repository can take recovery from the chosen backup to its target, decided before
// restore writes anything: a target inside a WAL gap, beyond the stored WAL or before the backup's end would
// otherwise be found out only by the started server. The stored WAL is read the way `pgkeep info` shows it
// (repo/wal-reach.ts: ranges and gaps per timeline), along the timelines recovery follows. docs/restore.md says
// what can and cannot be known up front.

import { UsageError } from '../errors.js'
import { formatLsn, parseLsn } from '../pg/lsn.js'
import { parseRecoveryTargetTime } from '../pg/recovery-conf.js'
import { type BackupRecord, INFO_HINT, type ReachableWal, reachableWal, type Repository } from '../repo/index.js'
import type { RecoveryOptions } from './recovery-config.js'
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
