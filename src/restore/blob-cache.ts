// A small LRU of decoded blobs shared by the restore workers. Extents of incremental backups interleave a few
// changed pages with long runs of the parent's blobs, so one blob is often needed by several extents in a row, and
// by neighbouring pieces of a file that other workers write. Concurrent requests for one blob share one read.

import type { BlobId } from '../repo/index.js'

interface Slot {
  promise: Promise<Buffer>
  /** Set once the read resolved; until then the slot is not counted and cannot be evicted. */
  sizeBytes: number | undefined
}

/** Memory: at most `maxBytes` of resolved blobs, plus the blobs being read at the moment. */
export class BlobCache {
  readonly #slots = new Map<BlobId, Slot>()
  #bytes = 0
  #hits = 0
  #misses = 0

  constructor(
    private readonly read: (id: BlobId) => Promise<Buffer>,
    private readonly maxBytes: number,
  ) {}

  /** The blob's plain bytes (shared: callers must not write into them). A failed read is not cached. */
  get(id: BlobId): Promise<Buffer> {
    const hit = this.#slots.get(id)
    if (hit) {
      this.#hits++
      // Most recently used goes last.
      this.#slots.delete(id)
      this.#slots.set(id, hit)
      return hit.promise
    }
    this.#misses++
    const slot: Slot = { promise: this.read(id), sizeBytes: undefined }
    this.#slots.set(id, slot)
    slot.promise.then(
      (buf) => {
        if (this.#slots.get(id) !== slot) return
        slot.sizeBytes = buf.length
        this.#bytes += buf.length
        this.#evict()
      },
      () => {
        if (this.#slots.get(id) === slot) this.#slots.delete(id)
      },
    )
    return slot.promise
  }

  #evict(): void {
    for (const [id, slot] of this.#slots) {
      if (this.#bytes <= this.maxBytes) return
      if (slot.sizeBytes === undefined) continue
      this.#slots.delete(id)
      this.#bytes -= slot.sizeBytes
    }
  }

  get stats(): { hits: number; misses: number; bytes: number; entries: number } {
    return { hits: this.#hits, misses: this.#misses, bytes: this.#bytes, entries: this.#slots.size }
  }
}
