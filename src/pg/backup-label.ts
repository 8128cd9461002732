// `backup_label` (and the backup history file `<segment>.<offset>.backup` the server leaves in pg_wal): parse by
// key, format in PostgreSQL's fixed order (src/backend/backup/backup_label.c build_backup_content;
// recovery reads it with fixed patterns in xlogrecovery.c read_backup_label).

import { FormatError } from '../errors.js'
import { formatLsn, type Lsn, parseLsn } from './lsn.js'
import { isWalSegmentName, type TimelineId } from './wal-names.js'

/** The contents of a backup_label or backup history file. */
export interface BackupLabel {
  /** START WAL LOCATION: the redo pointer of the backup checkpoint, where replay starts. */
  startLsn: Lsn
  /** The segment file named after START WAL LOCATION (`file …`). */
  startWalFile: string
  /** Backup history file only: STOP WAL LOCATION and its file. */
  stopLsn?: Lsn
  stopWalFile?: string
  /** CHECKPOINT LOCATION. */
  checkpointLsn: Lsn
  /** BACKUP METHOD: `streamed` (BASE_BACKUP) or `pg_start_backup` (low-level API). */
  backupMethod?: string
  /** BACKUP FROM: `primary` (`master` on 13) or `standby`. */
  backupFrom?: string
  /** START TIME as the server wrote it (`2026-11-21 05:27:37 UTC`, in the server's log_timezone). */
  startTime?: string
  /** LABEL. */
  label?: string
  /** START TIMELINE. */
  startTimeline?: TimelineId
  /** 17+ incremental backups: INCREMENTAL FROM LSN / TLI, the prior backup's start. */
  incrementalFromLsn?: Lsn
  incrementalFromTli?: TimelineId
  /** Backup history file only: STOP TIME and STOP TIMELINE. */
  stopTime?: string
  stopTimeline?: TimelineId
  /** `KEY: value` lines this module does not know, kept in order so a newer server's file survives a round trip. */
  extraLines?: string[]
}

const LOCATION = /^([0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}) \(file ([0-9A-F]{24})\)$/

function location(key: string, value: string): { lsn: Lsn; file: string } {
  const m = LOCATION.exec(value)
  if (m === null) throw new FormatError(`invalid ${key} in backup_label: '${value}'`)
  return { lsn: parseLsn(m[1]!), file: m[2]! }
}

function timeline(key: string, value: string): TimelineId {
  if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > 0xffff_ffff) {
    throw new FormatError(`invalid ${key} in backup_label: '${value}'`)
  }
  return Number(value)
}

/**
 * Parses backup_label text by key, in any order (PostgreSQL itself requires its fixed order; being lenient costs
 * nothing here). Unknown keys are kept in `extraLines`.
 * @throws FormatError when START WAL LOCATION or CHECKPOINT LOCATION is missing, a key repeats, or a value is
 *   malformed
 */
