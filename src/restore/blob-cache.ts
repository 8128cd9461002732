// A small LRU of decoded blobs shared by the restore workers. Extents of incremental backups interleave a few
// changed pages with long runs of the parent's blobs, so one blob is often needed by several extents in a row, and
// by neighbouring pieces of a file that other workers write. Concurrent requests for one blob share one read.
// A blob is handed out as a lease: its buffer goes back to the reader for reuse only once it has left the cache and
// every lease on it is released (after the write that used it completed), never while anyone still uses it.
// Small blobs (whole small files, file maps) have a budget of their own, far below the cache's: they are read once
// in most restores, and each is a separate allocation that costs the process more than its bytes. With the whole
// cache open to them, a restore of 20,000 small tables filled it with 8 KiB blobs and peaked at 380 MB RSS; with
// 8 MiB for them, 318 MB (medians of 3, PG 15). Larger blobs never push them out (see #evict): the look-ahead asks
// for a relation file's map and small files' blobs well before the file is written.
// Large blobs used and released are kept for another use only up to a budget of their own too: nothing else pushed
// them out while the cache was below its size, so the windows of the large catalog files at the start of a restore
// of 20,000 small tables stayed in memory (about 29 MB) to its end.

import type { BlobId } from '../repo/index.js'

/** A blob's plain bytes, held for the caller until release() (shared: callers must not write into them). */
export interface BlobLease {
  readonly bytes: Buffer
  /** The caller is done with `bytes` (a write that used them has completed); once only. */
  release(): void
}

interface Slot {
  promise: Promise<Buffer>
  /** Set once the read resolved; until then the slot is not counted and cannot be evicted. */
  bytes: Buffer | undefined
  /** Leases not released. */
  users: number
  /** False once evicted (or failed): the last release gives the buffer back. */
  cached: boolean
  /** True once got (a blob only fetched ahead is not). */
  used: boolean
  /** A large blob used, released by every user and still cached: counted against the reuse budget. */
  idle: boolean
}

/** Small blobs' own budget: blobs shorter than `belowBytes` count against `maxBytes` as well as the cache's. */
export interface SmallBlobBudget {
  belowBytes: number
  maxBytes: number
}

/** Budgets within the cache's size. */
export interface BlobCacheBudgets {
  /** Small blobs' own budget (default: none of their own). */
  small?: SmallBlobBudget
  /** Large blobs used and released, kept in case they are asked for again, at most (default: the cache's size). */
  reuseMaxBytes?: number
}

/**
 * Memory: at most `maxBytes` of resolved blobs (of which at most the small budget's in small ones, and the reuse
 * budget's in large ones nobody uses now), plus the blobs being read and those leased after eviction.
 */
export class BlobCache {
  readonly #slots = new Map<BlobId, Slot>()
  readonly #small: SmallBlobBudget
  readonly #reuseMaxBytes: number
  #bytes = 0
  #smallBytes = 0
  #idleBytes = 0
  #hits = 0
  #misses = 0

  /**
   * @param read reads a blob
   * @param maxBytes resolved blobs kept at most
   * @param recycle takes back a blob's buffer nobody uses any more (the reader's `recycle`)
   */
  constructor(
    private readonly read: (id: BlobId) => Promise<Buffer>,
    private readonly maxBytes: number,
    private readonly recycle: (bytes: Buffer) => void = () => {},
    budgets: BlobCacheBudgets = {},
  ) {
    this.#small = budgets.small ?? { belowBytes: 0, maxBytes }
    this.#reuseMaxBytes = budgets.reuseMaxBytes ?? maxBytes
  }

