// The page hashes of file maps (docs/backup-format.md §4), in the two algorithms a file map can name:
// XXH64 (file map versions 2 and 3) through @node-rs/xxhash (native; about 6 GB/s per core here, three times a
// WebAssembly build and ten times SHA-256, and every page of every backup goes through it), and the first 8 bytes
// of SHA-256 (version 1), which the backup still computes to compare with a parent written by an earlier pgkeep;
// and the pages' CRC-32C that version 3 maps keep beside the hashes.

import { hash } from 'node:crypto'
import { xxh64 } from '@node-rs/xxhash'
import { crc32c } from '../pg/crc32c.js'
import { isAllZero } from '../pg/page.js'
import { PAGE_BYTES, PAGE_CRC_BYTES, PAGE_HASH_BYTES, type PageHashAlgorithm } from './file-map.js'

const ZERO_HASH = Buffer.alloc(PAGE_HASH_BYTES)

/**
 * Writes the page hashes of `bytes` (pages of 8 KB; the last may be shorter) into `out` at `outOffset`,
 * PAGE_HASH_BYTES each. Returns the number of all-zero pages.
 */
export function hashPagesInto(bytes: Uint8Array, out: Uint8Array, outOffset: number, algorithm: PageHashAlgorithm): number {
  return algorithm === 'xxh64' ? xxh64Pages(bytes, out, outOffset) : sha256Pages(bytes, out, outOffset)
}

/** XXH64 of a whole page of zeros: only a page with this hash needs the byte-by-byte check for zeros. */
const ZERO_PAGE_XXH64 = xxh64(Buffer.alloc(PAGE_BYTES))

function xxh64Pages(bytes: Uint8Array, out: Uint8Array, outOffset: number): number {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  let zeros = 0
  for (let p = 0; p * PAGE_BYTES < bytes.length; p++) {
    const page = bytes.subarray(p * PAGE_BYTES, (p + 1) * PAGE_BYTES)
    const at = outOffset + p * PAGE_HASH_BYTES
    // The hash first: only a page hashing as a page of zeros (or a short last page) needs the test for zeros, one
    // native call per page instead of two.
    const h = xxh64(page)
    if ((h === ZERO_PAGE_XXH64 || page.length < PAGE_BYTES) && isAllZero(page)) {
      view.setBigUint64(at, 0n, true)
      zeros++
      continue
    }
    // 0 means "all zeros" in a file map: another page whose XXH64 is 0 is stored as 1 (docs/backup-format.md §4).
    view.setBigUint64(at, h === 0n ? 1n : h, true)
  }
  return zeros
}

/** The CRC-32C of each page of `bytes` (whole pages of 8 KB), PAGE_CRC_BYTES each, in a buffer of its own. */
export function pageCrcsOf(bytes: Uint8Array): Buffer {
  // alloc, not allocUnsafe: a buffer of its own (never a slice of Node's shared pool), so it can be transferred.
  const out = Buffer.alloc(Math.ceil(bytes.length / PAGE_BYTES) * PAGE_CRC_BYTES)
  for (let p = 0; p * PAGE_BYTES < bytes.length; p++) out.writeUInt32LE(crc32c(bytes.subarray(p * PAGE_BYTES, (p + 1) * PAGE_BYTES)), p * PAGE_CRC_BYTES)
  return out
}

function sha256Pages(bytes: Uint8Array, out: Uint8Array, outOffset: number): number {
  let zeros = 0
  for (let p = 0; p * PAGE_BYTES < bytes.length; p++) {
    const page = bytes.subarray(p * PAGE_BYTES, (p + 1) * PAGE_BYTES)
    const at = outOffset + p * PAGE_HASH_BYTES
    if (isAllZero(page)) {
      out.set(ZERO_HASH, at)
      zeros++
    } else {
      out.set(hash('sha256', page, 'buffer').subarray(0, PAGE_HASH_BYTES), at)
    }
  }
  return zeros
}