export function parseBackupLabel(content: string | Uint8Array): BackupLabel {
  const text = typeof content === 'string' ? content : new TextDecoder().decode(content)
  const seen = new Set<string>()
  const out: Partial<BackupLabel> & { extraLines: string[] } = { extraLines: [] }
  for (const line of text.split('\n')) {
    if (line === '') continue
    const colon = line.indexOf(': ')
    if (colon < 0) throw new FormatError(`invalid line in backup_label: '${line}'`)
    const key = line.slice(0, colon)
    const value = line.slice(colon + 2)
    if (seen.has(key)) throw new FormatError(`duplicate '${key}' in backup_label`)
    seen.add(key)
    switch (key) {
      case 'START WAL LOCATION': {
        const l = location(key, value)
        out.startLsn = l.lsn
        out.startWalFile = l.file
        break
      }
      case 'STOP WAL LOCATION': {
        const l = location(key, value)
        out.stopLsn = l.lsn
        out.stopWalFile = l.file
        break
      }
      case 'CHECKPOINT LOCATION':
        out.checkpointLsn = parseLsn(value)
        break
      case 'BACKUP METHOD':
        out.backupMethod = value
        break
      case 'BACKUP FROM':
        out.backupFrom = value
        break
      case 'START TIME':
        out.startTime = value
        break
      case 'LABEL':
        out.label = value
        break
      case 'START TIMELINE':
        out.startTimeline = timeline(key, value)
        break
      case 'INCREMENTAL FROM LSN':
        out.incrementalFromLsn = parseLsn(value)
        break
      case 'INCREMENTAL FROM TLI':
        out.incrementalFromTli = timeline(key, value)
        break
      case 'STOP TIME':
        out.stopTime = value
        break
      case 'STOP TIMELINE':
        out.stopTimeline = timeline(key, value)
        break
      default:
        out.extraLines.push(line)
    }
  }
  if (out.startLsn === undefined || out.checkpointLsn === undefined) {
    throw new FormatError('backup_label lacks START WAL LOCATION or CHECKPOINT LOCATION', {
      hint: 'the file is not a backup_label',
    })
  }
  if ((out.incrementalFromLsn === undefined) !== (out.incrementalFromTli === undefined)) {
    throw new FormatError('backup_label has only one of INCREMENTAL FROM LSN and INCREMENTAL FROM TLI')
  }
  if (out.extraLines.length === 0) delete (out as Partial<BackupLabel>).extraLines
  return out as BackupLabel
}

/**
 * Formats a backup_label (or, when stop fields are set, a backup history file) in the server's order:
 * START WAL LOCATION, [STOP WAL LOCATION], CHECKPOINT LOCATION, BACKUP METHOD, BACKUP FROM, START TIME, LABEL,
 * START TIMELINE, [INCREMENTAL FROM LSN, INCREMENTAL FROM TLI], [STOP TIME, STOP TIMELINE], then `extraLines`.
 * Optional fields that are undefined are left out.
 * @throws FormatError when a value would break the line format
 */
export function formatBackupLabel(label: BackupLabel): string {
  const lines: string[] = []
  const add = (key: string, value: string | undefined): void => {
    if (value === undefined) return
    if (value.includes('\n')) throw new FormatError(`backup_label value of '${key}' contains a newline`)
    lines.push(`${key}: ${value}`)
  }
  const file = (f: string): string => {
    if (!isWalSegmentName(f)) throw new FormatError(`invalid WAL file name '${f}' for backup_label`)
    return f
  }
  add('START WAL LOCATION', `${formatLsn(label.startLsn)} (file ${file(label.startWalFile)})`)
  if (label.stopLsn !== undefined) {
    if (label.stopWalFile === undefined) throw new FormatError('backup history file needs the stop WAL file name')
    add('STOP WAL LOCATION', `${formatLsn(label.stopLsn)} (file ${file(label.stopWalFile)})`)
  }
  add('CHECKPOINT LOCATION', formatLsn(label.checkpointLsn))
  add('BACKUP METHOD', label.backupMethod)
  add('BACKUP FROM', label.backupFrom)
  add('START TIME', label.startTime)
  add('LABEL', label.label)
  add('START TIMELINE', label.startTimeline?.toString())
  if (label.incrementalFromLsn !== undefined) add('INCREMENTAL FROM LSN', formatLsn(label.incrementalFromLsn))
  add('INCREMENTAL FROM TLI', label.incrementalFromTli?.toString())
  add('STOP TIME', label.stopTime)
  add('STOP TIMELINE', label.stopTimeline?.toString())
  for (const extra of label.extraLines ?? []) {
    if (extra.includes('\n') || !extra.includes(': ')) throw new FormatError(`invalid backup_label line '${extra}'`)
    lines.push(extra)
  }
  return lines.map((l) => `${l}\n`).join('')
}

/**
 * Removes the `INCREMENTAL FROM LSN` and `INCREMENTAL FROM TLI` lines, as pg_combinebackup does for the output of
 * a combined backup (a data directory whose backup_label has them refuses to start). Every other byte is kept.
 */
export function stripIncrementalLines(text: string): string {
  return text.replace(/^INCREMENTAL FROM (?:LSN|TLI): [^\n]*\n?/gm, '')
}
