// The page hashes a backup's file maps hold, computed over a file on disk: first 8 bytes of the SHA-256 of each
// 8 KB page, zeros for an all-zero page (backup/file-ingest.ts computes the same for what the server sends).

import { hash } from 'node:crypto'
import { isAllZero } from '../pg/page.js'
import { PAGE_BYTES, PAGE_HASH_BYTES } from '../repo/file-map.js'

/** PAGE_HASH_BYTES per page of `bytes` (the last page may be short). */
export function pageHashesOf(bytes: Buffer): Buffer {
  const pages = Math.ceil(bytes.length / PAGE_BYTES)
  const out = Buffer.alloc(pages * PAGE_HASH_BYTES)
  for (let p = 0; p < pages; p++) {
    const page = bytes.subarray(p * PAGE_BYTES, (p + 1) * PAGE_BYTES)
    if (!isAllZero(page)) hash('sha256', page, 'buffer').copy(out, p * PAGE_HASH_BYTES, 0, PAGE_HASH_BYTES)
  }
  return out
}
