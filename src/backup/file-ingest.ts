// Turns the content of one file from the server into blobs and a description of where its bytes live.
// Relation files go window by window (128 pages); with a parent backup's file map, windows and pages whose hashes
// are unchanged point at the parent's blobs and only changed pages are stored. Other files are cut into 1 MiB blobs.

import { hash } from 'node:crypto'
import { crc32cInit, crc32cUpdate, crc32cFinal } from '../pg/crc32c.js'
import { isAllZero } from '../pg/page.js'
import type { BlobId } from '../repo/blob.js'
import { FormatError } from '../errors.js'
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

/** Where ingested content goes: the Repository fits. */
export interface BlobSink {
  blobIdOf(bytes: Uint8Array): BlobId
  putBlob(type: 'data', bytes: Uint8Array, o?: { signal?: AbortSignal }): Promise<{ id: BlobId; stored: boolean }>
  hasBlob(id: BlobId): boolean
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

/** First PAGE_HASH_BYTES of SHA-256 of each page of `bytes`, or zeros for an all-zero page. */
export function hashPages(bytes: Buffer, out: Buffer, outOffset: number): void {
  for (let p = 0; p * PAGE_BYTES < bytes.length; p++) {
    const page = bytes.subarray(p * PAGE_BYTES, (p + 1) * PAGE_BYTES)
    const at = outOffset + p * PAGE_HASH_BYTES
    if (isAllZero(page)) ZERO_HASH.copy(out, at)
    else hash('sha256', page, 'buffer').copy(out, at, 0, PAGE_HASH_BYTES)
  }
}

/**
 * Builds a file's extents in file order: ranges reused from the parent, holes, stored blobs, and changed pages that
 * are gathered into blobs of up to one window. Extents after waiting changed pages wait with them, so the list
 * stays in order.
 */
export class ExtentBuilder {
  readonly extents: Extent[] = []
  private readonly changed = Buffer.allocUnsafe(WINDOW_BYTES)
  private changedPages = 0
  private pending: Extent[] = []

  constructor(
    private readonly sink: BlobSink,
    private readonly stats: IngestStats,
    private readonly signal?: AbortSignal,
  ) {}

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

  /** Stores `bytes` as one blob at `offset`; resolves with its id. */
  async blob(bytes: Buffer, offset: number): Promise<BlobId> {
    const { id, stored } = await this.sink.putBlob('data', bytes, { signal: this.signal })
    if (stored) this.stats.storedBytes += bytes.length
    this.add({ offset, length: bytes.length, blob: id, blobOffset: 0 })
    return id
  }

  /** A changed page; stored with other changed pages of the file in blobs of up to one window. */
  async changedPage(page: Buffer, offset: number): Promise<void> {
    page.copy(this.changed, this.changedPages * PAGE_BYTES)
    this.pending.push({ offset, length: PAGE_BYTES, blob: '', blobOffset: this.changedPages * PAGE_BYTES })
    this.changedPages++
    if (this.changedPages === WINDOW_PAGES) await this.storeChanged()
  }

  async finish(): Promise<Extent[]> {
    await this.storeChanged()
    return this.extents
  }

  private add(e: Extent): void {
    if (this.changedPages > 0) this.pending.push(e)
    else pushExtent(this.extents, e)
  }

  private async storeChanged(): Promise<void> {
    if (this.changedPages === 0) return
    const bytes = this.changed.subarray(0, this.changedPages * PAGE_BYTES)
    const { id, stored } = await this.sink.putBlob('data', bytes, { signal: this.signal })
    if (stored) this.stats.storedBytes += bytes.length
    this.changedPages = 0
    const pending = this.pending
    this.pending = []
    for (const e of pending) pushExtent(this.extents, e.blob === '' ? { ...e, blob: id } : e)
  }
}

/**
 * Ingests a relation segment file whose size is a multiple of the page size. Push its bytes in order, then call
 * finish(). Memory: one window (1 MiB) plus up to one window of changed pages.
 */
export class RelationFileIngest {
  readonly stats: IngestStats = { storedBytes: 0, reusedBytes: 0 }
  private readonly window = Buffer.allocUnsafe(WINDOW_BYTES)
  private filled = 0
  private offset = 0
  private crc = crc32cInit()
  private readonly windowHashes: WindowHash[] = []
  private readonly pageHashes: Buffer
  private readonly out: ExtentBuilder

