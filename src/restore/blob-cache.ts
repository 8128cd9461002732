// A small LRU of decoded blobs shared by the restore workers. Extents of incremental backups interleave a few
// changed pages with long runs of the parent's blobs, so one blob is often needed by several extents in a row, and
// by neighbouring pieces of a file that other workers write. Concurrent requests for one blob share one read.
// A blob is handed out as a lease: its buffer goes back to the reader for reuse only once it has left the cache and
// every lease on it is released (after the write that used it completed), never while anyone still uses it.
// Small blobs (whole small files, file maps) have a budget of their own, far below the cache's: they are read once
// in most restores, and each is a separate allocation that costs the process more than its bytes. With the whole
// cache open to them, a restore of 20,000 small tables filled it with 8 KiB blobs and peaked at 380 MB RSS; with
// 8 MiB for them, 318 MB (medians of 3, PG 15).

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
}

/** Small blobs' own budget: blobs shorter than `belowBytes` count against `maxBytes` as well as the cache's. */
export interface SmallBlobBudget {
  belowBytes: number
  maxBytes: number
}

/**
 * Memory: at most `maxBytes` of resolved blobs (of which at most the small budget's in small ones), plus the blobs
 * being read and those leased after eviction.
 */
export class BlobCache {
  readonly #slots = new Map<BlobId, Slot>()
  #bytes = 0
  #smallBytes = 0
  #hits = 0
  #misses = 0

  /**
   * @param read reads a blob
   * @param maxBytes resolved blobs kept at most
   * @param recycle takes back a blob's buffer nobody uses any more (the reader's `recycle`)
   * @param small the budget of small blobs (default: none of their own)
   */
  constructor(
    private readonly read: (id: BlobId) => Promise<Buffer>,
    private readonly maxBytes: number,
    private readonly recycle: (bytes: Buffer) => void = () => {},
    private readonly small: SmallBlobBudget = { belowBytes: 0, maxBytes },
  ) {}

  /** Starts reading a blob that is neither cached nor being read (read-ahead); nothing to release. */
  prefetch(id: BlobId): void {
    if (!this.#slots.has(id)) this.#load(id).promise.catch(() => {})
  }

  /** The blob's plain bytes, leased. A failed read is not cached. */
  async get(id: BlobId): Promise<BlobLease> {
    let slot = this.#slots.get(id)
    if (slot) {
      this.#hits++
      // Most recently used goes last.
      this.#slots.delete(id)
      this.#slots.set(id, slot)
    } else {
      slot = this.#load(id)
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
        if (--s.users === 0 && !s.cached) this.recycle(bytes)
      },
    }
  }

  #load(id: BlobId): Slot {
    this.#misses++
    const slot: Slot = { promise: this.read(id), bytes: undefined, users: 0, cached: true }
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

  #isSmall(bytes: Buffer): boolean {
    return bytes.length < this.small.belowBytes
  }

  /** Least recently used first: any blob while over the cache's budget, small ones while over theirs. */
  #evict(): void {
    for (const [id, slot] of this.#slots) {
      const over = this.#bytes > this.maxBytes
      if (!over && this.#smallBytes <= this.small.maxBytes) return
      if (slot.bytes === undefined) continue
      const small = this.#isSmall(slot.bytes)
      if (!over && !small) continue
      this.#slots.delete(id)
      this.#bytes -= slot.bytes.length
      if (small) this.#smallBytes -= slot.bytes.length
      slot.cached = false
      if (slot.users === 0) this.recycle(slot.bytes)
    }
  }

  get stats(): { hits: number; misses: number; bytes: number; smallBytes: number; entries: number } {
    return { hits: this.#hits, misses: this.#misses, bytes: this.#bytes, smallBytes: this.#smallBytes, entries: this.#slots.size }
  }
}
