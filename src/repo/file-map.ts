// The file map of a relation segment file: where each byte range of the file lives (extents over blobs, holes
// for all-zero ranges), plus the hashes that let the next backup find what changed without reading old data: one
// 64-bit hash per page (versions 2 and 3: XXH64; version 1: a SHA-256 prefix, and also one hash per window of 128
// pages, the id of the window's bytes as a blob), and in version 3 each page's CRC-32C, from which the next backup
// makes the file's CRC-32C without reading the pages it finds unchanged. Stored as a `meta` blob; layout in
// docs/backup-format.md §4.

import { FormatError } from '../errors.js'
import type { BlobId } from './blob.js'

export const FILE_MAP_MAGIC = 0x4d464b50 // "PKFM" little-endian
/**
 * The version new file maps are written in: 3, or 2 when the backup has no CRC-32C for some page (a server-side
 * incremental that keeps pages of a parent without them); version 1 is still read, and written for a version 1
 * parent's pages.
 */
export const FILE_MAP_VERSION = 3
export const PAGE_BYTES = 8192
/** Pages per window: a window is stored as one blob of up to 1 MiB. */
export const WINDOW_PAGES = 128
export const WINDOW_BYTES = PAGE_BYTES * WINDOW_PAGES
/** Bytes of a page hash, in either algorithm. */
export const PAGE_HASH_BYTES = 8
/** Bytes of a page's CRC-32C in a version 3 map. */
export const PAGE_CRC_BYTES = 4

/**
 * How a file map's page hashes are made. `xxh64` (versions 2 and 3): XXH64 with seed 0 of the page, as a little-endian
 * u64; `sha256-64` (version 1): the first 8 bytes of the page's SHA-256. In both, an all-zero page hashes to eight
 * zero bytes and no other page does (an XXH64 of 0 is stored as 1).
 */
export type PageHashAlgorithm = 'xxh64' | 'sha256-64'

/** The page hash algorithm of new file maps. */
export const PAGE_HASH_ALGORITHM: PageHashAlgorithm = 'xxh64'
/** The algorithm byte of a version 2 file map. */
const ALGORITHM_CODES: Readonly<Record<number, PageHashAlgorithm>> = { 1: 'xxh64' }

/** A byte range of a file: `length` bytes at `offset`, stored at `blobOffset` in `blob`, or a hole (zeros). */
export interface Extent {
  offset: number
  length: number
  /** null: the range is all zeros (a hole). */
  blob: BlobId | null
  blobOffset: number
}

/**
 * Version 1 maps only. The hash of a window: the blob id its raw bytes would have; null for an all-zero window; UNKNOWN_WINDOW when
 * the backup never saw the whole window (a PG 17 INCREMENTAL file sends only changed pages), which makes the
 * next backup compare that window page by page.
 */
export type WindowHash = BlobId | null

/** Stored as 32 bytes of 0xFF. */
export const UNKNOWN_WINDOW: BlobId = 'f'.repeat(64)

export interface FileMap {
  sizeBytes: number
  /** How `pageHashes` were made; `sha256-64` maps are version 1 and carry `windowHashes`. */
  pageHashAlgorithm: PageHashAlgorithm
  /** Version 1 only: per window, in order. */
  windowHashes?: WindowHash[]
  /** PAGE_HASH_BYTES per page, in page order; zero bytes for an all-zero page. */
  pageHashes: Buffer
  /**
   * Version 3 (`xxh64` only): the CRC-32C of each page's bytes (an all-zero page's too), PAGE_CRC_BYTES each,
   * little-endian, in page order. Absent in maps of versions 1 and 2.
   */
  pageCrcs?: Buffer
  /** In offset order, covering [0, sizeBytes) exactly once. */
  extents: Extent[]
}

const HEADER_BYTES = 24
const EXTENT_BYTES = 20
const HOLE = 0xffffffff
const ZERO_ID = Buffer.alloc(32)

export const pageCountOf = (sizeBytes: number) => Math.ceil(sizeBytes / PAGE_BYTES)
export const windowCountOf = (sizeBytes: number) => Math.ceil(sizeBytes / WINDOW_BYTES)

