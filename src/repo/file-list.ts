// The file list of a backup: one entry per file, directory and symlink of the data directory and its
// tablespaces, sorted by path and cut into chunks stored as `meta` blobs (JSON lines). The backup record keeps only
// the chunk directory, so neither writing nor reading a backup holds every entry of a huge cluster at once when
// reading, and lookups by path load one chunk.

import { FormatError } from '../errors.js'
import type { BlobId } from './blob.js'
import type { Extent } from './file-map.js'

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
  /** Content of an ordinary file. */
  extents?: Extent[]
  /** Content of a relation file: the id of its file map blob. */
  fileMap?: BlobId
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

/** Entries per chunk: about 0.5–1 MiB of JSON. */
export const FILE_LIST_CHUNK_ENTRIES = 4096

export interface MetaSink {
  putBlob(type: 'meta', bytes: Uint8Array, o?: { signal?: AbortSignal }): Promise<{ id: BlobId; stored: boolean }>
}

export interface MetaSource {
  readBlob(id: BlobId, o?: { signal?: AbortSignal }): Promise<Buffer>
}

type Packed = [string, 'f' | 'd' | 'l', number, number, number, string | null, (string | number | null)[][] | null, string | null, string | null]

function pack(e: FileEntry): Packed {
  return [
    e.path,
    e.type === 'file' ? 'f' : e.type === 'directory' ? 'd' : 'l',
    e.mode,
    e.mtime,
    e.sizeBytes,
    e.crc32c ?? null,
    e.extents ? e.extents.map((x) => [x.offset, x.length, x.blob, x.blobOffset]) : null,
    e.fileMap ?? null,
    e.linkTarget ?? null,
  ]
}

function unpack(p: Packed, where: string): FileEntry {
  if (!Array.isArray(p) || p.length !== 9 || typeof p[0] !== 'string') throw new FormatError(`${where}: malformed file entry`)
  const e: FileEntry = { path: p[0], type: p[1] === 'f' ? 'file' : p[1] === 'd' ? 'directory' : 'symlink', mode: p[2], mtime: p[3], sizeBytes: p[4] }
  if (p[5] !== null) e.crc32c = p[5]
  if (p[6] !== null) e.extents = p[6].map((x) => ({ offset: x[0] as number, length: x[1] as number, blob: x[2] as string | null, blobOffset: x[3] as number }))
  if (p[7] !== null) e.fileMap = p[7]
  if (p[8] !== null) e.linkTarget = p[8]
  return e
}

const byPath = (a: FileEntry, b: FileEntry) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)

/**
 * Collects entries (in any order) and writes them sorted. Entries are kept in memory until finish(): about 150
 * bytes each plus their extents (relation files keep theirs in file map blobs), so a million files cost ~200 MB.
 */
export class FileListWriter {
  private readonly entries: FileEntry[] = []

  add(e: FileEntry): void {
    this.entries.push(e)
  }

  get count(): number {
    return this.entries.length
  }

  async finish(sink: MetaSink, o: { signal?: AbortSignal } = {}): Promise<FileListSummary> {
    this.entries.sort(byPath)
    const chunks: FileListChunk[] = []
    let sizeBytes = 0
    for (let i = 0; i < this.entries.length; i += FILE_LIST_CHUNK_ENTRIES) {
      const part = this.entries.slice(i, i + FILE_LIST_CHUNK_ENTRIES)
      for (let k = 1; k < part.length; k++) {
        if (part[k].path === part[k - 1].path) throw new FormatError(`file '${part[k].path}' appears twice in the backup`)
      }
      for (const e of part) sizeBytes += e.type === 'file' ? e.sizeBytes : 0
      const text = part.map((e) => JSON.stringify(pack(e))).join('\n') + '\n'
      const { id } = await sink.putBlob('meta', Buffer.from(text), o)
      chunks.push({ first: part[0].path, last: part[part.length - 1].path, count: part.length, blob: id })
    }
    return { count: this.entries.length, sizeBytes, chunks }
  }
}

export function decodeChunk(bytes: Buffer, where: string): FileEntry[] {
  const out: FileEntry[] = []
  for (const line of bytes.toString('utf8').split('\n')) {
    if (line === '') continue
    let p: Packed
    try {
      p = JSON.parse(line)
    } catch {
      throw new FormatError(`${where}: a file entry is not valid JSON`)
    }
    out.push(unpack(p, where))
  }
  return out
}

/** Reads a file list: every entry in path order, or one entry by path (a few chunks cached). */
export class FileListReader {
  private readonly cache = new Map<number, Map<string, FileEntry>>()

  constructor(
    private readonly source: MetaSource,
    readonly summary: FileListSummary,
    private readonly cacheChunks = 8,
  ) {}

  async *entries(o: { signal?: AbortSignal } = {}): AsyncGenerator<FileEntry> {
    for (const c of this.summary.chunks) {
      for (const e of decodeChunk(await this.source.readBlob(c.blob, o), `file list chunk '${c.blob}'`)) yield e
    }
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
    const c = this.summary.chunks[i]
    m = new Map(decodeChunk(await this.source.readBlob(c.blob, o), `file list chunk '${c.blob}'`).map((e) => [e.path, e]))
    this.cache.set(i, m)
    if (this.cache.size > this.cacheChunks) this.cache.delete(this.cache.keys().next().value!)
    return m
  }
}
