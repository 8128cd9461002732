// Copies what one backup's record references: its file list chunks, every file's content (inline extents, or a
// relation file's file map and the blobs it names) and the pieces of the server's manifest. Blob ids change when
// either repository is encrypted, so everything that names blobs is rewritten with the target's ids; the structure
// (entries, chunk boundaries, extents, page hashes) stays exactly as it was. A backup copied before (the base: the
// same backup in both repositories) gives, file by file, the target ids of the blobs the two backups share, so an
// incremental copy reads only what changed.

import {
  type BackupRecord,
  type BlobId,
  decodeChunk,
  decodeFileMap,
  encodeChunk,
  encodeFileMap,
  type Extent,
  type FileEntry,
  type FileListChunk,
  FileListReader,
  type FileListSummary,
  type FileMap,
  type FileMapRef,
  type Repository,
  UNKNOWN_WINDOW,
  type WindowHash,
} from '../repo/index.js'
import type { BlobMapper } from './blob-mapper.js'

/** A backup held by both repositories, whose pairs of ids a copy may rely on. */
export interface CopyBase {
  source: BackupRecord
  target: BackupRecord
}

/** Files translated at once (their blobs are read within the mapper's bound). */
const FILES_AT_ONCE = 8

export interface BackupFilesCopierOptions {
  signal?: AbortSignal
  /** Told after each chunk of the file list, with the number of entries it held. */
  onEntries?: (count: number) => void
}

/** Copies one backup's files and server manifest; `copy()` resolves with what the target's record references. */
export class BackupFilesCopier {
  readonly #target: Repository
  readonly #mapper: BlobMapper
  readonly #rec: BackupRecord
  readonly #base: { id: string; source: FileListReader; target: FileListReader; chunks: Map<BlobId, FileListChunk> } | undefined
  readonly #o: BackupFilesCopierOptions

