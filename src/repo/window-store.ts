// Where a backup's file content goes, window by window: each window (up to 1 MiB) is analysed (page hashes, blob
// id, CRC-32C, the all-zero test) and, when the engine decides to keep it as a blob, encoded and added to the
// repository. The work runs on a CodecPool's worker threads when the store has one, several windows ahead of the
// one the engine is placing, and on the calling thread for small windows, while every worker is busy, and without
// a pool; the engine sees the same interface and gets the same bytes either way. Blobs are added in the order
// `store` is called, so a file's blobs sit in order in its packs.

import type { BlobId } from './blob.js'
import type { BlobCodec } from './blob.js'
import { type AnalyzeRequest, analyzeWindow, storedInWindow } from './codec-work.js'
import { type CodecPool, POOLED_MIN_BYTES, type WindowFacts } from './codec-pool.js'
import { WINDOW_BYTES } from './file-map.js'

export type { AnalyzeRequest, WindowFacts }

/** What a WindowStore needs of its repository (given by Repository.openWindowStore). */
export interface WindowStoreTarget {
  /** The repository's codec, for work on the calling thread. */
  readonly codec: BlobCodec
  /** True when the blob can be referenced: put in this session, or indexed with its pack in storage. */
  hasBlob(id: BlobId): boolean
  /** Adds an encoded data blob (the repository's putEncodedBlob); copies `stored` before it returns. */
  putEncoded(id: BlobId, stored: Buffer, flags: number, plainLength: number, signal?: AbortSignal): Promise<{ stored: boolean }>
}

/** Window buffers kept for reuse on the calling thread. */
const SPARE_BUFFERS = 4

export class WindowStore {
  /** Windows the engine may have in analysis before it places the oldest (1 without workers). */
  readonly maxAhead: number
  /** Plain bytes of the blobs this store added to the repository. */
  storedBytes = 0
  /**
   * Windows analysed and blobs encoded so far (encodes should match the blobs actually stored), and how many of each
   * the calling thread did itself although the store has workers (a small window, or every turn taken).
   */
  readonly jobCounts = { analyzed: 0, encoded: 0, analyzedByCaller: 0, encodedByCaller: 0 }
  readonly #target: WindowStoreTarget
  readonly #pool: CodecPool | undefined
  readonly #signal: AbortSignal | undefined
  readonly #free: ArrayBuffer[] = []
  /**
   * Ids being stored through this store, until the target has them: a second equal window is not encoded twice.
   * At most maxAhead + 1 (store() waits for the oldest beyond that), so an array: a Set going from empty to a few
   * ids and back for every blob reallocated its table each time, 9.4 MB promoted to V8's old generation over a
   * backup of 40,000 tables (sampling heap profiler).
   */
  readonly #added: BlobId[] = []
  #last: Promise<void> = Promise.resolve()
  /** Blobs waiting for their encode (on the pool) or for an earlier blob before they are added: later ones wait too. */
  #deferredAdds = 0
  readonly #queue: Promise<void>[] = []

  /** @internal made by Repository.openWindowStore */
  constructor(target: WindowStoreTarget, pool: CodecPool | undefined, signal: AbortSignal | undefined) {
    this.#target = target
    this.#pool = pool
    this.#signal = signal
    this.maxAhead = pool?.maxInFlight ?? 1
  }

  /** Worker threads behind this store (0: the calling thread does the work). */
  get workers(): number {
    return this.#pool?.workers ?? 0
  }

