// The file list of a backup: one entry per file, directory and symlink of the data directory and its
// tablespaces, sorted by path and cut into chunks stored as `meta` blobs (JSON lines). The backup record keeps only
// the chunk directory, so neither writing nor reading a backup holds every entry of a huge cluster at once when
// reading, and lookups by path load one chunk.

import { IntegrityError } from '../errors.js'
import { dataDirEntryProblem, printableName } from '../pg/data-dir-entry.js'
import type { BlobId } from './blob.js'
import type { Extent } from './file-map.js'
import { type FileMapRef, unpackInlineFileMap } from './inline-file-map.js'

export interface FileEntry {
  /** Relative to the data directory, '/'-separated; tablespace files as `pg_tblspc/<oid>/PG_…/…`. */
  path: string
  type: 'file' | 'directory' | 'symlink'
  /** Permission bits (& 0o7777). */
  mode: number
  /** Modification time, Unix seconds. */
  mtime: number
  sizeBytes: number
  /** CRC-32C of the content as the manifest writes it (little-endian hex); absent when not computed. */
  crc32c?: string
  /**
   * Content of an ordinary file; for a relation file with a map, a copy of the map's extents when they are few
   * ({@link inlineExtents}), so that a restore need not read the map. Readers take these first when present.
   */
  extents?: Extent[]
  /**
   * Content of a relation file: its file map (page hashes for the next backup, and extents), the id of the blob
   * that holds it or, for a small map, the map itself ({@link InlineFileMap}).
   */
  fileMap?: FileMapRef
  /** Target of a symlink. */
  linkTarget?: string
}

/** One chunk of the list, as the backup record keeps it. */
export interface FileListChunk {
  first: string
  last: string
  count: number
  blob: BlobId
}

export interface FileListSummary {
  count: number
  /** Sum of file sizes: the logical size of the backup. */
  sizeBytes: number
  chunks: FileListChunk[]
}

/** A relation file's extents are copied into its entry when the map has at most this many... */
export const INLINE_EXTENTS_MAX = 4
/** ...and the file is at most this large (one window of 128 pages). */
export const INLINE_EXTENTS_FILE_BYTES = 1 << 20

/**
 * The extents to list in a relation file's entry beside its map, or undefined to leave them in the map alone.
 * A restore reads one blob per file it would otherwise not need: for a cluster of many small relations, that was
 * half the blobs it read (40,000 one-page tables: 80,000 maps; their maps are inline now, InlineFileMap). Larger
 * files keep them in the map only: one map read per MiBs of data costs nothing, and their extents would swell the
 * list.
 */
export function inlineExtents(map: { sizeBytes: number; extents: Extent[] }): Extent[] | undefined {
  return map.sizeBytes <= INLINE_EXTENTS_FILE_BYTES && map.extents.length <= INLINE_EXTENTS_MAX ? map.extents : undefined
}

/** A compact text of an extent list: equal for two lists exactly when they describe the same bytes the same way. */
export function extentsKey(extents: readonly Extent[]): string {
  return extents.map((x) => `${x.offset},${x.length},${x.blob ?? '-'},${x.blobOffset}`).join(';')
}

/** Entries per chunk: about 0.5–1 MiB of JSON. */
export const FILE_LIST_CHUNK_ENTRIES = 4096

export interface MetaSink {
  putBlob(type: 'meta', bytes: Uint8Array, o?: { signal?: AbortSignal }): Promise<{ id: BlobId; stored: boolean }>
}

export interface MetaSource {
  readBlob(id: BlobId, o?: { signal?: AbortSignal }): Promise<Buffer>
}

/** An entry's line, parsed: what pack() makes of an entry (file-list-writer.ts reads its path, type and size). */
export type Packed = [
  string,
  'f' | 'd' | 'l',
  number,
  number,
  number,
  string | null,
  (string | number | null)[][] | null,
  string | { pages: string } | null,
  string | null,
]

function pack(e: FileEntry): Packed {
  return [
    e.path,
    e.type === 'file' ? 'f' : e.type === 'directory' ? 'd' : 'l',
    e.mode,
    e.mtime,
    e.sizeBytes,
    e.crc32c ?? null,
    e.extents ? e.extents.map((x) => [x.offset, x.length, x.blob, x.blobOffset]) : null,
    e.fileMap === undefined ? null : typeof e.fileMap === 'string' ? e.fileMap : { pages: e.fileMap.pages },
    e.linkTarget ?? null,
  ]
}