  /** Starts reading a blob that is neither cached nor being read (read-ahead); nothing to release. */
  prefetch(id: BlobId): void {
    if (!this.#slots.has(id)) this.#load(id).promise.catch(() => {})
  }

  /** The blob's plain bytes, leased. A failed read is not cached. */
  async get(id: BlobId): Promise<BlobLease> {
    let slot = this.#slots.get(id)
    if (slot) {
      this.#hits++
      slot.used = true
      this.#setIdle(slot, false)
      // Most recently used goes last.
      this.#slots.delete(id)
      this.#slots.set(id, slot)
    } else {
      slot = this.#load(id)
      slot.used = true
    }
    slot.users++
    let bytes: Buffer
    try {
      bytes = await slot.promise
    } catch (err) {
      slot.users--
      throw err
    }
    let released = false
    const s = slot
    return {
      bytes,
      release: () => {
        if (released) return
        released = true
        if (--s.users !== 0) return
        if (!s.cached) this.recycle(bytes)
        else if (!this.#isSmall(bytes)) {
          this.#setIdle(s, true)
          this.#evict()
        }
      },
    }
  }

  #load(id: BlobId): Slot {
    this.#misses++
    const slot: Slot = { promise: this.read(id), bytes: undefined, users: 0, cached: true, used: false, idle: false }
    this.#slots.set(id, slot)
    slot.promise.then(
      (buf) => {
        if (this.#slots.get(id) !== slot) return
        slot.bytes = buf
        this.#bytes += buf.length
        if (this.#isSmall(buf)) this.#smallBytes += buf.length
        this.#evict()
      },
      () => {
        slot.cached = false
        if (this.#slots.get(id) === slot) this.#slots.delete(id)
      },
    )
    return slot
  }

  /** Marks a resolved slot idle (counted against the reuse budget) or not. */
  #setIdle(slot: Slot, idle: boolean): void {
    if (slot.idle === idle) return
    slot.idle = idle
    this.#idleBytes += idle ? slot.bytes!.length : -slot.bytes!.length
  }

  #isSmall(bytes: Buffer): boolean {
    return bytes.length < this.#small.belowBytes
  }

  /**
   * Least recently used first, small blobs while over their own budget, the others while over the cache's. Small
   * blobs leave only for their own budget: file maps and small files' blobs that the look-ahead fetched for files a
   * few dozen entries on, which window-sized blobs read ahead pushed out before their use (a restore from S3 read a
   * third of its blobs twice with a cache of 40 MiB). And blobs fetched ahead and not used yet go only after every
   * blob used already, the furthest ahead (the latest fetched) first: the next one needed is kept. Large blobs
   * used and released leave, least recently used first, also while over their reuse budget.
   */
  #evict(): void {
    const ahead: [BlobId, Slot, Buffer][] = []
    for (const [id, slot] of this.#slots) {
      if (!this.#over()) return
      if (slot.bytes === undefined) continue
      if (!slot.used && !this.#isSmall(slot.bytes)) ahead.push([id, slot, slot.bytes])
      else this.#evictIfOver(id, slot, slot.bytes)
    }
    for (let i = ahead.length - 1; i >= 0 && this.#over(); i--) this.#evictIfOver(...ahead[i]!)
  }

  #over(): boolean {
    return this.#bytes > this.maxBytes || this.#smallBytes > this.#small.maxBytes || this.#idleBytes > this.#reuseMaxBytes
  }

  #evictIfOver(id: BlobId, slot: Slot, bytes: Buffer): void {
    const small = this.#isSmall(bytes)
    if (small && this.#smallBytes <= this.#small.maxBytes) return
    if (!small && this.#bytes <= this.maxBytes && !(slot.idle && this.#idleBytes > this.#reuseMaxBytes)) return
    this.#slots.delete(id)
    this.#bytes -= bytes.length
    if (small) this.#smallBytes -= bytes.length
    this.#setIdle(slot, false)
    slot.cached = false
    if (slot.users === 0) this.recycle(bytes)
  }

  get stats(): { hits: number; misses: number; bytes: number; smallBytes: number; idleBytes: number; entries: number } {
    return {
      hits: this.#hits,
      misses: this.#misses,
      bytes: this.#bytes,
      smallBytes: this.#smallBytes,
      idleBytes: this.#idleBytes,
      entries: this.#slots.size,
    }
  }
}
