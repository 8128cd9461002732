// Moves blobs from one repository into another and says what each is called there. A blob's id depends on the
// repository when either side is encrypted (a keyed hash), so the target's id of a source blob is known only from
// its bytes, or from a pair learned where both repositories describe the same content at the same place (a backup
// copied before). Blobs the target has are not stored again; reads are verified and bounded in number, and the
// pairs learned are kept in a cache of bounded size.

import { IntegrityError } from '../errors.js'
import type { BlobId, BlobReader, BlobType, Repository } from '../repo/index.js'

export interface BlobMapperOptions {
  signal?: AbortSignal
  /** Source blobs read (and held in memory) at once (default 16). */
  maxReads?: number
  /** Source-to-target id pairs remembered (default 65536, about 16 MB). */
  cacheEntries?: number
  /** Worker threads decoding source blobs (default: the source repository's choice). */
  workers?: number
}

/** What the mapper read from the source. */
export interface BlobMapperStats {
  blobsRead: number
  bytesRead: number
}

const DEFAULT_MAX_READS = 16
const DEFAULT_CACHE_ENTRIES = 65536

export class BlobMapper {
  /** Both repositories are plain: a blob has the same id in both. */
  readonly identity: boolean
  readonly stats: BlobMapperStats = { blobsRead: 0, bytesRead: 0 }
  readonly #target: Repository
  readonly #reader: BlobReader
  readonly #present: (id: BlobId) => boolean
  readonly #signal: AbortSignal | undefined
  readonly #cacheEntries: number
  /** Source id → target id, in least-recently-used order. */
  readonly #cache = new Map<BlobId, BlobId>()
  readonly #inFlight = new Map<BlobId, Promise<BlobId>>()
  #freeReads: number
  readonly #waiting: (() => void)[] = []

  private constructor(source: Repository, target: Repository, present: (id: BlobId) => boolean, o: BlobMapperOptions) {
    this.#target = target
    this.#present = present
    this.#signal = o.signal
    this.identity = !source.encrypted && !target.encrypted
    this.#freeReads = Math.max(1, o.maxReads ?? DEFAULT_MAX_READS)
    this.#cacheEntries = Math.max(1024, o.cacheEntries ?? DEFAULT_CACHE_ENTRIES)
    this.#reader = source.openBlobReader({ signal: o.signal, workers: o.workers })
  }

  /**
   * A mapper from `source` to `target`. The target's packs are listed once: a blob counts as there only when its
   * pack is (an index entry alone can outlive a damaged pack).
   */
  static async open(source: Repository, target: Repository, o: BlobMapperOptions = {}): Promise<BlobMapper> {
    return new BlobMapper(source, target, await target.presentBlobs({ signal: o.signal }), o)
  }

  /** Stops the reader's workers. */
  close(): Promise<void> {
    return this.#reader.close()
  }

  /** True when the target holds blob `id` (a target id) with its pack. */
  inTarget(id: BlobId): boolean {
    return this.#target.hasBlob(id) && this.#present(id)
  }

  /**
   * Remembers that source blob `sourceId` is `targetId` in the target: only for pairs that hold by content (both
   * ids name the same bytes), e.g. read from a backup copied before, at the same place in both repositories.
   */
  learn(sourceId: BlobId, targetId: BlobId): void {
    if (this.identity) return
    this.#cache.delete(sourceId)
    this.#cache.set(sourceId, targetId)
    if (this.#cache.size > this.#cacheEntries) this.#cache.delete(this.#cache.keys().next().value!)
  }

  /**
   * The target id of source blob `id` when it is known without reading the blob (the same id between plain
   * repositories, a pair in `hints` or learned before), or undefined. It names the same content; whether the
   * target holds the blob is another question (inTarget).
   */
  known(id: BlobId, hints?: ReadonlyMap<BlobId, BlobId>): BlobId | undefined {
    if (this.identity) return id
    const hinted = hints?.get(id)
    if (hinted !== undefined) return hinted
    const cached = this.#cache.get(id)
    if (cached !== undefined) {
      this.#cache.delete(id)
      this.#cache.set(id, cached)
    }
    return cached
  }

  /**
   * Makes sure the target holds source blob `id` (as a blob of `type`) and resolves with its id there. A blob
   * whose target id is known and which the target holds is neither read nor written; any other is read from the
   * source (verified against its id there) and put into the target, which stores it unless it has it. Concurrent
   * calls for one blob read it once.
   */
  map(id: BlobId, type: BlobType, hints?: ReadonlyMap<BlobId, BlobId>): Promise<BlobId> {
    const known = this.known(id, hints)
    if (known !== undefined && this.inTarget(known)) return Promise.resolve(known)
    const running = this.#inFlight.get(id)
    if (running) return running
    const p = this.#copy(id, type, known).finally(() => this.#inFlight.delete(id))
    this.#inFlight.set(id, p)
    return p
  }

  /** The verified plain bytes of source blob `id` (for metadata the copier rewrites), counted like copies. */
  async read(id: BlobId): Promise<Buffer> {
    await this.#takeRead()
    try {
      return this.#counted(await this.#reader.read(id))
    } finally {
      this.#giveRead()
    }
  }

  async #copy(id: BlobId, type: BlobType, known: BlobId | undefined): Promise<BlobId> {
    await this.#takeRead()
    let targetId: BlobId
    try {
      const bytes = this.#counted(await this.#reader.read(id))
      targetId = (await this.#target.putBlob(type, bytes, { signal: this.#signal })).id
    } finally {
      this.#giveRead()
    }
    if (known !== undefined && known !== targetId) {
      // A learned pair that the bytes contradict: the backup it came from is not what the source holds.
      throw new IntegrityError(`source blob '${id}' is '${targetId}' in the target, but a backup copied before says '${known}'`, {
        hint: "the two repositories disagree about a backup they both hold; run 'pgkeep verify --read-data' on both",
      })
    }
    this.learn(id, targetId)
    // Put in this session, or found indexed: either way it must be there now (an index entry whose pack is gone
    // cannot be repaired by storing the blob again: the target is damaged).
    if (!this.inTarget(targetId)) {
      throw new IntegrityError(`blob '${targetId}' is indexed in the target repository but its pack is missing`, {
        hint: "run 'pgkeep verify' on the target repository",
      })
    }
    return targetId
  }

  #counted(bytes: Buffer): Buffer {
    this.stats.blobsRead++
    this.stats.bytesRead += bytes.length
    return bytes
  }

  async #takeRead(): Promise<void> {
    this.#signal?.throwIfAborted()
    if (this.#freeReads > 0) {
      this.#freeReads--
      return
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve))
  }

  #giveRead(): void {
    const next = this.#waiting.shift()
    if (next) next()
    else this.#freeReads++
  }
}
