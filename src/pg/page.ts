// Data pages of relation files: the page header, new/all-zero pages, and PostgreSQL's page checksum with the rules
// that keep a backup from reporting pages that change during it (src/include/storage/bufpage.h,
// src/include/storage/checksum_impl.h, src/backend/backup/basebackup.c).

import { endianness } from 'node:os'
import { FormatError } from '../errors.js'
import type { Lsn } from './lsn.js'

/** The default BLCKSZ; pg_control and `SHOW block_size` give the real one. */
export const BLOCK_SIZE_BYTES = 8192

/** Size of PageHeaderData without line pointers (SizeOfPageHeaderData). */
export const PAGE_HEADER_BYTES = 24

/** PG_PAGE_LAYOUT_VERSION since PostgreSQL 8.3. */
export const PAGE_LAYOUT_VERSION = 4

/** pd_flags bits. */
export const PD_HAS_FREE_LINES = 0x1
export const PD_PAGE_FULL = 0x2
export const PD_ALL_VISIBLE = 0x4

/** A decoded page header (PageHeaderData, native order; pgkeep supports little-endian servers). */
export interface PageHeader {
  /** pd_lsn: LSN of the last WAL record that changed the page. */
  lsn: Lsn
  /** pd_checksum (0 when data checksums are off). */
  checksum: number
  /** pd_flags (PD_*). */
  flags: number
  /** pd_lower: end of the line pointer array. */
  lower: number
  /** pd_upper: start of tuple space; 0 means the page is new (never initialized). */
  upper: number
  /** pd_special: start of the special space (= page size for heap pages). */
  special: number
  /** pd_pagesize_version, raw: page size OR layout version (0x2004 for 8 KB pages). */
  pageSizeVersion: number
  /** Page size encoded in pd_pagesize_version (its high byte × 256). */
  pageSizeBytes: number
  /** Layout version encoded in pd_pagesize_version (4). */
  layoutVersion: number
  /** pd_prune_xid. */
  pruneXid: number
}

/**
 * Decodes the 24-byte page header.
 * ```
 * off size field
 *   0    4 pd_lsn.xlogid   (high half)
 *   4    4 pd_lsn.xrecoff  (low half)
 *   8    2 pd_checksum
 *  10    2 pd_flags
 *  12    2 pd_lower
 *  14    2 pd_upper
 *  16    2 pd_special
 *  18    2 pd_pagesize_version
 *  20    4 pd_prune_xid
 * ```
 * @throws FormatError when fewer than 24 bytes are given
 */
export function decodePageHeader(page: Uint8Array): PageHeader {
  if (page.byteLength < PAGE_HEADER_BYTES) {
    throw new FormatError(`page header needs ${PAGE_HEADER_BYTES} bytes, got ${page.byteLength}`)
  }
  const v = new DataView(page.buffer, page.byteOffset, PAGE_HEADER_BYTES)
  const pageSizeVersion = v.getUint16(18, true)
  return {
    lsn: (BigInt(v.getUint32(0, true)) << 32n) | BigInt(v.getUint32(4, true)),
    checksum: v.getUint16(8, true),
    flags: v.getUint16(10, true),
    lower: v.getUint16(12, true),
    upper: v.getUint16(14, true),
    special: v.getUint16(16, true),
    pageSizeVersion,
    pageSizeBytes: pageSizeVersion & 0xff00,
    layoutVersion: pageSizeVersion & 0x00ff,
    pruneXid: v.getUint32(20, true),
  }
}

/** pd_lsn of a page, without decoding the rest of the header. */
export function pageLsn(page: Uint8Array): Lsn {
  const hi = page[0]! | (page[1]! << 8) | (page[2]! << 16) | (page[3]! << 24)
  const lo = page[4]! | (page[5]! << 8) | (page[6]! << 16) | (page[7]! << 24)
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0)
}

/** PageIsNew: pd_upper is 0, i.e. the page was never initialized (all-zero pages from file extension included). */
export function isNewPage(page: Uint8Array): boolean {
  return page[14] === 0 && page[15] === 0
}

/** True when every byte of `page` is zero. */
export function isAllZero(page: Uint8Array): boolean {
  // memcmp against a zero buffer: an order of magnitude faster than a JS loop, and it runs on every page; compare's
  // ranges spare the two views per page that subarray would allocate.
  for (let off = 0; off < page.byteLength; off += ZEROS.length) {
    const n = Math.min(ZEROS.length, page.byteLength - off)
    if (ZEROS.compare(page, off, off + n, 0, n) !== 0) return false
  }
  return true
}

const ZEROS = Buffer.alloc(64 * 1024)

