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
// Over a version 3 parent and without workers, a window is hashed as its bytes arrive (hashOnArrival): only pages
// that differ from the parent's are copied into the window, the only ones placing it reads again.

import { FormatError } from '../errors.js'
import { crc32c } from '../pg/crc32c.js'
import {
  type AnalyzeRequest,
  type FileMap,
  hashPagesInto,
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
  /** The parent's windows and pages: only these are compared. */
  private readonly parentWindows: number
  private readonly parentPages: number
  /**
   * The page hashes of the window being filled, when it is hashed on arrival (hashOnArrival; else undefined), and
   * how many of its pages were all zeros.
   */
  private arrived: { hashes: Buffer; zeros: number } | undefined

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
    this.parentPages = parent ? pageCountOf(parent.sizeBytes) : 0
    this.arrived = this.hashOnArrival(0)
  }

  /**
   * Takes the next bytes of the file. Returns a promise only when a window was completed and placing it has to wait:
   * `chunk` must stay as it is until that resolves. Most chunks fill part of a window and cost no promise.
   */
  push(chunk: Buffer): Promise<void> | undefined {
    let at = 0
    while (at < chunk.length) {
      const n = this.arrived ? this.takeHashing(chunk, at) : chunk.copy(this.window, this.filled, at)
      this.filled += n
      at += n
      if (this.filled === WINDOW_BYTES) {
        const rest = at
        return this.flushWindow().then(() => (rest < chunk.length ? this.push(chunk.subarray(rest)) : undefined))
      }
    }
    return undefined
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
    const arrived = this.arrived
    // A last page shorter than a page (not in a relation file, but nothing here relies on that) is in the window.
    const short = w.length % PAGE_BYTES
    if (arrived && short > 0) this.hashArrived(this.window, w.length - short, short, w.length - short)
    this.offset += w.length
    this.filled = 0
    this.window = this.store.takeBuffer()
    this.arrived = this.hashOnArrival(k + 1)
    // On arrival, the analysis requestFor(k) asks for is done: the page hashes (the parent has the CRCs).
    const facts = arrived ? Promise.resolve(arrivedFacts(w, arrived)) : this.store.analyze(w, this.requestFor(k))
    facts.catch(() => {}) // observed when placed; a failed ingest may never get there
    this.ahead.push(facts)
    while (this.ahead.length > this.store.maxAhead) await this.placeNext()
  }

  /**
   * Whether window `k` is hashed as its bytes arrive instead of copied whole and analysed: over a version 3 parent
   * that has the window, the analysis would only hash its pages (requestFor), placing it reads only the pages whose
   * hash differs (placePages), and without workers nothing needs the whole window in one buffer. Copying every byte
   * received into windows was 0.1-0.13 s of an incremental of 2 GB. Returns the window's empty hash state, or
   * undefined.
   */
  private hashOnArrival(k: number): { hashes: Buffer; zeros: number } | undefined {
    const p = this.parent
    if (this.store.workers > 0 || p === undefined || k >= this.parentWindows) return undefined
    if (p.pageCrcs === undefined || p.pageHashAlgorithm !== PAGE_HASH_ALGORITHM) return undefined
    // A buffer per window: the window waits in `ahead` with its hashes until placed.
    return { hashes: Buffer.alloc((WINDOW_BYTES / PAGE_BYTES) * PAGE_HASH_BYTES), zeros: 0 }
  }

  /**
   * Takes bytes of `chunk` from `at` into the window being filled (at most up to its end), hashing each page once it
   * is whole; returns how many. A page that lies whole in the chunk is hashed there; a page split across chunks is
   * put together in the window first.
   */
  private takeHashing(chunk: Buffer, at: number): number {
    const end = Math.min(chunk.length, at + WINDOW_BYTES - this.filled)
    let pos = at
    let filled = this.filled
    const begun = filled % PAGE_BYTES
    if (begun > 0) {
      const n = chunk.copy(this.window, filled, pos, Math.min(end, pos + PAGE_BYTES - begun))
      pos += n
      filled += n
      if (filled % PAGE_BYTES === 0) this.hashArrived(this.window, filled - PAGE_BYTES, PAGE_BYTES, filled - PAGE_BYTES)
    }
    const whole = Math.floor((end - pos) / PAGE_BYTES) * PAGE_BYTES
    if (whole > 0) {
      this.hashArrived(chunk, pos, whole, filled)
      pos += whole
      filled += whole
    }
    if (pos < end) pos += chunk.copy(this.window, filled, pos, end)
    return pos - at
  }

  /**
   * Hashes `length` bytes of `src` from `from`, the window's bytes at `windowAt` (whole pages, or the short last
   * one), and copies into the window each page placePages will read: one without the parent's hash for it.
   */
  private hashArrived(src: Buffer, from: number, length: number, windowAt: number): void {
    const arrived = this.arrived!
    const bytes = src.subarray(from, from + length)
    arrived.zeros += hashPagesInto(bytes, arrived.hashes, (windowAt / PAGE_BYTES) * PAGE_HASH_BYTES, PAGE_HASH_ALGORITHM)
    if (src === this.window) return
    const firstPage = (this.offset + windowAt) / PAGE_BYTES
    const pages = Math.ceil(length / PAGE_BYTES)
    const mine = (windowAt / PAGE_BYTES) * PAGE_HASH_BYTES
    // Nearly every page is unchanged: one comparison for the run, page by page only when something differs.
    if (this.parentHas(firstPage, arrived.hashes, mine, pages)) return
    for (let i = 0; i < pages; i++) {
      if (!this.parentHas(firstPage + i, arrived.hashes, mine + i * PAGE_HASH_BYTES)) {
        bytes.copy(this.window, windowAt + i * PAGE_BYTES, i * PAGE_BYTES, (i + 1) * PAGE_BYTES)
      }
    }
  }

  /**
   * True when the parent has the `pages` pages from `pageNo` on with the hashes at `mine` in `ours` (the test
   * placePages places by).
   */
  private parentHas(pageNo: number, ours: Buffer, mine: number, pages = 1): boolean {
    const at = pageNo * PAGE_HASH_BYTES
    const n = pages * PAGE_HASH_BYTES
    return pageNo + pages <= this.parentPages && ours.compare(this.parent!.pageHashes, at, at + n, mine, mine + n) === 0
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
    const pages = Math.ceil(w.length / PAGE_BYTES)
    /** Unchanged pages just before page i, not placed yet. */
    let run = 0
    for (let i = 0; i < pages; i++) {
      const pageNo = firstPage + i
      const at = pageNo * PAGE_HASH_BYTES
      const crcAt = pageNo * PAGE_CRC_BYTES
      if (this.parentHas(pageNo, ours, i * PAGE_HASH_BYTES)) {
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

/** The analysis of a window hashed on arrival, as the store would have made it (page hashes only). */
function arrivedFacts(window: Buffer, arrived: { hashes: Buffer; zeros: number }): WindowFacts {
  const pages = Math.ceil(window.length / PAGE_BYTES)
  const allZero = arrived.zeros * PAGE_BYTES === window.length
  return {
    window,
    allZero,
    id: undefined,
    pageHashes: allZero ? undefined : arrived.hashes.subarray(0, pages * PAGE_HASH_BYTES),
    legacyPageHashes: undefined,
    pageCrcs: undefined,
  }
}