/**
 * Encodes a file map (all integers little-endian), version 2 for `xxh64` page hashes:
 * magic u32 | version u8 = 2 | algorithm u8 = 1 (xxh64) | windowPages u16 | sizeBytes u64 | blobCount u32 |
 * extentCount u32 | blobCount × 32-byte blob ids | pageCount × 8-byte page hashes |
 * extentCount × (offset u64 | length u32 | blob index u32, 0xFFFFFFFF = hole | blobOffset u32);
 * version 3 when the map has page CRCs: version 2 with version 3 and pageCount × 4-byte CRC-32C after the hashes;
 * version 1 for `sha256-64` page hashes: the same with version 1, a 0 in place of the algorithm, and
 * windowCount × 32-byte window hashes (zeros: hole) between the blob ids and the page hashes.
 */
export function encodeFileMap(m: FileMap): Buffer {
  checkShape(m)
  const blobs: BlobId[] = []
  const indexOf = new Map<BlobId, number>()
  for (const e of m.extents) {
    if (e.blob !== null && !indexOf.has(e.blob)) {
      indexOf.set(e.blob, blobs.length)
      blobs.push(e.blob)
    }
  }
  const v1 = m.pageHashAlgorithm === 'sha256-64'
  const windows = v1 ? m.windowHashes!.length : 0
  const crcBytes = m.pageCrcs?.length ?? 0
  const out = Buffer.alloc(HEADER_BYTES + 32 * blobs.length + 32 * windows + m.pageHashes.length + crcBytes + EXTENT_BYTES * m.extents.length)
  out.writeUInt32LE(FILE_MAP_MAGIC, 0)
  out[4] = v1 ? 1 : m.pageCrcs ? 3 : 2
  out[5] = v1 ? 0 : 1
  out.writeUInt16LE(WINDOW_PAGES, 6)
  out.writeBigUInt64LE(BigInt(m.sizeBytes), 8)
  out.writeUInt32LE(blobs.length, 16)
  out.writeUInt32LE(m.extents.length, 20)
  let off = HEADER_BYTES
  for (const id of blobs) off += out.write(id, off, 'hex')
  if (v1) {
    for (const w of m.windowHashes!) {
      if (w !== null) out.write(w, off, 'hex')
      off += 32
    }
  }
  off += m.pageHashes.copy(out, off)
  if (m.pageCrcs) off += m.pageCrcs.copy(out, off)
  for (const e of m.extents) {
    out.writeBigUInt64LE(BigInt(e.offset), off)
    out.writeUInt32LE(e.length, off + 8)
    out.writeUInt32LE(e.blob === null ? HOLE : indexOf.get(e.blob)!, off + 12)
    out.writeUInt32LE(e.blobOffset, off + 16)
    off += EXTENT_BYTES
  }
  return out
}

/** Decodes a file map of version 1, 2 or 3; anything else, or bytes that do not add up, is a FormatError. */
export function decodeFileMap(buf: Buffer, what = 'file map'): FileMap {
  const bad = (why: string) => new FormatError(`${what} is malformed: ${why}`)
  if (buf.length < HEADER_BYTES) throw bad(`${buf.length} bytes is shorter than its header`)
  if (buf.readUInt32LE(0) !== FILE_MAP_MAGIC) throw bad('wrong magic')
  const version = buf[4]!
  if (version !== 1 && version !== 2 && version !== 3) throw bad(`unknown version ${version}`)
  let pageHashAlgorithm: PageHashAlgorithm
  if (version === 1) {
    if (buf[5] !== 0) throw bad(`byte 5 of a version 1 map is ${buf[5]}, not 0`)
    pageHashAlgorithm = 'sha256-64'
  } else {
    const a = ALGORITHM_CODES[buf[5]!]
    if (a === undefined) throw bad(`unknown page hash algorithm ${buf[5]}`)
    pageHashAlgorithm = a
  }
  if (buf.readUInt16LE(6) !== WINDOW_PAGES) throw bad(`unsupported window of ${buf.readUInt16LE(6)} pages`)
  const sizeBytes = Number(buf.readBigUInt64LE(8))
  const blobCount = buf.readUInt32LE(16)
  const extentCount = buf.readUInt32LE(20)
  const windows = version === 1 ? windowCountOf(sizeBytes) : 0
  const pages = pageCountOf(sizeBytes)
  const crcBytes = version === 3 ? PAGE_CRC_BYTES * pages : 0
  const expected = HEADER_BYTES + 32 * blobCount + 32 * windows + PAGE_HASH_BYTES * pages + crcBytes + EXTENT_BYTES * extentCount
  if (buf.length !== expected) throw bad(`${buf.length} bytes, expected ${expected}`)
  let off = HEADER_BYTES
  const blobs: BlobId[] = []
  for (let i = 0; i < blobCount; i++, off += 32) blobs.push(buf.toString('hex', off, off + 32))
  let windowHashes: WindowHash[] | undefined
  if (version === 1) {
    windowHashes = []
    for (let i = 0; i < windows; i++, off += 32) {
      windowHashes.push(buf.compare(ZERO_ID, 0, 32, off, off + 32) === 0 ? null : buf.toString('hex', off, off + 32))
    }
  }
  const pageHashes = Buffer.from(buf.subarray(off, off + PAGE_HASH_BYTES * pages))
  off += PAGE_HASH_BYTES * pages
  const pageCrcs = version === 3 ? Buffer.from(buf.subarray(off, off + crcBytes)) : undefined
  off += crcBytes
  const extents: Extent[] = []
  for (let i = 0; i < extentCount; i++, off += EXTENT_BYTES) {
    const index = buf.readUInt32LE(off + 12)
    if (index !== HOLE && index >= blobCount) throw bad(`extent ${i} names blob ${index} of ${blobCount}`)
    extents.push({
      offset: Number(buf.readBigUInt64LE(off)),
      length: buf.readUInt32LE(off + 8),
      blob: index === HOLE ? null : blobs[index],
      blobOffset: buf.readUInt32LE(off + 16),
    })
  }
  const m: FileMap = windowHashes
    ? { sizeBytes, pageHashAlgorithm, windowHashes, pageHashes, extents }
    : pageCrcs
      ? { sizeBytes, pageHashAlgorithm, pageHashes, pageCrcs, extents }
      : { sizeBytes, pageHashAlgorithm, pageHashes, extents }
  checkShape(m, bad)
  return m
}