// Initial values of the 32 running sums (checksum_impl.h checksumBaseOffsets).
const BASE_OFFSETS = Int32Array.from(
  [
    0x5b1f36e9, 0xb8525960, 0x02ab50aa, 0x1de66d2a, 0x79ff467a, 0x9bb9f8a3, 0x217e7cd2, 0x83e13d2c, 0xf8d4474f, 0xe39eb970, 0x42c6ae16, 0x993216fa, 0x7b093b5d,
    0x98daff3c, 0xf718902a, 0x0b1c9cdb, 0xe58f764b, 0x187636bc, 0x5d7b3bb1, 0xe73de7de, 0x92bec979, 0xcca6c0b2, 0x304a0979, 0x85aa43d4, 0x783125bb, 0x6ca8eaa2,
    0xe407eac6, 0x4b5cfc3e, 0x9fbf8c76, 0x15ca20be, 0xf2ca9fd3, 0x959bd756,
  ].map((x) => x | 0),
)
const N_SUMS = 32
const FNV_PRIME = 16777619
const LITTLE_ENDIAN_HOST = endianness() === 'LE'
// Reused scratch: the function is synchronous, so one set of sums per process is enough.
const sums = new Int32Array(N_SUMS)
// Copy target for pages whose view is not 4-byte aligned.
const alignedCopy = new Uint8Array(BLOCK_SIZE_BYTES)

/**
 * PostgreSQL's data page checksum (pg_checksum_page): the page is hashed as 32 interleaved FNV-1a-like streams
 * over u32 words with pd_checksum taken as 0, the streams are XORed, the block number is mixed in, and the result
 * is reduced to 1..65535. `blkno` is the block number within the relation fork: segno × RELSEG_SIZE + block in
 * the segment file.
 *
 * Only 8192-byte pages are supported (the checksum's layout depends on BLCKSZ).
 * @throws FormatError when the page is not 8192 bytes
 */
export function pageChecksum(page: Uint8Array, blkno: number): number {
  if (page.byteLength !== BLOCK_SIZE_BYTES) {
    throw new FormatError(`page checksum needs a ${BLOCK_SIZE_BYTES}-byte page, got ${page.byteLength} bytes`)
  }
  let src = page
  if ((page.byteOffset & 3) !== 0 || !LITTLE_ENDIAN_HOST) {
    alignedCopy.set(page)
    src = alignedCopy
  }
  const w = new Int32Array(src.buffer, src.byteOffset, BLOCK_SIZE_BYTES / 4)
  if (!LITTLE_ENDIAN_HOST) {
    // The server's pages are little-endian; swap into host order so the word loop reads the same values.
    const dv = new DataView(page.buffer, page.byteOffset, BLOCK_SIZE_BYTES)
    for (let k = 0; k < w.length; k++) w[k] = dv.getInt32(k * 4, true)
  }
  const s = sums
  s.set(BASE_OFFSETS)
  // CHECKSUM_COMP(sum, value): tmp = sum ^ value; sum = tmp * FNV_PRIME ^ (tmp >> 17).
  // First row of 32 words: word 2 holds pd_checksum (low half) and pd_flags (high half); hash it with the
  // checksum zeroed, as pg_checksum_page does on its copy of the page.
  for (let j = 0; j < N_SUMS; j++) {
    const t = s[j]! ^ (j === 2 ? w[2]! & 0xffff0000 : w[j]!)
    s[j] = Math.imul(t, FNV_PRIME) ^ (t >>> 17)
  }
  for (let i = N_SUMS; i < w.length; i += N_SUMS) {
    for (let j = 0; j < N_SUMS; j++) {
      const t = s[j]! ^ w[i + j]!
      s[j] = Math.imul(t, FNV_PRIME) ^ (t >>> 17)
    }
  }
  // Two more rounds of zeros for extra mixing, then XOR the sums together.
  let h = 0
  for (let j = 0; j < N_SUMS; j++) {
    let t = s[j]!
    let x = Math.imul(t, FNV_PRIME) ^ (t >>> 17)
    t = x
    x = Math.imul(t, FNV_PRIME) ^ (t >>> 17)
    h ^= x
  }
  return (((h ^ blkno) >>> 0) % 65535) + 1
}

/**
 * How a page fares in a backup-time checksum check (the server's BASE_BACKUP rules, which pgBackRest shares):
 * - `new`: pd_upper is 0, nothing to check (all-zero pages left by file extension are new);
 * - `recent`: pd_lsn ≥ the backup start LSN, so the page changed during the backup and may be torn; WAL replay
 *   rewrites it, so its checksum is not checked;
 * - `ok` / `bad`: the stored pd_checksum matches / does not match {@link pageChecksum}.
 */
export type PageVerdict = 'ok' | 'new' | 'recent' | 'bad'

/**
 * Checks a page's stored checksum, applying the false-positive rules above. Only meaningful when the cluster's
 * checksums were `on` for the whole backup: while they are being enabled online (a transition state such as
 * `inprogress-on`), pages not yet rewritten have no valid checksum and would read as `bad`; the server itself skips
 * verification then, and so must a caller.
 * @param blkno block number within the relation fork (see {@link pageChecksum})
 * @param backupStartLsn the backup's start LSN; when undefined (a cold copy) the `recent` rule is not applied
 */
export function verifyPageChecksum(page: Uint8Array, blkno: number, backupStartLsn?: Lsn): PageVerdict {
  if (isNewPage(page)) return 'new'
  if (backupStartLsn !== undefined && pageLsn(page) >= backupStartLsn) return 'recent'
  const stored = page[8]! | (page[9]! << 8)
  return stored === pageChecksum(page, blkno) ? 'ok' : 'bad'
}