const BLOB_ID = /^[0-9a-f]{64}$/
const NEWLINE = 0x0a
const CRC_HEX = /^[0-9a-f]{8}$/
const TYPES = { f: 'file', d: 'directory', l: 'symlink' } as const
const isCount = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0

/**
 * Decodes one entry and checks it against the data-directory rule (src/pg/data-dir-entry.ts) and its own shape:
 * a repository is untrusted input (invariant 8), so an entry that could lead a restore astray is an integrity
 * error naming it, never something to make sense of.
 */
function unpack(p: Packed, where: string): FileEntry {
  if (!Array.isArray(p) || p.length !== 9 || typeof p[0] !== 'string') throw new IntegrityError(`${where}: malformed file entry`, { hint: DAMAGED_HINT })
  const bad = (why: string) => new IntegrityError(`${where}: entry '${printableName(p[0])}' ${why}`, { hint: DAMAGED_HINT })
  const type = TYPES[p[1] as keyof typeof TYPES]
  if (type === undefined) throw bad(`has unknown type ${JSON.stringify(p[1])}`)
  const [, , mode, mtime, sizeBytes, crc, extents, fileMap, linkTarget] = p
  if (!Number.isInteger(mode) || !Number.isSafeInteger(mtime) || !isCount(sizeBytes)) throw bad('has a malformed mode, time or size')
  const e: FileEntry = { path: p[0], type, mode, mtime, sizeBytes }
  if (crc !== null) {
    if (typeof crc !== 'string' || !CRC_HEX.test(crc)) throw bad('has a malformed CRC-32C')
    e.crc32c = crc
  }
  if (extents !== null) e.extents = unpackExtents(extents, sizeBytes, bad)
  if (typeof fileMap === 'string') {
    if (!BLOB_ID.test(fileMap)) throw bad('has a malformed file map id')
    e.fileMap = fileMap
  } else if (fileMap !== null) e.fileMap = unpackInlineFileMap(fileMap, e, bad)
  if (linkTarget !== null) {
    if (typeof linkTarget !== 'string') throw bad('has a malformed link target')
    e.linkTarget = linkTarget
  }
  const problem = dataDirEntryProblem(e)
  if (problem) throw bad(`is not allowed: ${problem}`)
  if (type !== 'file' && (sizeBytes !== 0 || e.extents || e.fileMap || e.crc32c)) throw bad(`is a ${type} with content`)
  if (type === 'file' && !e.extents && !e.fileMap && sizeBytes !== 0) throw bad(`has ${sizeBytes} bytes but no content`)
  return e
}

/** Inline extents: well-formed and tiling [0, sizeBytes) in order, as file maps must (file-map.ts checkShape). */
function unpackExtents(raw: unknown, sizeBytes: number, bad: (why: string) => Error): Extent[] {
  if (!Array.isArray(raw)) throw bad('has malformed extents')
  const out: Extent[] = []
  let at = 0
  for (const x of raw) {
    if (!Array.isArray(x) || x.length !== 4) throw bad('has a malformed extent')
    const [offset, length, blob, blobOffset] = x
    if (!isCount(offset) || !isCount(length) || length === 0 || !isCount(blobOffset)) throw bad('has an extent with a malformed offset or length')
    if (blob !== null && (typeof blob !== 'string' || !BLOB_ID.test(blob))) throw bad('has an extent with a malformed blob id')
    if (offset !== at) throw bad(`has extents that do not tile the file: one starts at ${offset}, expected ${at}`)
    at += length
    out.push({ offset, length, blob, blobOffset: blob === null ? 0 : blobOffset })
  }
  if (at !== sizeBytes) throw bad(`has extents covering ${at} bytes of a ${sizeBytes}-byte file`)
  return out
}

const DAMAGED_HINT = "the repository's file list is damaged or was altered; run 'pgkeep verify' and restore another backup with --backup"

/** One entry's line in a chunk. */
export function entryLine(e: FileEntry): string {
  return JSON.stringify(pack(e))
}

/** The bytes of a file list chunk holding `entries` (in path order, at most FILE_LIST_CHUNK_ENTRIES): JSON lines. */
export function encodeChunk(entries: readonly FileEntry[]): Buffer {
  return chunkOfLines(entries.map(entryLine))
}

