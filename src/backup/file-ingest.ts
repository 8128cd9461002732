// Turns the content of one file from the server into blobs and a description of where its bytes live.
// Relation files go window by window (128 pages); with a parent backup's file map, windows and pages whose hashes
// are unchanged point at the parent's blobs and only changed pages are stored. Other files are cut into 1 MiB blobs.
// The per-byte work (hashes, CRC-32C, zstd, encryption) runs on a WindowPool's worker threads when one is available,
// windows ahead of the one being placed; results are placed in file order, so the outcome does not depend on it.

import { crc32c, crc32cCombine } from '../pg/crc32c.js'
import { isAllZero } from '../pg/page.js'
import type { BlobId } from '../repo/blob.js'
import { AssertionError, FormatError } from '../errors.js'
import {
  type Extent,
  extentsIn,
  type FileMap,
  PAGE_BYTES,
  PAGE_HASH_BYTES,
  pageCountOf,
  pushExtent,
  WINDOW_BYTES,
  WINDOW_PAGES,
  type WindowHash,
} from '../repo/file-map.js'
import { Repository } from '../repo/repository.js'
import { sharedWindowPool, type WindowFacts, type WindowPool } from './window-pool.js'
import { hashPages } from './window-work.js'

export { hashPages }

/** Where ingested content goes: the Repository fits. */
export interface BlobSink {
  blobIdOf(bytes: Uint8Array): BlobId
  putBlob(type: 'data', bytes: Uint8Array, o?: { signal?: AbortSignal }): Promise<{ id: BlobId; stored: boolean }>
  hasBlob(id: BlobId): boolean
  /**
   * Stores a blob hashed and encoded elsewhere (Repository.putEncodedBlob). Without it, ingest hashes and encodes
   * on the calling thread.
   */
  putEncodedBlob?(
    type: 'data',
    id: BlobId,
    stored: Buffer,
    flags: number,
    plainLength: number,
    o?: { signal?: AbortSignal },
  ): Promise<{ id: BlobId; stored: boolean }>
  /**
   * The worker pool bound to this sink's codec for a file of `fileBytes`, or undefined for the calling thread; a
   * Repository sink uses sharedWindowPool(repository, fileBytes).
   */
  windowPool?(fileBytes: number): WindowPool | undefined
}

/** How an ingest does its per-byte work. */
export interface IngestOptions {
  /**
   * A pool to use for every window of the file (the sink must have putEncodedBlob), or null for the calling thread
   * only. Default: the sink's pool when it has one for a file of this size (see sharedWindowPool).
   */
  pool?: WindowPool | null
}

export interface IngestStats {
  /** Plain bytes of blobs this file added to the repository (0 for content already there). */
  storedBytes: number
  /** Bytes of the file taken from the parent backup without storing anything. */
  reusedBytes: number
}

/** A parent's blob that the new backup would reference is gone: the parent cannot be trusted as a base. */
export class ParentBlobMissingError extends Error {
  constructor(readonly blob: BlobId) {
    super(`blob '${blob}' of the parent backup is missing from the repository`)
  }
}

const ZERO_HASH = Buffer.alloc(PAGE_HASH_BYTES)

/** The pool for ingesting a file of `fileBytes` into `sink` as `o` asks, or undefined for the calling thread. */
export function ingestPoolFor(sink: BlobSink, o: IngestOptions, fileBytes: number): WindowPool | undefined {
  if (o.pool === null) return undefined
  if (o.pool !== undefined) {
    if (!sink.putEncodedBlob) throw new AssertionError('ingest through a window pool needs a sink with putEncodedBlob')
    return o.pool
  }
  if (!sink.putEncodedBlob) return undefined
  return sink.windowPool ? sink.windowPool(fileBytes) : sink instanceof Repository ? sharedWindowPool(sink, fileBytes) : undefined
}

/**
 * Stores blobs whose ids are already known, through a pool: each is encoded on a worker, then handed to the sink's
 * putEncodedBlob in the order added. At most `pool.maxInFlight` wait; add() waits beyond that (backpressure).
 */
export class PooledBlobStore {
  private readonly queue: Promise<void>[] = []
  private last: Promise<void> = Promise.resolve()
  /** Ids added here: a second window with equal content is not encoded twice. */
  private readonly added = new Set<BlobId>()

  constructor(
    private readonly pool: WindowPool,
    private readonly sink: BlobSink,
    private readonly stats: IngestStats,
    private readonly signal?: AbortSignal,
  ) {}

