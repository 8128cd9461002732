// Small relation files' file maps, carried in their file list entries (docs/backup-format.md §3) instead of blobs
// of their own: their form, how they are made from a map and back, and how an entry's line is checked for one.

import type { BlobId } from './blob.js'
import type { FileEntry } from './file-list.js'
import { decodeFileMap, type Extent, type FileMap, PAGE_BYTES, PAGE_CRC_BYTES, PAGE_HASH_ALGORITHM, PAGE_HASH_BYTES } from './file-map.js'

/**
 * A file map carried in its file's entry rather than in a blob of its own (docs/backup-format.md §3): a relation
 * file of a few pages would otherwise have two blobs, its data and its map, and a cluster of many small relations
 * twice the blobs to index, pack, look up and read. Only what the entry does not say already is carried: the
 * page hashes and page CRCs of a version 3 map; its size and extents are the entry's.
 */
export interface InlineFileMap {
  /** Base64 of the map's page hashes then its page CRCs (PAGE_HASH_BYTES + PAGE_CRC_BYTES per page). */
  readonly pages: string
}

/** Where a relation file's map is: a blob id, or inline. */
export type FileMapRef = BlobId | InlineFileMap

/**
 * A relation file of at most this many pages, whose entry lists its extents, carries its map inline (at most 256
 * characters of base64); larger ones keep it in a blob, read once per MiBs of data.
 */
export const INLINE_FILE_MAP_MAX_PAGES = 16

const INLINE_PAGE_BYTES = PAGE_HASH_BYTES + PAGE_CRC_BYTES

/** The inline form of `map` for an entry that lists `extents`, or undefined when the map must be a blob. */
export function inlineFileMap(map: FileMap, extents: Extent[] | undefined): InlineFileMap | undefined {
  if (!extents || !map.pageCrcs || map.pageHashAlgorithm !== PAGE_HASH_ALGORITHM) return undefined
  if (map.sizeBytes % PAGE_BYTES !== 0 || map.sizeBytes / PAGE_BYTES > INLINE_FILE_MAP_MAX_PAGES) return undefined
  return { pages: Buffer.concat([map.pageHashes, map.pageCrcs]).toString('base64') }
}

/** The map an entry carries inline, whole: its page hashes and CRCs, with the entry's size and extents. */
export function inlineFileMapOf(e: FileEntry, m: InlineFileMap): FileMap {
  const pages = Buffer.from(m.pages, 'base64')
  const n = e.sizeBytes / PAGE_BYTES
  return {
    sizeBytes: e.sizeBytes,
    pageHashAlgorithm: PAGE_HASH_ALGORITHM,
    pageHashes: pages.subarray(0, n * PAGE_HASH_BYTES),
    pageCrcs: pages.subarray(n * PAGE_HASH_BYTES),
    extents: e.extents ?? [],
  }
}

/** A relation file's map wherever it is: inline in its entry, or decoded from its blob. */
export async function fileMapOf(e: FileEntry, ref: FileMapRef, readBlob: (id: BlobId) => Promise<Buffer>, what = 'file map'): Promise<FileMap> {
  return typeof ref === 'string' ? decodeFileMap(await readBlob(ref), what) : inlineFileMapOf(e, ref)
}

/**
 * An inline map as an entry's JSON line has it (`e` is the entry decoded so far, its extents included): canonical
 * base64 of PAGE_HASH_BYTES + PAGE_CRC_BYTES per page of a file of whole pages, at most INLINE_FILE_MAP_MAX_PAGES,
 * in an entry that lists its extents.
 */
export function unpackInlineFileMap(raw: unknown, e: FileEntry, bad: (why: string) => Error): InlineFileMap {
  const pages = raw !== null && typeof raw === 'object' && Object.keys(raw).length === 1 ? (raw as { pages?: unknown }).pages : undefined
  if (typeof pages !== 'string' || pages.length > INLINE_BASE64_MAX || !BASE64.test(pages)) throw bad('has a malformed inline file map')
  const n = e.sizeBytes / PAGE_BYTES
  if (!e.extents || !Number.isInteger(n) || n > INLINE_FILE_MAP_MAX_PAGES) throw bad('has an inline file map but is no small relation file with extents')
  const bytes = Buffer.from(pages, 'base64')
  if (bytes.toString('base64') !== pages) throw bad('has a malformed inline file map')
  if (bytes.length !== n * INLINE_PAGE_BYTES)
    throw bad(`has an inline file map of ${bytes.length} bytes, its ${e.sizeBytes}-byte file needs ${n * INLINE_PAGE_BYTES}`)
  return { pages }
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/
const INLINE_BASE64_MAX = Math.ceil((INLINE_FILE_MAP_MAX_PAGES * INLINE_PAGE_BYTES) / 3) * 4
