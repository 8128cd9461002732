// Names of the files in pg_wal and in a WAL archive: segments, partial segments, timeline history files and
// backup history files (PostgreSQL src/include/access/xlog_internal.h: XLogFileName, TLHistoryFileName,
// BackupHistoryFileName, IsXLogFileName, IsPartialXLogFileName).

import { FormatError } from '../errors.js'
import { assertWalSegmentSize, type Lsn, segmentNumber } from './lsn.js'

/** A timeline id (TimeLineID, u32; decimal in result sets, 8 upper-case hex digits in file names). */
export type TimelineId = number

/** What a WAL directory entry is, with the numbers its name carries. */
export type WalFileName =
  /** `000000010000000000000003`: a complete segment. */
  | { kind: 'segment'; tli: TimelineId; segno: bigint }
  /** `000000010000000000000003.partial`: the unfinished last segment of a timeline or of a stream. */
  | { kind: 'partial'; tli: TimelineId; segno: bigint }
  /** `00000002.history`: the timeline history file of timeline `tli`. */
  | { kind: 'history'; tli: TimelineId }
  /** `000000010000000000000003.00000028.backup`: a backup history file; `offset` is the start LSN in the segment. */
  | { kind: 'backup'; tli: TimelineId; segno: bigint; offsetBytes: number }

const HEX8 = '[0-9A-F]{8}'
const SEGMENT = new RegExp(`^(${HEX8})(${HEX8})(${HEX8})$`)
const PARTIAL = new RegExp(`^(${HEX8})(${HEX8})(${HEX8})\\.partial$`)
const HISTORY = new RegExp(`^(${HEX8})\\.history$`)
const BACKUP = new RegExp(`^(${HEX8})(${HEX8})(${HEX8})\\.(${HEX8})\\.backup$`)

const hex8 = (n: number | bigint): string => n.toString(16).toUpperCase().padStart(8, '0')

function assertTimeline(tli: TimelineId): void {
  if (!Number.isInteger(tli) || tli < 1 || tli > 0xffff_ffff) throw new FormatError(`invalid timeline id ${tli}`)
}

/** Segments per "xlogid" (the middle 8 hex digits of a name): 2^32 / segSize, 256 for 16 MB segments. */
export function segmentsPerXlogId(segSizeBytes: number): bigint {
  assertWalSegmentSize(segSizeBytes)
  return 0x1_0000_0000n / BigInt(segSizeBytes)
}

/**
 * The file name of segment `segno` on timeline `tli` (XLogFileName: `%08X%08X%08X` of tli, segno / segsPerId,
 * segno % segsPerId). `walFileName(1, 3n, 16 << 20)` is `000000010000000000000003`.
 */
export function walFileName(tli: TimelineId, segno: bigint, segSizeBytes: number): string {
  assertTimeline(tli)
  const perId = segmentsPerXlogId(segSizeBytes)
  if (segno < 0n || segno / perId > 0xffff_ffffn) throw new FormatError(`segment number out of range: ${segno}`)
  return `${hex8(tli)}${hex8(segno / perId)}${hex8(segno % perId)}`
}

/** The name of the segment that holds `lsn` on timeline `tli`. */
export function walFileNameOfLsn(tli: TimelineId, lsn: Lsn, segSizeBytes: number): string {
  return walFileName(tli, segmentNumber(lsn, segSizeBytes), segSizeBytes)
}

/** The timeline history file name of `tli` (TLHistoryFileName, `%08X.history`). */
export function historyFileName(tli: TimelineId): string {
  assertTimeline(tli)
  return `${hex8(tli)}.history`
}

/**
 * The backup history file name written to pg_wal at the end of a backup (BackupHistoryFileName):
 * `<segment of start>.<offset of start in that segment, %08X>.backup`.
 */
export function backupHistoryFileName(tli: TimelineId, startLsn: Lsn, segSizeBytes: number): string {
  const segment = walFileNameOfLsn(tli, startLsn, segSizeBytes) // validates the segment size first
  return `${segment}.${hex8(startLsn % BigInt(segSizeBytes))}.backup`
}

/** True for a complete segment name: exactly 24 upper-case hex digits (IsXLogFileName). */
export function isWalSegmentName(name: string): boolean {
  return SEGMENT.test(name)
}

/** True for `<segment>.partial` (IsPartialXLogFileName). */
export function isPartialWalName(name: string): boolean {
  return PARTIAL.test(name)
}

/** True for `%08X.history` (IsTLHistoryFileName). */
export function isHistoryFileName(name: string): boolean {
  return HISTORY.test(name)
}

/** True for `<segment>.%08X.backup` (IsBackupHistoryFileName). */
export function isBackupHistoryFileName(name: string): boolean {
  return BACKUP.test(name)
}

/** True for the names `wal get` serves: a segment, a partial segment, a timeline history or backup history file. */
export function isFetchableWalName(name: string): boolean {
  return isWalSegmentName(name) || isPartialWalName(name) || isHistoryFileName(name) || isBackupHistoryFileName(name)
}

function segnoOf(name: string, hi: string, lo: string, segSizeBytes: number): bigint {
  const perId = segmentsPerXlogId(segSizeBytes)
  const low = BigInt(`0x${lo}`)
  // XLogFromFileName does not check this; a low part beyond segsPerId means the name was made for a smaller
  // segment size, and computing a segno from it would silently alias another segment.
  if (low >= perId) {
    throw new FormatError(`WAL file name '${name}' does not fit a segment size of ${segSizeBytes} bytes`, {
      hint: 'check the server wal_segment_size',
    })
  }
  return BigInt(`0x${hi}`) * perId + low
}

function timelineOf(name: string, hex: string): TimelineId {
  const tli = Number.parseInt(hex, 16)
  if (tli === 0) throw new FormatError(`WAL file name '${name}' has timeline 0`)
  return tli
}

/**
 * Classifies and decodes a pg_wal file name. Only upper-case hex is accepted, as PostgreSQL does.
 * @param segSizeBytes the cluster's WAL segment size; needed to turn a name into a segment number
 * @throws FormatError for any other name, or a name that does not fit the segment size
 */
export function parseWalFileName(name: string, segSizeBytes: number): WalFileName {
  let m = SEGMENT.exec(name)
  if (m !== null) return { kind: 'segment', tli: timelineOf(name, m[1]!), segno: segnoOf(name, m[2]!, m[3]!, segSizeBytes) }
  m = PARTIAL.exec(name)
  if (m !== null) return { kind: 'partial', tli: timelineOf(name, m[1]!), segno: segnoOf(name, m[2]!, m[3]!, segSizeBytes) }
  m = HISTORY.exec(name)
  if (m !== null) return { kind: 'history', tli: timelineOf(name, m[1]!) }
  m = BACKUP.exec(name)
  if (m !== null) {
    const offsetBytes = Number.parseInt(m[4]!, 16)
    if (offsetBytes >= segSizeBytes) throw new FormatError(`backup history file name '${name}' has an offset beyond the segment`)
    return { kind: 'backup', tli: timelineOf(name, m[1]!), segno: segnoOf(name, m[2]!, m[3]!, segSizeBytes), offsetBytes }
  }
  throw new FormatError(`not a WAL file name: '${name}'`, {
    hint: "expected a segment ('000000010000000000000003'), '<segment>.partial', '%08X.history' or a backup history file",
  })
}