  /** Stores `bytes` (a view over a pool buffer, which passes to this store) as blob `id` unless it exists. */
  async add(id: BlobId, bytes: Buffer): Promise<void> {
    // Known blobs are not encoded at all: the check the repository would make after the work, made before it.
    if (this.added.has(id) || this.sink.hasBlob(id)) {
      this.pool.recycle(bytes)
      return
    }
    this.added.add(id)
    const length = bytes.length
    const encoded = this.pool.encode(bytes)
    const previous = this.last
    const done = (async () => {
      const e = await encoded
      this.pool.recycle(e.window)
      await previous // puts stay in file order, so packs hold a file's blobs in order
      const r = await this.sink.putEncodedBlob!('data', id, e.stored, e.flags, length, { signal: this.signal })
      if (r.stored) this.stats.storedBytes += length
    })()
    // Observed by drain() or a later add(); a failed ingest may never get there.
    done.catch(() => {})
    this.last = done
    this.queue.push(done)
    while (this.queue.length > this.pool.maxInFlight) await this.queue.shift()
  }

  /** Resolves once every blob added is put (rejects with the first failure). */
  async drain(): Promise<void> {
    while (this.queue.length > 0) await this.queue.shift()
  }
}

export interface ExtentBuilderOptions {
  signal?: AbortSignal
  /** Changed pages are hashed, identified and encoded on this pool. */
  pool?: WindowPool
  /** With a pool: called with the page hash of every changed page once its blob is analyzed. */
  onPageHash?: (offset: number, hash: Buffer) => void
}

/**
 * Builds a file's extents in file order: ranges reused from the parent, holes, stored blobs, and changed pages that
 * are gathered into blobs of up to one window. Extents after waiting changed pages wait with them, so the list
 * stays in order.
 */
export class ExtentBuilder {
  readonly extents: Extent[] = []
  private changed: Buffer
  private changedPages = 0
  private pending: Extent[] = []
  private readonly signal: AbortSignal | undefined
  private readonly pool: WindowPool | undefined
  private readonly store: PooledBlobStore | undefined
  private readonly onPageHash: ((offset: number, hash: Buffer) => void) | undefined

  constructor(
    private readonly sink: BlobSink,
    private readonly stats: IngestStats,
    o: ExtentBuilderOptions = {},
  ) {
    this.signal = o.signal
    this.pool = o.pool
    this.onPageHash = o.onPageHash
    this.store = o.pool ? new PooledBlobStore(o.pool, sink, stats, o.signal) : undefined
    this.changed = o.pool ? o.pool.takeBuffer() : Buffer.allocUnsafe(WINDOW_BYTES)
  }

  /** True when blobs go through a pool (then changed pages' hashes come through onPageHash). */
  get pooled(): boolean {
    return this.pool !== undefined
  }

  /** The parent's bytes [offset, offset + length) stay as they are; their blobs must still exist. */
  reuse(parent: FileMap, offset: number, length: number): void {
    for (const e of extentsIn(parent, offset, length)) {
      if (e.blob !== null && !this.sink.hasBlob(e.blob)) throw new ParentBlobMissingError(e.blob)
      this.add(e)
    }
    this.stats.reusedBytes += length
  }

  hole(offset: number, length: number): void {
    this.add({ offset, length, blob: null, blobOffset: 0 })
  }

  /** Stores `bytes` as one blob at `offset` on the calling thread; resolves with its id. */
  async blob(bytes: Buffer, offset: number): Promise<BlobId> {
    const { id, stored } = await this.sink.putBlob('data', bytes, { signal: this.signal })
    if (stored) this.stats.storedBytes += bytes.length
    this.add({ offset, length: bytes.length, blob: id, blobOffset: 0 })
    return id
  }

  /**
   * With a pool: places blob `id` (already analyzed) at `offset` now and stores `bytes` in the background; `bytes`
   * is a view over a pool buffer and passes to the builder.
   */
  async pooledBlob(id: BlobId, bytes: Buffer, offset: number): Promise<void> {
    this.add({ offset, length: bytes.length, blob: id, blobOffset: 0 })
    await this.store!.add(id, bytes)
  }

  /** A changed page; stored with other changed pages of the file in blobs of up to one window. */
  async changedPage(page: Buffer, offset: number): Promise<void> {
    page.copy(this.changed, this.changedPages * PAGE_BYTES)
    this.pending.push({ offset, length: PAGE_BYTES, blob: '', blobOffset: this.changedPages * PAGE_BYTES })
    this.changedPages++
    if (this.changedPages === WINDOW_PAGES) await this.storeChanged()
  }

