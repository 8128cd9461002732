// `INCREMENTAL.<relfile>` files of PostgreSQL 17+ incremental backups: header decoding (streaming-friendly) and an
// encoder (src/backend/backup/basebackup_incremental.c, src/bin/pg_combinebackup/reconstruct.c).

import { FormatError } from '../errors.js'
import { BLOCK_SIZE_BYTES } from './page.js'
import { DEFAULT_RELSEG_SIZE_BLOCKS } from './relation-path.js'

/** INCREMENTAL_MAGIC, the first u32 of every incremental file. */
export const INCREMENTAL_MAGIC = 0xd3ae1f0d

/** Bytes before the block numbers: magic, block count, truncation block length. */
export const INCREMENTAL_FIXED_HEADER_BYTES = 12

/** The decoded header of an incremental file. */
export interface IncrementalHeader {
  /** N: how many block images follow the header. */
  blockCount: number
  /** The minimum length, in blocks, of the reconstructed segment file. */
  truncationBlockLength: number
  /** Block numbers relative to the segment start, ascending, one per image in the same order. */
  blockNumbers: Uint32Array
  /** Where the first block image starts. */
  headerSizeBytes: number
}

/**
 * Size of the header for N blocks: 12 + 4N bytes, padded with zeros to a multiple of BLCKSZ when N > 0 so the
 * images that follow are block-aligned; exactly 12 bytes when N = 0.
 */
export function incrementalHeaderSize(blockCount: number, blockSizeBytes = BLOCK_SIZE_BYTES): number {
  const raw = INCREMENTAL_FIXED_HEADER_BYTES + 4 * blockCount
  return blockCount === 0 ? raw : Math.ceil(raw / blockSizeBytes) * blockSizeBytes
}

/** Total size of an incremental file with N blocks: header + N × BLCKSZ. */
export function incrementalFileSize(blockCount: number, blockSizeBytes = BLOCK_SIZE_BYTES): number {
  return incrementalHeaderSize(blockCount, blockSizeBytes) + blockCount * blockSizeBytes
}

/**
 * How many leading bytes {@link decodeIncrementalHeader} needs, given the bytes received so far: 12 until the
 * block count is known, then the full header size.
 */
export function incrementalHeaderBytesNeeded(prefix: Uint8Array, blockSizeBytes = BLOCK_SIZE_BYTES): number {
  if (prefix.byteLength < INCREMENTAL_FIXED_HEADER_BYTES) return INCREMENTAL_FIXED_HEADER_BYTES
  const v = new DataView(prefix.buffer, prefix.byteOffset, INCREMENTAL_FIXED_HEADER_BYTES)
  return incrementalHeaderSize(v.getUint32(4, true), blockSizeBytes)
}

/**
 * Decodes the header from the first bytes of an incremental file (little-endian u32s):
 * ```
 * off      field
 *   0      magic 0xD3AE1F0D
 *   4      N, number of blocks
 *   8      truncation_block_length
 *  12      N × block number (relative to the segment), ascending
 *  12+4N   zero padding to a multiple of BLCKSZ (only when N > 0)
 *  header  N × BLCKSZ block images, in block number order
 * ```
 * Returns undefined when `prefix` is shorter than the header (see {@link incrementalHeaderBytesNeeded}).
 * @throws FormatError on a bad magic, a count or length beyond the segment size, or unsorted block numbers
 */
export function decodeIncrementalHeader(prefix: Uint8Array, o: { blockSizeBytes?: number; relsegSizeBlocks?: number } = {}): IncrementalHeader | undefined {
  const blockSize = o.blockSizeBytes ?? BLOCK_SIZE_BYTES
  const relseg = o.relsegSizeBlocks ?? DEFAULT_RELSEG_SIZE_BLOCKS
  if (prefix.byteLength < INCREMENTAL_FIXED_HEADER_BYTES) return undefined
  const v = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength)
  const magic = v.getUint32(0, true)
  if (magic !== INCREMENTAL_MAGIC) {
    throw new FormatError(`incremental file has magic 0x${magic.toString(16)}, expected 0x${INCREMENTAL_MAGIC.toString(16)}`)
  }
  const blockCount = v.getUint32(4, true)
  const truncationBlockLength = v.getUint32(8, true)
  // The same limits pg_combinebackup enforces (reconstruct.c make_incremental_rfile).
  if (blockCount > relseg) throw new FormatError(`incremental file has block count ${blockCount} beyond the segment size ${relseg}`)
  if (truncationBlockLength > relseg) {
    throw new FormatError(`incremental file has truncation block length ${truncationBlockLength} beyond the segment size ${relseg}`)
  }
  const headerSizeBytes = incrementalHeaderSize(blockCount, blockSize)
  if (prefix.byteLength < headerSizeBytes) return undefined
  const blockNumbers = new Uint32Array(blockCount)
  for (let i = 0; i < blockCount; i++) {
    const b = v.getUint32(INCREMENTAL_FIXED_HEADER_BYTES + 4 * i, true)
    if (b >= relseg) throw new FormatError(`incremental file lists block ${b} beyond the segment size ${relseg}`)
    if (i > 0 && b <= blockNumbers[i - 1]!) throw new FormatError('incremental file block numbers are not ascending')
    blockNumbers[i] = b
  }
  return { blockCount, truncationBlockLength, blockNumbers, headerSizeBytes }
}

/** A block image to put into an incremental file. */
export interface IncrementalBlock {
  /** Block number relative to the segment start. */
  blockNumber: number
  /** Exactly BLCKSZ bytes. */
  page: Uint8Array
}

/**
 * Builds an incremental file (for tests and for tools that produce what the server would): header, padding, then
 * the images. Blocks must be given in ascending block number order.
 * @throws FormatError on unsorted blocks, wrong page sizes or out-of-range numbers
 */
export function encodeIncrementalFile(blocks: readonly IncrementalBlock[], truncationBlockLength: number, blockSizeBytes = BLOCK_SIZE_BYTES): Uint8Array {
  const n = blocks.length
  const headerSize = incrementalHeaderSize(n, blockSizeBytes)
  const out = new Uint8Array(headerSize + n * blockSizeBytes)
  const v = new DataView(out.buffer)
  v.setUint32(0, INCREMENTAL_MAGIC, true)
  v.setUint32(4, n, true)
  if (!Number.isInteger(truncationBlockLength) || truncationBlockLength < 0 || truncationBlockLength > 0xffff_ffff) {
    throw new FormatError(`invalid truncation block length ${truncationBlockLength}`)
  }
  v.setUint32(8, truncationBlockLength, true)
  blocks.forEach((b, i) => {
    if (!Number.isInteger(b.blockNumber) || b.blockNumber < 0 || b.blockNumber > 0xffff_ffff) {
      throw new FormatError(`invalid block number ${b.blockNumber}`)
    }
    if (i > 0 && b.blockNumber <= blocks[i - 1]!.blockNumber) throw new FormatError('incremental blocks must be in ascending order')
    if (b.page.byteLength !== blockSizeBytes) throw new FormatError(`block ${b.blockNumber} is ${b.page.byteLength} bytes, not ${blockSizeBytes}`)
    v.setUint32(INCREMENTAL_FIXED_HEADER_BYTES + 4 * i, b.blockNumber, true)
    out.set(b.page, headerSize + i * blockSizeBytes)
  })
  return out
}
