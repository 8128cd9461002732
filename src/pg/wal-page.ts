// WAL page headers (XLogPageHeaderData / XLogLongPageHeaderData, PostgreSQL src/include/access/xlog_internal.h)
// and the checks a client can make on the first page of a streamed or archived segment.

import { FormatError } from '../errors.js'
import type { Lsn } from './lsn.js'
import type { TimelineId } from './wal-names.js'

/**
 * XLOG_PAGE_MAGIC of each major release (xlog_internal.h). 14–18 were confirmed on real segments written by
 * 14.23, 15.18, 16.14, 17.10 and 18.4, and 19 on segments of 19rc1 (test/fixtures/pg); 17–19 also match the
 * xlog_internal.h of Debian's server-dev packages of 17.12, 18.6 and 19~rc1. 13 comes from the source only.
 * 19's value changed during its beta (19beta3 changed the WAL format), so only the released value is listed.
 */
export const XLOG_PAGE_MAGIC: Readonly<Record<number, number>> = Object.freeze({
  13: 0xd106,
  14: 0xd10d,
  15: 0xd110,
  16: 0xd113,
  17: 0xd116,
  18: 0xd118,
  19: 0xd122,
})

/** The major release whose XLOG_PAGE_MAGIC is `magic`, or undefined. */
export function majorOfWalPageMagic(magic: number): number | undefined {
  for (const [major, m] of Object.entries(XLOG_PAGE_MAGIC)) if (m === magic) return Number(major)
  return undefined
}

/** xlp_info flags common to every major. */
export const XLP_FIRST_IS_CONTRECORD = 0x1
export const XLP_LONG_HEADER = 0x2

/**
 * The xlp_info flags a server of `major` may set (XLP_ALL_FLAGS of its xlog_internal.h). Up to 18, 0x4 is
 * XLP_BKP_REMOVABLE and 0x8 XLP_FIRST_IS_OVERWRITE_CONTRECORD (0x7 in 13.0/14.0; 0x8 was back-patched into later
 * minors), so 0xF. PostgreSQL 19 dropped XLP_BKP_REMOVABLE and moved XLP_FIRST_IS_OVERWRITE_CONTRECORD to 0x4, so
 * 0x7: a 0x8 bit in 19 WAL is invalid.
 */
export function xlpAllFlags(major: number): number {
  return major >= 19 ? 0x7 : 0xf
}

/** Sizes of the two page headers (SizeOfXLogShortPHD after MAXALIGN, SizeOfXLogLongPHD). */
export const WAL_SHORT_PAGE_HEADER_BYTES = 24
export const WAL_LONG_PAGE_HEADER_BYTES = 40

/** The default XLOG_BLCKSZ. */
export const WAL_BLOCK_SIZE_BYTES = 8192

/** A WAL page header (short form). */
export interface WalPageHeader {
  /** xlp_magic: identifies the WAL format version (see {@link XLOG_PAGE_MAGIC}). */
  magic: number
  /** xlp_info flags (XLP_*). */
  info: number
  /** xlp_tli: timeline of the first record on the page. */
  tli: TimelineId
  /** xlp_pageaddr: LSN of the first byte of this page. */
  pageAddr: Lsn
  /** xlp_rem_len: bytes of a record continued from the previous page. */
  remLenBytes: number
}