  /** Resolves with the extents once every blob is stored (put in the sink). */
  async finish(): Promise<Extent[]> {
    await this.storeChanged()
    await this.store?.drain()
    this.pool?.recycle(this.changed)
    return this.extents
  }

  private add(e: Extent): void {
    if (this.changedPages > 0) this.pending.push(e)
    else pushExtent(this.extents, e)
  }

  private async storeChanged(): Promise<void> {
    if (this.changedPages === 0) return
    const bytes = this.changed.subarray(0, this.changedPages * PAGE_BYTES)
    const pending = this.pending
    this.changedPages = 0
    this.pending = []
    let id: BlobId
    if (this.pool) {
      this.changed = this.pool.takeBuffer()
      const f = await this.pool.analyze(bytes, { crc: false, pageHashes: this.onPageHash !== undefined })
      // Changed pages are never all zeros (those are holes); the fallback keeps the result right regardless.
      id = f.id ?? this.sink.blobIdOf(f.window)
      if (this.onPageHash) {
        const hashes = f.pageHashes ?? Buffer.alloc((f.window.length / PAGE_BYTES) * PAGE_HASH_BYTES)
        for (const e of pending) {
          if (e.blob !== '') continue
          const at = (e.blobOffset / PAGE_BYTES) * PAGE_HASH_BYTES
          this.onPageHash(e.offset, hashes.subarray(at, at + PAGE_HASH_BYTES))
        }
      }
      for (const e of pending) pushExtent(this.extents, e.blob === '' ? { ...e, blob: id } : e)
      await this.store!.add(id, f.window)
    } else {
      const r = await this.sink.putBlob('data', bytes, { signal: this.signal })
      if (r.stored) this.stats.storedBytes += bytes.length
      id = r.id
      for (const e of pending) pushExtent(this.extents, e.blob === '' ? { ...e, blob: id } : e)
    }
  }
}

/**
 * Ingests a relation segment file whose size is a multiple of the page size. Push its bytes in order, then call
 * finish(). Memory: one window (1 MiB) plus up to one window of changed pages; with a pool, also up to
 * 2 × pool.maxInFlight windows being analyzed or stored.
 */
export class RelationFileIngest {
  readonly stats: IngestStats = { storedBytes: 0, reusedBytes: 0 }
  private readonly pool: WindowPool | undefined
  private window: Buffer
  private filled = 0
  /** File offset of the window being filled. */
  private offset = 0
  /** Bytes placed so far (windows are placed in order). */
  private placed = 0
  /** CRC-32C of the bytes placed so far. */
  private crc = 0
  private readonly windowHashes: WindowHash[] = []
  private readonly pageHashes: Buffer
  private readonly out: ExtentBuilder
  /** Windows sent to the pool and not placed yet, in file order. */
  private readonly ahead: Promise<WindowFacts>[] = []

  constructor(
    private readonly sink: BlobSink,
    readonly sizeBytes: number,
    private readonly parent: FileMap | undefined,
    signal?: AbortSignal,
    o: IngestOptions = {},
  ) {
    this.pageHashes = Buffer.alloc(pageCountOf(sizeBytes) * PAGE_HASH_BYTES)
    this.pool = ingestPoolFor(sink, o, sizeBytes)
    this.window = this.pool ? this.pool.takeBuffer() : Buffer.allocUnsafe(WINDOW_BYTES)
    this.out = new ExtentBuilder(sink, this.stats, { signal, pool: this.pool })
  }

  async push(chunk: Buffer): Promise<void> {
    let at = 0
    while (at < chunk.length) {
      const n = chunk.copy(this.window, this.filled, at)
      this.filled += n
      at += n
      if (this.filled === WINDOW_BYTES) await this.flushWindow()
    }
  }

  /** Completes the file; resolves with its file map and CRC-32C once all its blobs are stored. */
  async finish(): Promise<{ fileMap: FileMap; crc32c: number }> {
    if (this.filled > 0) await this.flushWindow()
    while (this.ahead.length > 0) await this.placeAnalyzed()
    const extents = await this.out.finish()
    this.pool?.recycle(this.window)
    if (this.placed !== this.sizeBytes) throw new FormatError(`relation file ended at ${this.placed} of ${this.sizeBytes} bytes`)
    return {
      fileMap: { sizeBytes: this.sizeBytes, windowHashes: this.windowHashes, pageHashes: this.pageHashes, extents },
      crc32c: this.crc,
    }
  }

