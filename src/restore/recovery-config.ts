// The recovery configuration of a restored data directory: postgresql.auto.conf as the backup had it, with any
// recovery settings it carried commented out (a restored copy of a restored server must not inherit its old
// target), followed by pgkeep's own lines; and the signal file that makes the server recover.

import { formatRecoverySettings, type RecoveryTarget, type RecoveryTargetAction } from '../pg/recovery-conf.js'
import { UsageError } from '../errors.js'

/** How the restored server starts. */
export type RecoveryMode =
  /** recovery.signal: archive recovery through restore_command, to the target or to the end of the archive. */
  | 'recovery'
  /** standby.signal: a standby that follows its primary (primary_conninfo) and the archive. */
  | 'standby'
  /** No signal file and no settings: the server replays the WAL in pg_wal and opens on the backup's timeline. */
  | 'none'

/** What the restored server should do, as the library takes it. */
export interface RecoveryOptions {
  /** Default 'recovery'. */
  mode?: RecoveryMode
  /** Required unless mode is 'none': see walGetRestoreCommand(). */
  restoreCommand?: string
  target?: RecoveryTarget
  targetAction?: RecoveryTargetAction
  /** recovery_target_timeline: 'latest' (the server default), 'current' or a timeline id. */
  targetTimeline?: 'latest' | 'current' | number
  /** Stop just before the target instead of just after it (time, LSN and xid targets). */
  targetExclusive?: boolean
  /** Standby only. */
  primaryConninfo?: string
}

/** Settings a restore rewrites; earlier values of these in postgresql.auto.conf are commented out. */
export const RECOVERY_SETTING_NAMES: readonly string[] = [
  'restore_command',
  'recovery_end_command',
  'recovery_target',
  'recovery_target_name',
  'recovery_target_time',
  'recovery_target_xid',
  'recovery_target_lsn',
  'recovery_target_inclusive',
  'recovery_target_timeline',
  'recovery_target_action',
  'primary_conninfo',
  'primary_slot_name',
]

const SETTING_LINE = /^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:=|\s)/

/** The signal file of a mode, or null. */
export function signalFileOf(mode: RecoveryMode): 'recovery.signal' | 'standby.signal' | null {
  return mode === 'recovery' ? 'recovery.signal' : mode === 'standby' ? 'standby.signal' : null
}

/**
 * Validates the options and formats pgkeep's lines for postgresql.auto.conf (empty for mode 'none').
 * @throws UsageError on an invalid or inconsistent option
 */
export function formatRecoveryLines(o: RecoveryOptions): string {
  const mode = o.mode ?? 'recovery'
  if (mode === 'none') {
    if (o.target || o.targetAction || o.targetTimeline !== undefined || o.targetExclusive || o.primaryConninfo) {
      throw new UsageError('recovery settings were given but recovery is off', { hint: 'drop the target options, or restore with recovery' })
    }
    return ''
  }
  if (o.restoreCommand === undefined || o.restoreCommand.trim() === '') {
    throw new UsageError('a restore with recovery needs a restore_command', { hint: 'build one with walGetRestoreCommand()' })
  }
  if (mode === 'recovery' && o.primaryConninfo !== undefined) {
    throw new UsageError('a primary connection applies only to a standby', { hint: 'add --standby, or drop --primary-conninfo' })
  }
  if (o.targetExclusive && (o.target === undefined || !['time', 'lsn', 'xid'].includes(o.target.type))) {
    throw new UsageError('--target-exclusive applies only to a time, LSN or xid target')
  }
  return formatRecoverySettings({
    restoreCommand: o.restoreCommand,
    target: o.target,
    targetAction: o.targetAction,
    targetTimeline: o.targetTimeline,
    targetInclusive: o.targetExclusive ? false : undefined,
    primaryConninfo: o.primaryConninfo,
  })
}

/**
 * Comments out the recovery settings of an existing postgresql.auto.conf (each such line gets a `# ` prefix and
 * a note); every other line stays as it was. Returns the new text and the names commented out.
 */
export function commentOutRecoverySettings(text: string): { text: string; commented: string[] } {
  const commented: string[] = []
  const names = new Set(RECOVERY_SETTING_NAMES)
  const lines = text.split('\n').map((line) => {
    const m = SETTING_LINE.exec(line)
    if (!m || !names.has(m[1]!.toLowerCase())) return line
    commented.push(m[1]!.toLowerCase())
    return `# ${line}  # disabled by pgkeep restore`
  })
  return { text: lines.join('\n'), commented }
}

/**
 * The restored postgresql.auto.conf: the backup's content with its recovery settings commented out, then a
 * comment naming the backup and pgkeep's lines. With no lines of its own the content stays byte for byte.
 */
export function restoredAutoConf(original: string, lines: string, backupId: string): { text: string; commented: string[] } {
  if (lines === '') return { text: original, commented: [] }
  const { text, commented } = commentOutRecoverySettings(original)
  const sep = text === '' || text.endsWith('\n') ? '' : '\n'
  return { text: `${text}${sep}# recovery settings written by pgkeep restore of backup ${backupId}\n${lines}`, commented }
}
