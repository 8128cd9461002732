// A small LRU of decoded blobs shared by the restore workers. Extents of incremental backups interleave a few
// changed pages with long runs of the parent's blobs, so one blob is often needed by several extents in a row, and
// by neighbouring pieces of a file that other workers write. Concurrent requests for one blob share one read.
// A blob is handed out as a lease: its buffer goes back to the reader for reuse only once it has left the cache and
// every lease on it is released (after the write that used it completed), never while anyone still uses it.

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

/** Memory: at most `maxBytes` of resolved blobs, plus the blobs being read and those leased after eviction. */
export class BlobCache {
  readonly #slots = new Map<BlobId, Slot>()
  #bytes = 0
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
        this.#evict()
      },
      () => {
        slot.cached = false
        if (this.#slots.get(id) === slot) this.#slots.delete(id)
      },
    )
    return slot
  }

  #evict(): void {
    for (const [id, slot] of this.#slots) {
      if (this.#bytes <= this.maxBytes) return
      if (slot.bytes === undefined) continue
      this.#slots.delete(id)
      this.#bytes -= slot.bytes.length
      slot.cached = false
      if (slot.users === 0) this.recycle(slot.bytes)
    }
  }

  get stats(): { hits: number; misses: number; bytes: number; entries: number } {
    return { hits: this.#hits, misses: this.#misses, bytes: this.#bytes, entries: this.#slots.size }
  }
}