  private async flushWindow(): Promise<void> {
    const w = this.window.subarray(0, this.filled)
    const offset = this.offset
    this.offset += w.length
    this.filled = 0
    if (!this.pool) {
      await this.placeHere(w, offset)
      return
    }
    // To a worker, and on with the next window; results are placed in order once enough are ahead.
    const k = offset / WINDOW_BYTES
    const p = this.parent
    const unchangedIf = p && k < p.windowHashes.length ? (p.windowHashes[k] ?? undefined) : undefined
    this.window = this.pool.takeBuffer()
    const facts = this.pool.analyze(w, { crc: true, pageHashes: true, unchangedIf })
    facts.catch(() => {}) // observed when placed; a failed ingest may never get there
    this.ahead.push(facts)
    while (this.ahead.length > this.pool.maxInFlight) await this.placeAnalyzed()
  }

  /** Places a window on the calling thread, computing what it needs here. */
  private async placeHere(w: Buffer, offset: number): Promise<void> {
    const k = this.windowHashes.length
    const firstPage = offset / PAGE_BYTES
    const p = this.parent
    this.crc = crc32cCombine(this.crc, crc32c(w), w.length)
    this.placed += w.length
    if (isAllZero(w)) {
      this.windowHashes.push(null)
      this.out.hole(offset, w.length)
    } else if (p === undefined || k >= p.windowHashes.length) {
      // Nothing to compare with: the window is one blob, its id the window's hash.
      this.windowHashes.push(await this.out.blob(w, offset))
      hashPages(w, this.pageHashes, firstPage * PAGE_HASH_BYTES)
    } else {
      const id = this.sink.blobIdOf(w)
      this.windowHashes.push(id)
      if (this.unchanged(id, k, w.length)) {
        this.reuseWindow(offset, w.length)
      } else {
        hashPages(w, this.pageHashes, firstPage * PAGE_HASH_BYTES)
        await this.placePages(w, firstPage)
      }
    }
  }

  /** Places the oldest window analyzed by the pool: the same decisions as placeHere, from the worker's results. */
  private async placeAnalyzed(): Promise<void> {
    const f = await this.ahead.shift()!
    const w = f.window
    const offset = this.placed
    const k = this.windowHashes.length
    const firstPage = offset / PAGE_BYTES
    const p = this.parent
    this.crc = crc32cCombine(this.crc, f.crc32c!, w.length)
    this.placed += w.length
    if (f.allZero) {
      this.windowHashes.push(null)
      this.out.hole(offset, w.length)
      this.pool!.recycle(w)
    } else if (p === undefined || k >= p.windowHashes.length) {
      this.windowHashes.push(f.id!)
      f.pageHashes!.copy(this.pageHashes, firstPage * PAGE_HASH_BYTES)
      await this.out.pooledBlob(f.id!, w, offset)
    } else {
      this.windowHashes.push(f.id!)
      if (this.unchanged(f.id!, k, w.length)) {
        this.reuseWindow(offset, w.length)
      } else {
        // The worker skips page hashes when the id matches the parent's; only a length mismatch gets here without.
        if (f.pageHashes) f.pageHashes.copy(this.pageHashes, firstPage * PAGE_HASH_BYTES)
        else hashPages(w, this.pageHashes, firstPage * PAGE_HASH_BYTES)
        await this.placePages(w, firstPage)
      }
      this.pool!.recycle(w)
    }
  }

  private unchanged(id: BlobId, k: number, length: number): boolean {
    const p = this.parent!
    return id === p.windowHashes[k] && Math.min(WINDOW_BYTES, p.sizeBytes - k * WINDOW_BYTES) === length
  }

  /** Unchanged window: the parent's page hashes and extents carry over. */
  private reuseWindow(offset: number, length: number): void {
    const from = (offset / PAGE_BYTES) * PAGE_HASH_BYTES
    this.parent!.pageHashes.copy(this.pageHashes, from, from, from + (length / PAGE_BYTES) * PAGE_HASH_BYTES)
    this.out.reuse(this.parent!, offset, length)
  }