  /** A window buffer (WINDOW_BYTES, contents undefined) that the caller owns until it passes it on. */
  takeBuffer(): Buffer {
    if (this.#pool) return this.#pool.takeBuffer()
    return Buffer.from(this.#free.pop() ?? new ArrayBuffer(WINDOW_BYTES))
  }

  /** Gives back a buffer from takeBuffer (or a view over one); the caller must not use it again. */
  recycle(window: Buffer): void {
    if (this.#pool) return this.#pool.recycle(window)
    const ab = window.buffer
    if (ab instanceof ArrayBuffer && ab.byteLength === WINDOW_BYTES && this.#free.length < SPARE_BUFFERS) this.#free.push(ab)
  }

  /** True when blob `id` can be referenced by the backup being written (see WindowStoreTarget.hasBlob). */
  hasBlob(id: BlobId): boolean {
    return this.#added.includes(id) || this.#target.hasBlob(id)
  }

  /**
   * Analyses `window` (a view over a buffer from takeBuffer, which passes to the store and comes back in the
   * result's `window`).
   */
  analyze(window: Buffer, request: AnalyzeRequest): Promise<WindowFacts> {
    this.jobCounts.analyzed++
    const pool = this.#poolFor(window)
    if (pool) return pool.analyze(window, request)
    if (this.#pool) this.jobCounts.analyzedByCaller++
    try {
      return Promise.resolve({ window, ...analyzeWindow(window, this.#target.codec, request) })
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * Stores `window` (analysed: its id is `id`; a view over a buffer from takeBuffer, which passes to the store) as
   * a data blob unless the repository has it. Blobs are added in call order; this waits while too many are in
   * flight (backpressure). `onStored` learns whether the blob was new.
   */
  async store(id: BlobId, window: Buffer, onStored?: (stored: boolean) => void): Promise<void> {
    // Known blobs are not encoded at all: the check the repository would make after the work, made before it.
    if (this.hasBlob(id)) {
      this.recycle(window)
      onStored?.(false)
      return
    }
    this.#added.push(id)
    this.jobCounts.encoded++
    const length = window.length
    const onPut = (r: { stored: boolean }) => {
      // The target has it now: keeping every id here too was 100-150 bytes a blob for the whole backup.
      const at = this.#added.indexOf(id)
      if (at >= 0) this.#added.splice(at, 1)
      if (r.stored) this.storedBytes += length
      onStored?.(r.stored)
    }
    const pool = this.#poolFor(window)
    if (!pool && this.#pool) this.jobCounts.encodedByCaller++
    let done: Promise<void>
    if (!pool && this.#deferredAdds === 0) {
      // Every earlier blob is added already: encode and add this one now, in call order. putEncoded copies the
      // bytes before it returns, so the encoded view (the codec's scratch) and the window are free again at once.
      let put: Promise<{ stored: boolean }>
      try {
        const e = this.#target.codec.encode(window)
        put = this.#target.putEncoded(id, e.stored, e.flags, length, this.#signal)
      } catch (err) {
        put = Promise.reject(err)
      }
      this.recycle(window)
      done = put.then(onPut)
    } else {
      // `release` gives the window back once its stored bytes (which may lie in it) were copied into the pack.
      let encoded: Promise<{ stored: Buffer; flags: number; release?: () => void }>
      if (pool) {
        encoded = pool.encode(window).then((e) => ({ stored: e.stored, flags: e.flags, release: () => pool.recycle(e.window) }))
      } else {
        try {
          const e = this.#target.codec.encode(window)
          // It waits for the blobs before it, and the codec's scratch serves the next encode: into the window's
          // memory (storedInWindow), or else a copy of its own.
          const kept = storedInWindow(e.stored, window)
          encoded = Promise.resolve(
            kept ? { stored: kept, flags: e.flags, release: () => this.recycle(window) } : { stored: Buffer.from(e.stored), flags: e.flags },
          )
          if (!kept) this.recycle(window)
        } catch (err) {
          encoded = Promise.reject(err)
          this.recycle(window)
        }
      }
      const previous = this.#last
      this.#deferredAdds++
      done = (async () => {
        let put: Promise<{ stored: boolean }>
        try {
          const e = await encoded
          await previous
          put = this.#target.putEncoded(id, e.stored, e.flags, length, this.#signal)
          e.release?.()
        } finally {
          this.#deferredAdds--
        }
        onPut(await put)
      })()
    }
    // Observed by drain() or a later store(); a failed ingest may never get there.
    done.catch(() => {})
    this.#last = done
    this.#queue.push(done)
    while (this.#queue.length > this.maxAhead) await this.#queue.shift()
  }

  /**
   * The pool to give `window`'s work to, or undefined to do it on the calling thread: a small window costs less here
   * than its trip to a worker, and while every turn is taken, waiting for one would leave this thread idle. On two
   * cores, one worker and the calling thread taking what the worker cannot share the work of a full backup between
   * them (the calling thread alone was the bottleneck, and a worker alone too).
   */
  #poolFor(window: Buffer): CodecPool | undefined {
    const pool = this.#pool
    return pool && window.length >= POOLED_MIN_BYTES && !pool.saturated ? pool : undefined
  }

  /** Resolves once every blob stored so far is added to the repository (rejects with the first failure). */
  async drain(): Promise<void> {
    while (this.#queue.length > 0) await this.#queue.shift()
  }

  /** Drains, then stops the workers. */
  async close(): Promise<void> {
    try {
      await this.drain()
    } finally {
      await this.#pool?.close()
    }
  }
}
