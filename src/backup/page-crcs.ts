// A relation file's CRC-32C from the CRC-32C of its pages, which version 3 file maps keep (docs/backup-format.md
// §4): an incremental backup takes an unchanged page's CRC from its parent's map instead of reading the page's bytes
// through CRC-32C again, and joins the file's CRC page by page, to check against the server's manifest.

import { crc32c, crc32cJoiner } from '../pg/crc32c.js'
import { PAGE_BYTES, PAGE_CRC_BYTES } from '../repo/index.js'

/** The CRC-32C of a page of zeros. */
export const ZERO_PAGE_CRC = crc32c(new Uint8Array(PAGE_BYTES))

const joinPage = crc32cJoiner(PAGE_BYTES)

/** Writes the CRC of a page of zeros for pages [fromPage, toPage) into `pageCrcs`. */
export function fillZeroPageCrcs(pageCrcs: Buffer, fromPage: number, toPage: number): void {
  for (let p = fromPage; p < toPage; p++) pageCrcs.writeUInt32LE(ZERO_PAGE_CRC, p * PAGE_CRC_BYTES)
}

/** The CRC-32C of a file of whole pages, from its pages' CRCs (PAGE_CRC_BYTES each, in page order). */
export function fileCrcOfPages(pageCrcs: Buffer): number {
  let crc = 0
  for (let at = 0; at < pageCrcs.length; at += PAGE_CRC_BYTES) crc = joinPage(crc, pageCrcs.readUInt32LE(at))
  return crc
}