/** The bytes of a file list chunk of these lines. */
export function chunkOfLines(lines: readonly string[]): Buffer {
  return Buffer.from(lines.join('\n') + '\n')
}

/**
 * Decodes a chunk of a file list: every entry checked (see unpack), paths strictly increasing, and, when the
 * chunk's summary is given, its first and last paths and count as the backup record says.
 * @throws IntegrityError naming `where` and the entry
 */
export function decodeChunk(bytes: Buffer, where: string, expected?: FileListChunk): FileEntry[] {
  const out: FileEntry[] = []
  // Line by line from the bytes: the chunk as one string (0.5-1 MiB) would be a fresh large object each time, its
  // pages faulted in, and split() would copy it again; a restore decodes every chunk twice.
  for (let at = 0; at < bytes.length; ) {
    let end = bytes.indexOf(NEWLINE, at)
    if (end < 0) end = bytes.length
    const line = bytes.toString('utf8', at, end)
    at = end + 1
    if (line === '') continue
    let p: Packed
    try {
      p = JSON.parse(line)
    } catch {
      throw new IntegrityError(`${where}: a file entry is not valid JSON`, { hint: DAMAGED_HINT })
    }
    const e = unpack(p, where)
    const prev = out[out.length - 1]
    if (prev && !(prev.path < e.path)) {
      throw new IntegrityError(`${where}: entry '${printableName(e.path)}' is out of order or listed twice`, { hint: DAMAGED_HINT })
    }
    out.push(e)
  }
  if (expected && (out.length !== expected.count || out[0]?.path !== expected.first || out[out.length - 1]?.path !== expected.last)) {
    throw new IntegrityError(
      `${where}: holds ${out.length} entries from '${printableName(out[0]?.path)}' to '${printableName(out[out.length - 1]?.path)}', the backup record says ${expected.count} from '${printableName(expected.first)}' to '${printableName(expected.last)}'`,
      {
        hint: DAMAGED_HINT,
      },
    )
  }
  return out
}

/** Reads a file list: every entry in path order, or one entry by path (a few chunks cached). */
export class FileListReader {
  private readonly cache = new Map<number, Map<string, FileEntry>>()

  /**
   * @param owner names the list in messages, e.g. `backup 20261121T055301Z-3fa9c2`
   */
  constructor(
    private readonly source: MetaSource,
    readonly summary: FileListSummary,
    private readonly cacheChunks = 8,
    private readonly owner = 'backup',
  ) {}

  /**
   * Every entry in path order, a chunk's entries at a time: a pass over many files takes them in a plain loop, not
   * an async step each (a restore of 20,000 tables passes over 61,000 entries twice).
   */
  async *chunks(o: { signal?: AbortSignal } = {}): AsyncGenerator<FileEntry[]> {
    for (const c of this.summary.chunks) yield await this.#decode(c, o)
  }

  /** Every entry in path order. */
  async *entries(o: { signal?: AbortSignal } = {}): AsyncGenerator<FileEntry> {
    for await (const chunk of this.chunks(o)) yield* chunk
  }

  #decode(c: FileListChunk, o: { signal?: AbortSignal }): Promise<FileEntry[]> {
    return this.source.readBlob(c.blob, o).then((bytes) => decodeChunk(bytes, `${this.owner}, file list chunk '${c.blob}'`, c))
  }

  async get(path: string, o: { signal?: AbortSignal } = {}): Promise<FileEntry | undefined> {
    const chunks = this.summary.chunks
    let lo = 0
    let hi = chunks.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      if (path < chunks[mid].first) hi = mid - 1
      else if (path > chunks[mid].last) lo = mid + 1
      else return (await this.chunk(mid, o)).get(path)
    }
    return undefined
  }

  private async chunk(i: number, o: { signal?: AbortSignal }): Promise<Map<string, FileEntry>> {
    let m = this.cache.get(i)
    if (m) {
      // Refresh its place in the LRU order.
      this.cache.delete(i)
      this.cache.set(i, m)
      return m
    }
    m = new Map((await this.#decode(this.summary.chunks[i]!, o)).map((e) => [e.path, e]))
    this.cache.set(i, m)
    if (this.cache.size > this.cacheChunks) this.cache.delete(this.cache.keys().next().value!)
    return m
  }
}