/** The long header on the first page of every segment. */
export interface WalLongPageHeader extends WalPageHeader {
  /** xlp_sysid: the cluster's system identifier. */
  systemId: bigint
  /** xlp_seg_size. */
  segSizeBytes: number
  /** xlp_xlog_blcksz. */
  blockSizeBytes: number
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

/**
 * Decodes the short header present on every WAL page. WAL is little-endian on every platform pgkeep supports.
 *
 * ```
 * off size field
 *   0    2 xlp_magic
 *   2    2 xlp_info
 *   4    4 xlp_tli
 *   8    8 xlp_pageaddr
 *  16    4 xlp_rem_len
 *  20    4 (padding to MAXALIGN)
 * ```
 * @throws FormatError when fewer than 24 bytes are given
 */
export function decodeWalPageHeader(bytes: Uint8Array): WalPageHeader {
  if (bytes.byteLength < WAL_SHORT_PAGE_HEADER_BYTES) {
    throw new FormatError(`WAL page header needs ${WAL_SHORT_PAGE_HEADER_BYTES} bytes, got ${bytes.byteLength}`)
  }
  const v = view(bytes)
  return {
    magic: v.getUint16(0, true),
    info: v.getUint16(2, true),
    tli: v.getUint32(4, true),
    pageAddr: v.getBigUint64(8, true),
    remLenBytes: v.getUint32(16, true),
  }
}

/**
 * Decodes the long header of a segment's first page: the short header, then
 * ```
 *  24    8 xlp_sysid
 *  32    4 xlp_seg_size
 *  36    4 xlp_xlog_blcksz
 * ```
 * It does not check the XLP_LONG_HEADER flag; {@link checkSegmentHeader} does.
 * @throws FormatError when fewer than 40 bytes are given
 */
export function decodeWalLongPageHeader(bytes: Uint8Array): WalLongPageHeader {
  if (bytes.byteLength < WAL_LONG_PAGE_HEADER_BYTES) {
    throw new FormatError(`WAL long page header needs ${WAL_LONG_PAGE_HEADER_BYTES} bytes, got ${bytes.byteLength}`)
  }
  const v = view(bytes)
  return {
    ...decodeWalPageHeader(bytes),
    systemId: v.getBigUint64(24, true),
    segSizeBytes: v.getUint32(32, true),
    blockSizeBytes: v.getUint32(36, true),
  }
}

/** What the first page of a segment must match. */
export interface SegmentExpectation {
  /** The segment number the file is named for. */
  segno: bigint
  /** The cluster's wal_segment_size. */
  segSizeBytes: number
  /** IDENTIFY_SYSTEM systemid (or pg_control's system identifier). */
  systemId: bigint
  /** Server major (13–19); when given, the magic must be that major's. Otherwise any known magic is accepted. */
  major?: number
  /**
   * The timeline the file is named for. xlp_tli may be lower: the first segment of a new timeline starts as a copy
   * of the parent's, so its early pages carry the parent TLI.
   */
  tli?: TimelineId
  /** XLOG_BLCKSZ, 8192 unless the server was built otherwise. */
  blockSizeBytes?: number
}

const hex = (n: number | bigint): string => `0x${n.toString(16).toUpperCase()}`

/**
 * Checks the first page of a WAL segment against what its name and the server say. Returns a list of problems,
 * empty when the header is sound; it never throws for bad content, so a caller can report every problem at once
 * (use {@link assertSegmentHeader} to throw instead).
 */
export function checkSegmentHeader(bytes: Uint8Array, expect: SegmentExpectation): string[] {
  if (bytes.byteLength < WAL_LONG_PAGE_HEADER_BYTES) {
    return [`segment header needs ${WAL_LONG_PAGE_HEADER_BYTES} bytes, got ${bytes.byteLength}`]
  }
  if (bytes.subarray(0, WAL_LONG_PAGE_HEADER_BYTES).every((b) => b === 0)) return ['segment header is all zeros']
  const h = decodeWalLongPageHeader(bytes)
  const problems: string[] = []
  // The flags allowed depend on the major: the expected one, else the one whose magic the page carries.
  const flagsMajor = expect.major ?? majorOfWalPageMagic(h.magic)
  if (expect.major !== undefined) {
    const want = XLOG_PAGE_MAGIC[expect.major]
    if (want === undefined) problems.push(`unknown server major ${expect.major}`)
    else if (h.magic !== want) {
      const of = majorOfWalPageMagic(h.magic)
      problems.push(`magic ${hex(h.magic)} is not the PostgreSQL ${expect.major} magic ${hex(want)}` + (of === undefined ? '' : ` (it is PostgreSQL ${of}'s)`))
    }
  } else if (majorOfWalPageMagic(h.magic) === undefined) {
    problems.push(`unknown magic ${hex(h.magic)}`)
  }
  if ((h.info & XLP_LONG_HEADER) === 0) problems.push(`long header flag not set (xlp_info ${hex(h.info)})`)
  if (flagsMajor !== undefined && (h.info & ~xlpAllFlags(flagsMajor)) !== 0) problems.push(`invalid xlp_info flags ${hex(h.info)}`)
  const wantAddr = expect.segno * BigInt(expect.segSizeBytes)
  if (h.pageAddr !== wantAddr) problems.push(`page address ${hex(h.pageAddr)} is not the segment start ${hex(wantAddr)}`)
  if (h.systemId !== expect.systemId) problems.push(`system identifier ${h.systemId} is not ${expect.systemId}`)
  if (h.segSizeBytes !== expect.segSizeBytes) {
    problems.push(`segment size ${h.segSizeBytes} is not ${expect.segSizeBytes}`)
  }
  const blockSize = expect.blockSizeBytes ?? WAL_BLOCK_SIZE_BYTES
  if (h.blockSizeBytes !== blockSize) problems.push(`WAL block size ${h.blockSizeBytes} is not ${blockSize}`)
  if (h.tli === 0) problems.push('timeline 0 in page header')
  else if (expect.tli !== undefined && h.tli > expect.tli) {
    problems.push(`page timeline ${h.tli} is above the file's timeline ${expect.tli}`)
  }
  return problems
}

/**
 * {@link checkSegmentHeader}, throwing when there is any problem.
 * @param name the file name, for the message
 * @throws FormatError listing every problem
 */
export function assertSegmentHeader(bytes: Uint8Array, expect: SegmentExpectation, name: string): void {
  const problems = checkSegmentHeader(bytes, expect)
  if (problems.length > 0) {
    throw new FormatError(`WAL segment '${name}' has a bad header: ${problems.join('; ')}`, {
      hint: 'the segment belongs to another cluster, timeline or server version, or is corrupt',
    })
  }
}
