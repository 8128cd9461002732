// Ingests a relation segment file (a whole number of 8 KB pages) window by window (128 pages). Every window is
// analysed by the repository's window store (page hashes, blob id, CRC-32C, all-zero), several ahead of the one
// being placed when the store has workers; windows are placed in file order, so the outcome does not depend on
// where the work ran. With a parent backup's file map, unchanged windows and pages point at the parent's blobs
// and only changed pages are stored; without one, each window is one blob whose id is the window's hash.

import { FormatError } from '../errors.js'
import { crc32cCombine } from '../pg/crc32c.js'
import {
  type FileMap,
  hashPages,
  PAGE_BYTES,
  PAGE_HASH_BYTES,
  pageCountOf,
  WINDOW_BYTES,
  type WindowFacts,
  type WindowHash,
  type WindowStore,
} from '../repo/index.js'
import { ExtentBuilder, type IngestStats } from './extent-builder.js'

const ZERO_HASH = Buffer.alloc(PAGE_HASH_BYTES)

/**
 * Push the file's bytes in order, then call finish(). Memory: the windows in analysis (the store's maxAhead), the
 * one being filled, and up to one window of changed pages.
 */
export class RelationFileIngest {
  readonly stats: IngestStats = { storedBytes: 0, reusedBytes: 0 }
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
  /** Windows in analysis and not placed yet, in file order. */
  private readonly ahead: Promise<WindowFacts>[] = []

  constructor(
    private readonly store: WindowStore,
    readonly sizeBytes: number,
    private readonly parent: FileMap | undefined,
  ) {
    this.pageHashes = Buffer.alloc(pageCountOf(sizeBytes) * PAGE_HASH_BYTES)
    this.window = store.takeBuffer()
    this.out = new ExtentBuilder(store, this.stats)
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
    while (this.ahead.length > 0) await this.placeNext()
    const extents = await this.out.finish()
    this.store.recycle(this.window)
    if (this.placed !== this.sizeBytes) throw new FormatError(`relation file ended at ${this.placed} of ${this.sizeBytes} bytes`)
    return {
      fileMap: { sizeBytes: this.sizeBytes, windowHashes: this.windowHashes, pageHashes: this.pageHashes, extents },
      crc32c: this.crc,
    }
  }

  private async flushWindow(): Promise<void> {
    const w = this.window.subarray(0, this.filled)
    const k = this.offset / WINDOW_BYTES
    this.offset += w.length
    this.filled = 0
    this.window = this.store.takeBuffer()
    // The parent's hash of this window: when the id equals it, the page hashes are not needed.
    const p = this.parent
    const unchangedIf = p && k < p.windowHashes.length ? (p.windowHashes[k] ?? undefined) : undefined
    const facts = this.store.analyze(w, { crc: true, pageHashes: true, unchangedIf })
    facts.catch(() => {}) // observed when placed; a failed ingest may never get there
    this.ahead.push(facts)
    while (this.ahead.length > this.store.maxAhead) await this.placeNext()
  }

  /** Places the oldest analysed window. */
  private async placeNext(): Promise<void> {
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
      this.store.recycle(w)
    } else if (p === undefined || k >= p.windowHashes.length) {
      // Nothing to compare with: the window is one blob, its id the window's hash.
      this.windowHashes.push(f.id!)
      f.pageHashes!.copy(this.pageHashes, firstPage * PAGE_HASH_BYTES)
      await this.out.window(f.id!, w, offset)
    } else {
      this.windowHashes.push(f.id!)
      if (this.unchanged(f.id!, k, w.length)) {
        this.reuseWindow(offset, w.length)
      } else {
        // Page hashes are skipped when the id matches the parent's; only a length mismatch gets here without.
        if (f.pageHashes) f.pageHashes.copy(this.pageHashes, firstPage * PAGE_HASH_BYTES)
        else hashPages(w, this.pageHashes, firstPage * PAGE_HASH_BYTES)
        await this.placePages(w, firstPage)
      }
      this.store.recycle(w)
    }
  }

  private unchanged(id: string, k: number, length: number): boolean {
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
