// Ingests a relation segment file (a whole number of 8 KB pages) window by window (128 pages). Every window is
// analysed by the repository's window store (page hashes with the all-zero test, and the blob id where it is
// needed), several ahead of the one being placed when the store has workers; windows are placed in file order, so
// the outcome does not depend on where the work ran. With a parent backup's file map, unchanged windows and pages
// point at the parent's blobs and only changed pages are stored; without one, each window is one blob.
// A parent's map of version 1 (page hashes from SHA-256, docs/backup-format.md §4) is compared in its own terms:
// by window id first, then page by page with SHA-256 page hashes computed for it.
// The new map is version 3: each page's CRC-32C too, computed with the analysis for pages without a parent's CRC,
// taken from a version 3 parent for every page whose hash is unchanged (page-crcs.ts); the file's CRC-32C is joined
// from them.

import { FormatError } from '../errors.js'
import { crc32c } from '../pg/crc32c.js'
import {
  type AnalyzeRequest,
  type FileMap,
  PAGE_BYTES,
  PAGE_CRC_BYTES,
  PAGE_HASH_ALGORITHM,
  PAGE_HASH_BYTES,
  pageCountOf,
  WINDOW_BYTES,
  type WindowFacts,
  type WindowStore,
  windowCountOf,
} from '../repo/index.js'
import { ExtentBuilder, type IngestStats } from './extent-builder.js'
import { fileCrcOfPages, fillZeroPageCrcs } from './page-crcs.js'

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
  /** The new map's page hashes (zeros where a window was all zeros). */
  private readonly pageHashes: Buffer
  /** The new map's page CRCs. */
  private readonly pageCrcs: Buffer
  private readonly out: ExtentBuilder
  /** Windows in analysis and not placed yet, in file order. */
  private readonly ahead: Promise<WindowFacts>[] = []
  /** The parent's windows: only these are compared. */
  private readonly parentWindows: number

  constructor(
    private readonly store: WindowStore,
    readonly sizeBytes: number,
    private readonly parent: FileMap | undefined,
  ) {
    this.pageHashes = Buffer.alloc(pageCountOf(sizeBytes) * PAGE_HASH_BYTES)
    this.pageCrcs = Buffer.alloc(pageCountOf(sizeBytes) * PAGE_CRC_BYTES)
    this.window = store.takeBuffer()
    this.out = new ExtentBuilder(store, this.stats)
    this.parentWindows = parent ? windowCountOf(parent.sizeBytes) : 0
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
      fileMap: { sizeBytes: this.sizeBytes, pageHashAlgorithm: PAGE_HASH_ALGORITHM, pageHashes: this.pageHashes, pageCrcs: this.pageCrcs, extents },
      crc32c: fileCrcOfPages(this.pageCrcs),
    }
  }

  private async flushWindow(): Promise<void> {
    const w = this.window.subarray(0, this.filled)
    const k = this.offset / WINDOW_BYTES
    this.offset += w.length
    this.filled = 0
    this.window = this.store.takeBuffer()
    const facts = this.store.analyze(w, this.requestFor(k))
    facts.catch(() => {}) // observed when placed; a failed ingest may never get there
    this.ahead.push(facts)
    while (this.ahead.length > this.store.maxAhead) await this.placeNext()
  }

  /**
   * What window `k` needs: its id only when it may be stored whole or the parent compares by window id; its pages'
   * CRCs unless the parent has them (then only changed pages get theirs, when placed).
   */
  private requestFor(k: number): AnalyzeRequest {
    const p = this.parent
    if (!p || k >= this.parentWindows) return { id: true, pageHashes: PAGE_HASH_ALGORITHM, pageCrcs: true }
    if (p.windowHashes) return { id: true, pageHashes: PAGE_HASH_ALGORITHM, legacyUnlessId: p.windowHashes[k] ?? null, pageCrcs: true }
    return { id: false, pageHashes: PAGE_HASH_ALGORITHM, pageCrcs: p.pageCrcs === undefined }
  }

  /** Places the oldest analysed window. */
  private async placeNext(): Promise<void> {
    const f = await this.ahead.shift()!
    const w = f.window
    const offset = this.placed
    const k = offset / WINDOW_BYTES
    const firstPage = offset / PAGE_BYTES
    const pages = w.length / PAGE_BYTES
    this.placed += w.length
    if (f.allZero) {
      fillZeroPageCrcs(this.pageCrcs, firstPage, firstPage + pages)
      this.out.hole(offset, w.length)
      this.store.recycle(w)
      return
    }
    f.pageHashes!.copy(this.pageHashes, firstPage * PAGE_HASH_BYTES)
    f.pageCrcs?.copy(this.pageCrcs, firstPage * PAGE_CRC_BYTES)
    const p = this.parent
    if (p === undefined || k >= this.parentWindows) {
      // Nothing to compare with: the window is one blob.
      await this.out.window(f.id!, w, offset)
      return
    }
    // The parent's own terms: its page hashes (version 2: ours; version 1: the SHA-256 ones), or its window id.
    const ours = p.windowHashes ? f.legacyPageHashes : f.pageHashes!
    const sameLength = Math.min(WINDOW_BYTES, p.sizeBytes - offset) === w.length
    const from = firstPage * PAGE_HASH_BYTES
    const to = from + pages * PAGE_HASH_BYTES
    const unchanged = sameLength && (ours === undefined ? f.id === p.windowHashes![k] : ours.compare(p.pageHashes, from, to) === 0)
    if (unchanged) {
      if (!f.pageCrcs) p.pageCrcs!.copy(this.pageCrcs, firstPage * PAGE_CRC_BYTES, firstPage * PAGE_CRC_BYTES, (firstPage + pages) * PAGE_CRC_BYTES)
      this.out.reuse(p, offset, w.length)
    } else {
      await this.placePages(w, firstPage, ours ?? f.pageHashes!, !f.pageCrcs)
    }
    this.store.recycle(w)
  }

  /**
   * A changed window, page by page: `ours` has this window's hashes in the parent's algorithm. Unchanged pages are
   * reused a run at a time: each reuse looks up the parent's extents and checks their blobs, and page by page that
   * took a fifth of an incremental's CPU when 1% of the pages had changed (so nearly every window of a large table).
   * `crcs`: the analysis brought no page CRCs (the parent has them): unchanged pages take the parent's, changed ones
   * are computed here.
   */
  private async placePages(w: Buffer, firstPage: number, ours: Buffer, crcs: boolean): Promise<void> {
    const p = this.parent!
    const parentPages = pageCountOf(p.sizeBytes)
    const pages = Math.ceil(w.length / PAGE_BYTES)
    /** Unchanged pages just before page i, not placed yet. */
    let run = 0
    for (let i = 0; i < pages; i++) {
      const pageNo = firstPage + i
      const at = pageNo * PAGE_HASH_BYTES
      const mine = i * PAGE_HASH_BYTES
      const crcAt = pageNo * PAGE_CRC_BYTES
      if (pageNo < parentPages && ours.compare(p.pageHashes, at, at + PAGE_HASH_BYTES, mine, mine + PAGE_HASH_BYTES) === 0) {
        if (crcs) p.pageCrcs!.copy(this.pageCrcs, crcAt, crcAt, crcAt + PAGE_CRC_BYTES)
        run++
        continue
      }
      this.reuseRun(pageNo, run)
      run = 0
      const offset = pageNo * PAGE_BYTES
      const page = w.subarray(i * PAGE_BYTES, (i + 1) * PAGE_BYTES)
      if (crcs) this.pageCrcs.writeUInt32LE(crc32c(page), crcAt)
      if (this.pageHashes.compare(ZERO_HASH, 0, PAGE_HASH_BYTES, at, at + PAGE_HASH_BYTES) === 0) {
        this.out.hole(offset, PAGE_BYTES)
      } else {
        await this.out.changedPage(page, offset)
      }
    }
    this.reuseRun(firstPage + pages, run)
  }

  /** The `pages` unchanged pages that end before page `endPage` point at the parent's bytes. */
  private reuseRun(endPage: number, pages: number): void {
    if (pages > 0) this.out.reuse(this.parent!, (endPage - pages) * PAGE_BYTES, pages * PAGE_BYTES)
  }
}