  constructor(source: Repository, target: Repository, mapper: BlobMapper, rec: BackupRecord, base: CopyBase | undefined, o: BackupFilesCopierOptions = {}) {
    this.#target = target
    this.#mapper = mapper
    this.#rec = rec
    this.#o = o
    if (base) {
      this.#base = {
        id: base.source.id,
        source: new FileListReader(source, base.source.files, 8, `backup ${base.source.id}`),
        target: new FileListReader(target, base.target.files, 8, `backup ${base.target.id} in the target`),
        chunks: chunkPairs(base.source.files, base.target.files),
      }
    }
  }

  /** Copies everything; resolves with the target's file list summary and server manifest pieces. */
  async copy(): Promise<{ files: FileListSummary; serverManifest: BlobId[] }> {
    const chunks: FileListChunk[] = []
    for (const c of this.#rec.files.chunks) chunks.push(await this.#copyChunk(c))
    const serverManifest = await Promise.all(this.#rec.serverManifest.map((id) => this.#mapper.map(id, 'meta')))
    return { files: { ...this.#rec.files, chunks }, serverManifest }
  }

  async #copyChunk(c: FileListChunk): Promise<FileListChunk> {
    // A chunk equal to one of the base's: the base's copy of it names only blobs the target holds (its record exists).
    const same = this.#base?.chunks.get(c.blob)
    if (same && this.#mapper.inTarget(same.blob)) {
      this.#o.onEntries?.(c.count)
      return { ...c, blob: same.blob }
    }
    const entries = decodeChunk(await this.#mapper.read(c.blob), `backup ${this.#rec.id}, file list chunk '${c.blob}'`, c)
    // The base's entries of the same paths, looked up in order (its reader caches the chunks it walks through).
    const bases: ([FileEntry, FileEntry] | undefined)[] = []
    for (const e of entries) bases.push(await this.#baseEntries(e.path))
    const out: FileEntry[] = new Array(entries.length)
    let next = 0
    const worker = async () => {
      while (next < entries.length) {
        const i = next++
        out[i] = await this.#copyEntry(entries[i]!, bases[i])
      }
    }
    await Promise.all(Array.from({ length: Math.min(FILES_AT_ONCE, entries.length) }, worker))
    const id = (await this.#target.putBlob('meta', encodeChunk(out), { signal: this.#o.signal })).id
    this.#o.onEntries?.(c.count)
    return { ...c, blob: id }
  }

  /** The entries of `path` in the base backup, source and target, when both exist and describe the same file. */
  async #baseEntries(path: string): Promise<[FileEntry, FileEntry] | undefined> {
    if (!this.#base) return undefined
    const s = await this.#base.source.get(path, { signal: this.#o.signal })
    if (!s) return undefined
    const t = await this.#base.target.get(path, { signal: this.#o.signal })
    const same = t && s.type === t.type && s.sizeBytes === t.sizeBytes && s.crc32c === t.crc32c && !s.fileMap === !t.fileMap && !s.extents === !t.extents
    return same ? [s, t] : undefined
  }

  async #copyEntry(e: FileEntry, base: [FileEntry, FileEntry] | undefined): Promise<FileEntry> {
    // A relation file may list its extents beside its map: both are translated, the same blobs to the same ids.
    const out = e.fileMap ? { ...e, fileMap: await this.#copyFileMap(e, base) } : { ...e }
    if (!e.extents) return out
    const hints = base?.[0].extents && base[1].extents ? extentPairs(base[0].extents, base[1].extents) : undefined
    return { ...out, extents: await this.#mapExtents(e.extents, hints) }
  }

  /**
   * Copies a relation file's map (and every blob it names); resolves with the map's reference in the target. An
   * inline map stays as it is: its page hashes and CRCs do not depend on the repository, and its blobs are its
   * entry's extents, copied with them.
   */
  async #copyFileMap(e: FileEntry, entries: [FileEntry, FileEntry] | undefined): Promise<FileMapRef> {
    const id = e.fileMap!
    if (typeof id !== 'string') return id
    // The base's maps of the file, when it was a relation file there too.
    const [sourceBase, targetBase] = entries ?? []
    const base = typeof sourceBase?.fileMap === 'string' && typeof targetBase?.fileMap === 'string' ? [sourceBase.fileMap, targetBase.fileMap] : undefined
    // The file did not change since the base: the base's copy of its map serves.
    if (base && base[0] === id && this.#mapper.inTarget(base[1])) return base[1]
    // A map the target holds outside a complete backup may name blobs that never got there (a copy killed
    // between its packs' uploads): it is read and its blobs are checked like any other.
    const what = `file map of '${e.path}' in backup ${this.#rec.id}`
    const m = decodeFileMap(await this.#mapper.read(id), what)
    let blobHints: Map<BlobId, BlobId> | undefined
    let windowHints: Map<BlobId, BlobId> | undefined
    if (base) {
      const [s, t] = await Promise.all([this.#mapper.read(base[0]), this.#target.readBlob(base[1], { signal: this.#o.signal })])
      const sm = decodeFileMap(s, `file map of '${e.path}' in backup ${this.#base!.id}`)
      const tm = decodeFileMap(t, `file map of '${e.path}' in the target's copy of the base backup`)
      blobHints = extentPairs(sm.extents, tm.extents)
      windowHints = blobHints && windowPairs(sm, tm)
    }
    const translated = await this.#translate(m, blobHints, windowHints)
    return (await this.#target.putBlob('meta', encodeFileMap(translated), { signal: this.#o.signal })).id
  }

  /**
   * The map with the target's ids: every extent's blob copied, every window hash translated. A window hash is the
   * id of the window's bytes as a blob, so it translates like a blob id when it names a blob the map uses (a window
   * stored whole) or one whose pair is known; otherwise it becomes "unknown", which makes the next incremental
   * backup in the target compare that window page by page (page hashes do not depend on the repository) instead
   * of reading back the window's bytes here.
   */
  async #translate(m: FileMap, blobHints?: ReadonlyMap<BlobId, BlobId>, windowHints?: ReadonlyMap<BlobId, BlobId>): Promise<FileMap> {
    const extents = await this.#mapExtents(m.extents, blobHints)
    const byBlob = new Map<BlobId, BlobId>()
    for (const [i, x] of m.extents.entries()) if (x.blob !== null) byBlob.set(x.blob, extents[i]!.blob!)
    // Version 2 maps have no window hashes (page hashes do not depend on the repository); version 1 maps do.
    const windowHashes: WindowHash[] | undefined = m.windowHashes?.map((w) => {
      if (w === null || w === UNKNOWN_WINDOW) return w
      return byBlob.get(w) ?? windowHints?.get(w) ?? this.#mapper.known(w) ?? UNKNOWN_WINDOW
    })
    return {
      sizeBytes: m.sizeBytes,
      pageHashAlgorithm: m.pageHashAlgorithm,
      ...(windowHashes ? { windowHashes } : {}),
      pageHashes: m.pageHashes,
      ...(m.pageCrcs ? { pageCrcs: m.pageCrcs } : {}),
      extents,
    }
  }

  /** Extents with every blob copied and named by its target id. */
  async #mapExtents(extents: readonly Extent[], hints: ReadonlyMap<BlobId, BlobId> | undefined): Promise<Extent[]> {
    const ids = [...new Set(extents.map((x) => x.blob).filter((b): b is BlobId => b !== null))]
    const mapped = new Map<BlobId, BlobId>()
    await Promise.all(ids.map(async (id) => mapped.set(id, await this.#mapper.map(id, 'data', hints))))
    return extents.map((x) => (x.blob === null ? { ...x } : { ...x, blob: mapped.get(x.blob)! }))
  }
}

/**
 * Pairs of ids from two lists of extents that describe the same content (a backup and its copy): the same offsets,
 * lengths, holes and blob offsets, extent by extent. Undefined when the structure differs anywhere or a source id
 * would pair with two target ids: then nothing is trusted.
 */
export function extentPairs(source: readonly Extent[], target: readonly Extent[]): Map<BlobId, BlobId> | undefined {
  if (source.length !== target.length) return undefined
  const pairs = new Map<BlobId, BlobId>()
  for (let i = 0; i < source.length; i++) {
    const s = source[i]!
    const t = target[i]!
    if (s.offset !== t.offset || s.length !== t.length || s.blobOffset !== t.blobOffset || (s.blob === null) !== (t.blob === null)) return undefined
    if (s.blob === null) continue
    const seen = pairs.get(s.blob)
    if (seen !== undefined && seen !== t.blob) return undefined
    pairs.set(s.blob, t.blob!)
  }
  return pairs
}

/** Pairs of window hashes of a file map and its copy (windows unknown on either side give none). */
function windowPairs(source: FileMap, target: FileMap): Map<BlobId, BlobId> | undefined {
  const theirs = target.windowHashes
  if (!source.windowHashes || !theirs) return new Map()
  if (source.windowHashes.length !== theirs.length) return undefined
  const pairs = new Map<BlobId, BlobId>()
  source.windowHashes.forEach((s, k) => {
    const t = theirs[k]
    if (s !== null && t !== null && t !== undefined && s !== UNKNOWN_WINDOW && t !== UNKNOWN_WINDOW) pairs.set(s, t)
  })
  return pairs
}

/** Chunks of a backup's file list and of its copy, paired by position when both lists are cut alike. */
function chunkPairs(source: FileListSummary, target: FileListSummary): Map<BlobId, FileListChunk> {
  const pairs = new Map<BlobId, FileListChunk>()
  if (source.chunks.length !== target.chunks.length) return pairs
  source.chunks.forEach((s, i) => {
    const t = target.chunks[i]!
    if (s.first === t.first && s.last === t.last && s.count === t.count) pairs.set(s.blob, t)
  })
  return pairs
}