  constructor(
    private readonly sink: BlobSink,
    readonly sizeBytes: number,
    private readonly parent: FileMap | undefined,
    signal?: AbortSignal,
  ) {
    this.pageHashes = Buffer.alloc(pageCountOf(sizeBytes) * PAGE_HASH_BYTES)
    this.out = new ExtentBuilder(sink, this.stats, signal)
  }

  async push(chunk: Buffer): Promise<void> {
    this.crc = crc32cUpdate(this.crc, chunk)
    let at = 0
    while (at < chunk.length) {
      const n = chunk.copy(this.window, this.filled, at)
      this.filled += n
      at += n
      if (this.filled === WINDOW_BYTES) await this.flushWindow()
    }
  }

  /** Completes the file; resolves with its file map and CRC-32C. */
  async finish(): Promise<{ fileMap: FileMap; crc32c: number }> {
    if (this.filled > 0) await this.flushWindow()
    const extents = await this.out.finish()
    if (this.offset !== this.sizeBytes) throw new FormatError(`relation file ended at ${this.offset} of ${this.sizeBytes} bytes`)
    return {
      fileMap: { sizeBytes: this.sizeBytes, windowHashes: this.windowHashes, pageHashes: this.pageHashes, extents },
      crc32c: crc32cFinal(this.crc),
    }
  }

  private async flushWindow(): Promise<void> {
    const w = this.window.subarray(0, this.filled)
    const k = this.windowHashes.length
    const firstPage = this.offset / PAGE_BYTES
    const p = this.parent
    if (isAllZero(w)) {
      this.windowHashes.push(null)
      this.out.hole(this.offset, w.length)
    } else if (p === undefined || k >= p.windowHashes.length) {
      // Nothing to compare with: the window is one blob, its id the window's hash.
      this.windowHashes.push(await this.out.blob(w, this.offset))
      hashPages(w, this.pageHashes, firstPage * PAGE_HASH_BYTES)
    } else {
      const id = this.sink.blobIdOf(w)
      this.windowHashes.push(id)
      const parentWindowBytes = Math.min(WINDOW_BYTES, p.sizeBytes - k * WINDOW_BYTES)
      if (id === p.windowHashes[k] && parentWindowBytes === w.length) {
        // Unchanged window: the parent's page hashes and extents carry over.
        const from = firstPage * PAGE_HASH_BYTES
        p.pageHashes.copy(this.pageHashes, from, from, from + (w.length / PAGE_BYTES) * PAGE_HASH_BYTES)
        this.out.reuse(p, this.offset, w.length)
      } else {
        hashPages(w, this.pageHashes, firstPage * PAGE_HASH_BYTES)
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
    this.offset += w.length
    this.filled = 0
  }
}

/** Ingests any other file as blobs of up to 1 MiB (all-zero pieces become holes). */
export class PlainFileIngest {
  readonly stats: IngestStats = { storedBytes: 0, reusedBytes: 0 }
  readonly extents: Extent[] = []
  private readonly piece = Buffer.allocUnsafe(WINDOW_BYTES)
  private filled = 0
  private offset = 0
  private crc = crc32cInit()

  constructor(
    private readonly sink: BlobSink,
    private readonly signal?: AbortSignal,
  ) {}

  async push(chunk: Buffer): Promise<void> {
    this.crc = crc32cUpdate(this.crc, chunk)
    let at = 0
    while (at < chunk.length) {
      const n = chunk.copy(this.piece, this.filled, at)
      this.filled += n
      at += n
      if (this.filled === WINDOW_BYTES) await this.flushPiece()
    }
  }

  async finish(): Promise<{ extents: Extent[]; sizeBytes: number; crc32c: number }> {
    if (this.filled > 0) await this.flushPiece()
    return { extents: this.extents, sizeBytes: this.offset, crc32c: crc32cFinal(this.crc) }
  }

  private async flushPiece(): Promise<void> {
    const bytes = this.piece.subarray(0, this.filled)
    if (isAllZero(bytes)) {
      pushExtent(this.extents, { offset: this.offset, length: bytes.length, blob: null, blobOffset: 0 })
    } else {
      const { id, stored } = await this.sink.putBlob('data', bytes, { signal: this.signal })
      if (stored) this.stats.storedBytes += bytes.length
      pushExtent(this.extents, { offset: this.offset, length: bytes.length, blob: id, blobOffset: 0 })
    }
    this.offset += bytes.length
    this.filled = 0
  }
}
