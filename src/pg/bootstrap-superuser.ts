// The name of a cluster's bootstrap superuser (the role with oid 10, named by initdb -U), read from the files of a
// data directory: global/pg_filenode.map says which file holds pg_authid (1260 unless VACUUM FULL rewrote it), and
// that file's heap pages hold one tuple per role version (src/include/utils/relmapper.h, storage/itemid.h,
// access/htup_details.h, catalog/pg_authid.h). A drill needs it to connect to a restored copy whose roles it does
// not know. What is read here is untrusted: every offset is checked against the page before it is used.

import { BLOCK_SIZE_BYTES, PAGE_HEADER_BYTES, decodePageHeader } from './page.js'

/** pg_authid's oid, and its relfilenode in a cluster whose pg_authid was never rewritten. */
export const PG_AUTHID_OID = 1260
/** BOOTSTRAP_SUPERUSERID. */
export const BOOTSTRAP_SUPERUSER_OID = 10

const RELMAP_MAGIC = 0x592717
const NAMEDATALEN = 64
const LP_NORMAL = 1
const HEAP_XMAX_INVALID = 0x0800
/** t_xmin, t_xmax, t_cid, t_ctid (6), t_infomask2, t_infomask, t_hoff: the fixed part of HeapTupleHeaderData. */
const TUPLE_HEADER_BYTES = 23

/**
 * The file number global/pg_filenode.map gives `relationOid`, or undefined when the map does not list it or is not
 * a map. Layout: int32 magic, int32 num_mappings, then num_mappings × (oid, file number), little-endian.
 */
export function mappedFileNumber(map: Uint8Array, relationOid: number): number | undefined {
  if (map.length < 8) return undefined
  const view = new DataView(map.buffer, map.byteOffset, map.byteLength)
  if (view.getInt32(0, true) !== RELMAP_MAGIC) return undefined
  const count = view.getInt32(4, true)
  if (count < 0 || 8 + count * 8 > map.length) return undefined
  for (let i = 0; i < count; i++) {
    if (view.getUint32(8 + i * 8, true) === relationOid) return view.getUint32(12 + i * 8, true)
  }
  return undefined
}

/**
 * The names the bootstrap superuser has in pg_authid's heap file `bytes` (whole 8 KB pages): every tuple whose
 * first column (oid) is 10, those not deleted or updated (xmax invalid) first. Usually one name; an ALTER ROLE
 * … RENAME leaves the old version until vacuum, and the file may be older than the WAL a server replays, so callers
 * try the names in order. Pages that are not heap pages are skipped.
 */
export function bootstrapSuperuserNames(bytes: Uint8Array): string[] {
  const live: string[] = []
  const dead: string[] = []
  for (let off = 0; off + BLOCK_SIZE_BYTES <= bytes.length; off += BLOCK_SIZE_BYTES) {
    const page = bytes.subarray(off, off + BLOCK_SIZE_BYTES)
    const header = decodePageHeader(page)
    if (header.upper === 0 || header.lower < PAGE_HEADER_BYTES || header.lower > BLOCK_SIZE_BYTES) continue
    const view = new DataView(page.buffer, page.byteOffset, page.byteLength)
    for (let lp = PAGE_HEADER_BYTES; lp + 4 <= header.lower; lp += 4) {
      const item = view.getUint32(lp, true)
      const itemOff = item & 0x7fff
      const flags = (item >>> 15) & 0x3
      const itemLen = item >>> 17
      if (flags !== LP_NORMAL || itemLen < TUPLE_HEADER_BYTES || itemOff + itemLen > BLOCK_SIZE_BYTES) continue
      const hoff = page[itemOff + 22]!
      if (hoff < TUPLE_HEADER_BYTES || hoff + 4 + NAMEDATALEN > itemLen) continue
      const data = itemOff + hoff
      if (view.getUint32(data, true) !== BOOTSTRAP_SUPERUSER_OID) continue
      const nameBytes = page.subarray(data + 4, data + 4 + NAMEDATALEN)
      const end = nameBytes.indexOf(0)
      const name = Buffer.from(nameBytes.subarray(0, end < 0 ? NAMEDATALEN : end)).toString('utf8')
      if (name === '') continue
      const infomask = view.getUint16(itemOff + 20, true)
      const xmax = view.getUint32(itemOff + 4, true)
      const list = (infomask & HEAP_XMAX_INVALID) !== 0 || xmax === 0 ? live : dead
      if (!live.includes(name) && !dead.includes(name)) list.push(name)
    }
  }
  return [...live, ...dead]
}
