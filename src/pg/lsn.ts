// Log sequence numbers (LSNs): text form, arithmetic on WAL segments, and PostgreSQL's size settings ('16MB').
// An LSN is a byte position in the WAL stream, a u64 carried as a bigint.

// protocol/lsn.js itself, not protocol/index.js, which loads the whole protocol layer (see test/unit/layering.test.ts).
import { formatLsn as formatLsnText, type Lsn, tryParseLsn } from '../../protocol/lsn.js'
import { FormatError } from '../errors.js'

/**
 * A WAL position (XLogRecPtr, a u64): the protocol's own type, one for the whole program. A plain bigint alias,
 * deliberately not branded, so that literals such as `0x3000028n` and arithmetic need no casts.
 */
export type { Lsn }

/** InvalidXLogRecPtr: PostgreSQL's "no position" (prints as `0/0`). */
export const INVALID_LSN: Lsn = 0n

/** The largest LSN, `FFFFFFFF/FFFFFFFF`. */
export const MAX_LSN: Lsn = 0xffff_ffff_ffff_ffffn

/** Smallest and largest WAL segment size PostgreSQL accepts (`initdb --wal-segsize`, 1 MB to 1 GB). */
export const MIN_WAL_SEGMENT_SIZE_BYTES = 1 << 20
export const MAX_WAL_SEGMENT_SIZE_BYTES = 1 << 30

/**
 * Parses the `HI/LO` text form (`16/B374D848`, `0/3000028`, or the zero-padded `0/03000028` of PostgreSQL 19):
 * 1–8 hex digits on each side, either case. The text form itself is parsed by protocol/lsn.ts.
 * @throws FormatError when the text is not an LSN
 */
export function parseLsn(text: string): Lsn {
  const lsn = tryParseLsn(text)
  if (lsn === undefined) {
    throw new FormatError(`invalid LSN '${text}'`, { hint: "an LSN is two hex numbers of 1 to 8 digits, like '0/3000028'" })
  }
  return lsn
}

export { tryParseLsn }

/**
 * Formats an LSN the way PostgreSQL 13–18 print it (`%X/%X`): upper-case hex, no padding, e.g. `0/3000028`.
 * PostgreSQL 19 pads the low half (`0/03000028`); both forms parse to the same value everywhere.
 * @throws FormatError when the value is outside the u64 range
 */
export function formatLsn(lsn: Lsn): string {
  assertLsnRange(lsn)
  return formatLsnText(lsn)
}

/** True when `value` is a bigint within the u64 range of an LSN. */
export function isLsn(value: unknown): value is Lsn {
  return typeof value === 'bigint' && value >= 0n && value <= MAX_LSN
}

function assertLsnRange(lsn: Lsn): void {
  if (!isLsn(lsn)) throw new FormatError(`LSN out of range: '${String(lsn)}'`)
}

/**
 * Checks that a WAL segment size is one PostgreSQL allows: a power of two from 1 MB to 1 GB.
 * @throws FormatError otherwise
 */
export function assertWalSegmentSize(segSizeBytes: number): void {
  if (
    !Number.isInteger(segSizeBytes) ||
    segSizeBytes < MIN_WAL_SEGMENT_SIZE_BYTES ||
    segSizeBytes > MAX_WAL_SEGMENT_SIZE_BYTES ||
    (segSizeBytes & (segSizeBytes - 1)) !== 0
  ) {
    throw new FormatError(`invalid WAL segment size ${segSizeBytes} bytes`, {
      hint: 'the WAL segment size is a power of two between 1 MB and 1 GB (SHOW wal_segment_size)',
    })
  }
}

/** The segment number holding `lsn` (XLByteToSeg): `floor(lsn / segSize)`. */
export function segmentNumber(lsn: Lsn, segSizeBytes: number): bigint {
  assertLsnRange(lsn)
  assertWalSegmentSize(segSizeBytes)
  return lsn / BigInt(segSizeBytes)
}

/** The LSN where the segment holding `lsn` begins (`lsn` rounded down to a segment boundary). */
export function segmentStart(lsn: Lsn, segSizeBytes: number): Lsn {
  return segmentNumber(lsn, segSizeBytes) * BigInt(segSizeBytes)
}

/** The byte offset of `lsn` inside its segment file (XLogSegmentOffset). */
export function segmentOffset(lsn: Lsn, segSizeBytes: number): number {
  assertLsnRange(lsn)
  assertWalSegmentSize(segSizeBytes)
  return Number(lsn % BigInt(segSizeBytes))
}

/** The LSN of the first byte of segment `segno` (XLogSegNoOffsetToRecPtr with offset 0). */
export function segmentStartLsn(segno: bigint, segSizeBytes: number): Lsn {
  assertWalSegmentSize(segSizeBytes)
  const lsn = segno * BigInt(segSizeBytes)
  assertLsnRange(lsn)
  return lsn
}

// Memory units of GUC values, as PostgreSQL prints them (guc.c memory_unit_conversion_table). Unit names are
// case-sensitive in PostgreSQL too.
const SIZE_UNITS: Readonly<Record<string, number>> = { B: 1, kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 }

/**
 * Parses a size as PostgreSQL shows it (`SHOW wal_segment_size` → `16MB`): an unsigned integer followed by
 * `B`, `kB`, `MB`, `GB` or `TB` (case-sensitive, as in PostgreSQL). Returns bytes.
 * @throws FormatError for anything else
 */
export function parseSizeSetting(text: string): number {
  const m = /^\s*(\d+)\s*(B|kB|MB|GB|TB)\s*$/.exec(text)
  const factor = m === null ? undefined : SIZE_UNITS[m[2]!]
  if (m === null || factor === undefined) {
    throw new FormatError(`invalid size setting '${text}'`, { hint: "expected a number with a unit, like '16MB'" })
  }
  const bytes = Number(m[1]) * factor
  if (!Number.isSafeInteger(bytes)) throw new FormatError(`size setting '${text}' is too large`)
  return bytes
}