/** Extents must tile [0, sizeBytes) in order; hash arrays must match the page and window counts. */
function checkShape(m: FileMap, bad = (why: string) => new FormatError(`file map is malformed: ${why}`)): void {
  if (m.pageHashAlgorithm === 'sha256-64') {
    const n = m.windowHashes?.length
    if (n !== windowCountOf(m.sizeBytes)) throw bad(`${n ?? 'no'} window hashes for ${m.sizeBytes} bytes`)
  } else if (m.windowHashes !== undefined) {
    throw bad(`window hashes in a map of ${m.pageHashAlgorithm} page hashes`)
  }
  if (m.pageHashes.length !== PAGE_HASH_BYTES * pageCountOf(m.sizeBytes)) throw bad(`${m.pageHashes.length} page hash bytes for ${m.sizeBytes} bytes`)
  if (m.pageCrcs !== undefined) {
    if (m.pageHashAlgorithm !== 'xxh64') throw bad(`page CRCs in a map of ${m.pageHashAlgorithm} page hashes`)
    if (m.pageCrcs.length !== PAGE_CRC_BYTES * pageCountOf(m.sizeBytes)) throw bad(`${m.pageCrcs.length} page CRC bytes for ${m.sizeBytes} bytes`)
  }
  let at = 0
  for (const e of m.extents) {
    if (e.offset !== at || e.length <= 0) throw bad(`extent at ${e.offset} (length ${e.length}) does not continue at ${at}`)
    at += e.length
  }
  if (at !== m.sizeBytes) throw bad(`extents cover ${at} of ${m.sizeBytes} bytes`)
}

/** Appends an extent, merging it into the previous one when it continues the same blob (or hole). */
export function pushExtent(extents: Extent[], e: Extent): void {
  const last = extents[extents.length - 1]
  if (last && last.offset + last.length === e.offset && last.blob === e.blob && (e.blob === null || last.blobOffset + last.length === e.blobOffset)) {
    last.length += e.length
  } else {
    extents.push({ ...e })
  }
}

/** The extents (of a file map, in offset order) that cover [offset, offset + length), cut to that range. */
export function extentsIn(extents: readonly Extent[], offset: number, length: number): Extent[] {
  const out: Extent[] = []
  const end = offset + length
  // Binary search for the first extent ending after `offset`.
  let lo = 0
  let hi = extents.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    const e = extents[mid]!
    if (e.offset + e.length <= offset) lo = mid + 1
    else hi = mid
  }
  for (let i = lo; i < extents.length && extents[i]!.offset < end; i++) {
    const e = extents[i]!
    const from = Math.max(e.offset, offset)
    const to = Math.min(e.offset + e.length, end)
    out.push({ offset: from, length: to - from, blob: e.blob, blobOffset: e.blob === null ? 0 : e.blobOffset + (from - e.offset) })
  }
  return out
}