  /** A changed window, page by page against the parent's page hashes (this window's are in pageHashes). */
  private async placePages(w: Buffer, firstPage: number): Promise<void> {
    const p = this.parent!
    const parentPages = pageCountOf(p.sizeBytes)
    for (let i = 0; i * PAGE_BYTES < w.length; i++) {
      const pageNo = firstPage + i
      const at = pageNo * PAGE_HASH_BYTES
      const offset = pageNo * PAGE_BYTES
      if (pageNo < parentPages && this.pageHashes.compare(p.pageHashes, at, at + PAGE_HASH_BYTES, at, at + PAGE_HASH_BYTES) === 0) {
        this.out.reuse(p, offset, PAGE_BYTES)
      } else if (this.pageHashes.compare(ZERO_HASH, 0, PAGE_HASH_BYTES, at, at + PAGE_HASH_BYTES) === 0) {
        this.out.hole(offset, PAGE_BYTES)
      } else {
        await this.out.changedPage(w.subarray(i * PAGE_BYTES, (i + 1) * PAGE_BYTES), offset)
      }
    }
  }
}

/**
 * Ingests any other file as blobs of up to 1 MiB (all-zero pieces become holes). Its size is not known ahead: the
 * pool is asked for (as for a file of one piece) once a whole piece has arrived, and used from then on; smaller
 * files stay on the calling thread. A pool given in the options is used from the first piece.
 */
export class PlainFileIngest {
  readonly stats: IngestStats = { storedBytes: 0, reusedBytes: 0 }
  readonly extents: Extent[] = []
  /** The pool in use, once chosen. */
  private pool: WindowPool | undefined
  private decided = false
  private store: PooledBlobStore | undefined
  private piece: Buffer
  private filled = 0
  /** Bytes placed so far (pieces are placed in order). */
  private placed = 0
  private crc = 0
  private readonly ahead: Promise<WindowFacts>[] = []

  constructor(
    private readonly sink: BlobSink,
    private readonly signal?: AbortSignal,
    private readonly options: IngestOptions = {},
  ) {
    // A buffer of its own (not a slice of Node's pool), so it can be handed to a worker if the file turns out big.
    this.piece = Buffer.allocUnsafe(WINDOW_BYTES)
  }

  async push(chunk: Buffer): Promise<void> {
    let at = 0
    while (at < chunk.length) {
      const n = chunk.copy(this.piece, this.filled, at)
      this.filled += n
      at += n
      if (this.filled === WINDOW_BYTES) await this.flushPiece()
    }
  }

  /** Completes the file once all its blobs are stored. */
  async finish(): Promise<{ extents: Extent[]; sizeBytes: number; crc32c: number }> {
    if (this.filled > 0) await this.flushPiece()
    while (this.ahead.length > 0) await this.placeAnalyzed()
    await this.store?.drain()
    if (this.store) this.pool!.recycle(this.piece)
    return { extents: this.extents, sizeBytes: this.placed, crc32c: this.crc }
  }

  private async flushPiece(): Promise<void> {
    const bytes = this.piece.subarray(0, this.filled)
    this.filled = 0
    if (!this.decided && (this.options.pool !== undefined || bytes.length === WINDOW_BYTES)) {
      this.decided = true
      this.pool = ingestPoolFor(this.sink, this.options, WINDOW_BYTES)
    }
    if (this.pool) {
      this.store ??= new PooledBlobStore(this.pool, this.sink, this.stats, this.signal)
      this.piece = this.pool.takeBuffer()
      const facts = this.pool.analyze(bytes, { crc: true, pageHashes: false })
      facts.catch(() => {}) // observed when placed
      this.ahead.push(facts)
      while (this.ahead.length > this.pool.maxInFlight) await this.placeAnalyzed()
      return
    }
    const offset = this.placed
    this.crc = crc32cCombine(this.crc, crc32c(bytes), bytes.length)
    this.placed += bytes.length
    if (isAllZero(bytes)) {
      pushExtent(this.extents, { offset, length: bytes.length, blob: null, blobOffset: 0 })
    } else {
      const { id, stored } = await this.sink.putBlob('data', bytes, { signal: this.signal })
      if (stored) this.stats.storedBytes += bytes.length
      pushExtent(this.extents, { offset, length: bytes.length, blob: id, blobOffset: 0 })
    }
  }

  private async placeAnalyzed(): Promise<void> {
    const f = await this.ahead.shift()!
    const offset = this.placed
    this.crc = crc32cCombine(this.crc, f.crc32c!, f.window.length)
    this.placed += f.window.length
    if (f.allZero) {
      pushExtent(this.extents, { offset, length: f.window.length, blob: null, blobOffset: 0 })
      this.pool!.recycle(f.window)
    } else {
      pushExtent(this.extents, { offset, length: f.window.length, blob: f.id!, blobOffset: 0 })
      await this.store!.add(f.id!, f.window)
    }
  }
}
