// Reads blobs for a restore in runs: the blobs requested together (a worker reading ahead through a file) that lie
// close together in one pack are fetched with one storage read, then each is decoded and verified against its id
// with the repository's codec, on a CodecPool's workers when the reader has one and a worker has a free turn
// (window-sized blobs: small ones are decoded at once on the calling thread, cheaper than a round trip to a worker;
// with every turn taken, the calling thread decodes a window itself rather than wait). A restore reads blobs in
// about the order a backup wrote them, so most runs cover several blobs: far fewer requests (one object store GET
// per run instead of per blob) and system calls. Anything unusual (a blob not in the index, a short read, a blob that does
// not verify) goes through the repository's readBlob, which reads it again on its own and says precisely what is
// wrong. The reader also hashes the pages of files on disk for a delta restore, on the same workers.
//
// Memory: a run is decoded as its bytes stream in (a blob lying in one chunk of the read is decoded from that
// chunk, one spanning chunks is gathered first), and window-sized blobs go into buffers the reader lends and takes
// back (`giveBack`), and so do small data blobs of whole pages (small relation files), in buffers of exactly their
// size. A restore that gives its blobs back allocates almost nothing per blob: no fresh pages to fault in, no
// external memory for the garbage collector to chase (bench/results/profiles.md measured both). Other small blobs
// (file maps, odd-sized files) get buffers of their own: a window-sized buffer each would cost far more memory than
// the cache counts.

import type { Storage } from '../storage/storage.js'
import { BlobCodec, type BlobId } from './blob.js'
import type { BlobLocation } from './blob-index.js'
import { pageHashesOf } from './codec-work.js'
import { type CodecPool, POOLED_MIN_BYTES } from './codec-pool.js'
import { type RepoKeys, SEAL_OVERHEAD_BYTES } from './crypto.js'
import { PAGE_BYTES, type PageHashAlgorithm, WINDOW_BYTES } from './file-map.js'
import { packKey } from './layout.js'
import { ReadAheadRanges } from './read-ahead-ranges.js'

export interface BlobReaderOptions {
  /** Blobs whose stored bytes are at most this far apart in a pack are read together (default 256 KiB). */
  maxGapBytes?: number
  /** A run is cut at this many stored bytes (default 8 MiB). */
  maxRunBytes?: number
  /**
   * Blob buffers given back and kept for the next blobs, at most (default 24; more are left to the GC). A restore's
   * cache hands buffers back as it evicts blobs, in bursts that do not match when the next blobs need them: with 8,
   * a restore of the 2 GB bench data gave back 1,904 windows and still allocated 695 new ones, and array buffers
   * allocated since V8's last full collection count towards starting the next (24-32 full collections per restore;
   * 15-18 with 24). With storage reads into reused chunks, 24 also peaked lower on a restore of 40,000 small tables
   * (226-230 MB against 247-258 with 8, 4 alternating runs). Once, before reads reused their chunks, 32 peaked
   * higher there: the windows of the catalogs the restore began with lay idle.
   */
  spareBuffers?: number
  /**
   * Read at least this many bytes of a pack from the start of each run, and keep what was read (`keepRanges` of
   * them at most) to serve later reads of blobs that lie in it without another storage read (default 0: read
   * exactly the run). For metadata written in about the order it is read again: a parent backup's file maps.
   */
  readAheadBytes?: number
  /** Ranges kept for readAheadBytes (default 4). */
  keepRanges?: number
  signal?: AbortSignal
}

/** What a BlobReader needs of its repository (given by Repository.openBlobReader). */
export interface BlobReaderSource {
  readonly storage: Storage
  readonly keys: RepoKeys | undefined
  locateBlob(id: BlobId): BlobLocation | undefined
  readBlob(id: BlobId, o: { signal?: AbortSignal }): Promise<Buffer>
}

interface Request {
  id: BlobId
  loc: BlobLocation
  resolve: (b: Buffer) => void
  reject: (err: unknown) => void
}

/** Stored bytes of one blob to decode: a view into a read chunk, or a buffer of the reader's own. */
interface PendingDecode {
  r: Request
  stored: Uint8Array
  own: ArrayBuffer | undefined
}

/**
 * The size of the reader's blob buffers: a window's plain bytes, or its stored bytes (plus what encryption adds;
 * zstd is kept only when smaller). A size nothing else allocates: giveBack() keeps any buffer of this size (and
 * small ones only when this reader lent them).
 */
const POOL_BUFFER_BYTES = WINDOW_BYTES + SEAL_OVERHEAD_BYTES
/**
 * Plain bytes of more than half a buffer go into the reader's buffers (a smaller blob would hold a whole buffer as
 * long as the cache keeps it); stored bytes travel in them from 64 KiB (they come back as soon as decoded).
 */
const POOLED_PLAIN_MIN = POOL_BUFFER_BYTES / 2
const POOLED_STORED_MIN = 64 << 10
/**
 * Small data blobs of whole pages, up to SMALL_POOLED_MAX, are decoded into buffers of exactly their size that the
 * reader lends and takes back too: the content of small relation files (one to a few pages), nearly every blob a
 * restore of many relations reads. Each got a fresh buffer before: 630 MB of 8-64 KiB buffers in a restore of
 * 40,000 small tables, garbage between V8's collections (45 MB of it at the peak). 4 alternating pairs, restore
 * --jobs 4: 20,000 tables 4.1-4.3 user-s and 200-210 MB against 4.4-4.6 and 211-215; 40,000 tables 7.2-8.8 against
 * 7.8-8.7 user-s, peaks 224-240 against 218-233 MB (collections came later, and the JS heap grew instead).
 * Data only: a metadata blob (a file map) is parsed by its reader, which is free to keep views of it.
 */
const SMALL_POOLED_MAX = 8 * PAGE_BYTES
/** Bytes of small buffers given back and kept, at most: about what a restore's cache holds of small blobs. */
const SMALL_SPARE_BYTES = 8 << 20

export class BlobReader {
  readonly #codec: BlobCodec
  readonly #maxGap: number
  readonly #maxRun: number
  readonly #spare: number
  #queue: Request[] = []
  #scheduled = false
  #runs = 0
  #blobs = 0
  #fallbacks = 0

  /** Free blob buffers (POOL_BUFFER_BYTES: plain or stored bytes), and free hashing windows without a pool. */
  readonly #free: ArrayBuffer[] = []
  readonly #freeWindows: ArrayBuffer[] = []
  /** Free small buffers by size (SMALL_POOLED_MAX), their bytes, and those lent out now (taken back only once). */
  readonly #freeSmall = new Map<number, ArrayBuffer[]>()
  #freeSmallBytes = 0
  readonly #lentSmall = new WeakSet<ArrayBuffer>()
  /** Window-sized blobs decoded on the calling thread because every turn of the pool's workers was taken. */
  #decodedByCaller = 0
  readonly #kept: ReadAheadRanges
  #keptHits = 0

  /** @internal made by Repository.openBlobReader */
  constructor(
    private readonly repo: BlobReaderSource,
    private readonly pool: CodecPool | undefined,
    private readonly o: BlobReaderOptions = {},
  ) {
    // Decoding needs only the keys; the compression level matters for encoding alone.
    this.#codec = new BlobCodec(repo.keys, undefined)
    this.#maxGap = o.maxGapBytes ?? 256 << 10
    this.#maxRun = o.maxRunBytes ?? 8 << 20
    this.#spare = o.spareBuffers ?? 24
    this.#kept = new ReadAheadRanges(o.keepRanges ?? 4)
  }

  /** Worker threads behind this reader (0: the calling thread decodes). */
  get workers(): number {
    return this.pool?.workers ?? 0
  }

  /** A window buffer (WINDOW_BYTES) for hashPages, owned by the caller until it passes it there. */
  takeBuffer(): Buffer {
    if (this.pool) return this.pool.takeBuffer()
    return Buffer.from(this.#freeWindows.pop() ?? new ArrayBuffer(WINDOW_BYTES))
  }

  /** Gives back a buffer from takeBuffer (or a view over one); the caller must not use it again. */
  recycle(window: Buffer): void {
    if (this.pool) return this.pool.recycle(window)
    const ab = window.buffer
    if (ab instanceof ArrayBuffer && ab.byteLength === WINDOW_BYTES && this.#freeWindows.length < 8) this.#freeWindows.push(ab)
  }

  /**
   * Gives back a blob from read() (or a view over one) once nothing uses it any more, so that a later blob is
   * decoded into its buffer; the caller must not use it again. A blob in a buffer of its own is left to the GC.
   */
  giveBack(blob: Buffer): void {
    this.#putBack(blob.buffer)
  }

  /**
   * The page hashes in `algorithm` (a file map's: compare with its own) of `window`, a view over a buffer from
   * takeBuffer, which passes to the reader and comes back as the result's `window`.
   */
  async hashPages(window: Buffer, algorithm: PageHashAlgorithm): Promise<{ window: Buffer; hashes: Buffer }> {
    if (this.pool) return this.pool.hashPages(window, algorithm)
    return { window, hashes: pageHashesOf(window, algorithm) }
  }

  /** Stops the workers. */
  async close(): Promise<void> {
    await this.pool?.close()
  }

  /**
   * The verified plain bytes of a blob; requests made in the same turn of the event loop share storage reads. A
   * window-sized blob comes in a buffer of the reader's: give it back with giveBack() once done with it.
   */
  read(id: BlobId): Promise<Buffer> {
    const loc = this.repo.locateBlob(id)
    if (!loc) return this.repo.readBlob(id, { signal: this.o.signal })
    const kept = this.#kept.find(loc.packId, loc.offset, loc.storedLength)
    if (kept) {
      this.#keptHits++
      return new Promise<Buffer>((resolve, reject) => this.#decode({ r: { id, loc, resolve, reject }, stored: kept, own: undefined }))
    }
    return new Promise<Buffer>((resolve, reject) => {
      this.#queue.push({ id, loc, resolve, reject })
      if (!this.#scheduled) {
        this.#scheduled = true
        // Not a microtask: requests made across several awaits of the same turn (an async generator looking
        // ahead) would each flush alone.
        setImmediate(() => this.#flush())
      }
    })
  }

  /**
   * Storage reads made, blobs asked of them, blobs read again through Repository.readBlob, blobs served from
   * ranges read ahead, and window-sized blobs this thread decoded because every worker's turn was taken.
   */
  get stats(): { runs: number; blobs: number; fallbacks: number; readAheadHits: number; decodedByCaller: number } {
    return { runs: this.#runs, blobs: this.#blobs, fallbacks: this.#fallbacks, readAheadHits: this.#keptHits, decodedByCaller: this.#decodedByCaller }
  }

  /** A buffer of the reader's for `length` plain bytes, or undefined when the blob is not window-sized. */
  #take(length: number, min = POOLED_PLAIN_MIN): ArrayBuffer | undefined {
    if (length <= min || length > POOL_BUFFER_BYTES) return undefined
    return this.#free.pop() ?? Buffer.allocUnsafeSlow(POOL_BUFFER_BYTES).buffer
  }

  /** A buffer of the reader's for the plain bytes of the blob at `loc`, or undefined for a buffer of its own. */
  #takePlain(loc: BlobLocation): ArrayBuffer | undefined {
    const length = loc.plainLength
    if (loc.type !== 'data' || length === 0 || length % PAGE_BYTES !== 0 || length > SMALL_POOLED_MAX) return this.#take(length)
    let ab = this.#freeSmall.get(length)?.pop()
    if (ab) this.#freeSmallBytes -= length
    else ab = new ArrayBuffer(length)
    this.#lentSmall.add(ab)
    return ab
  }

  /** A buffer of its own (transferable) for `length` stored bytes: one of the reader's unless small or large. */
  #takeStored(length: number): ArrayBuffer {
    return this.#take(length, POOLED_STORED_MIN) ?? Buffer.allocUnsafeSlow(length).buffer
  }

  #putBack(ab: ArrayBufferLike | undefined): void {
    if (!(ab instanceof ArrayBuffer)) return
    if (ab.byteLength === POOL_BUFFER_BYTES) {
      if (this.#free.length < this.#spare) this.#free.push(ab)
      return
    }
    // Only a small buffer this reader lent, and once: what it lent again must belong to one blob alone.
    if (!this.#lentSmall.delete(ab) || this.#freeSmallBytes + ab.byteLength > SMALL_SPARE_BYTES) return
    const list = this.#freeSmall.get(ab.byteLength)
    if (list) list.push(ab)
    else this.#freeSmall.set(ab.byteLength, [ab])
    this.#freeSmallBytes += ab.byteLength
  }

  #flush(): void {
    this.#scheduled = false
    const queue = this.#queue
    this.#queue = []
    const byPack = new Map<string, Request[]>()
    for (const r of queue) {
      const list = byPack.get(r.loc.packId)
      if (list) list.push(r)
      else byPack.set(r.loc.packId, [r])
    }
    for (const [packId, list] of byPack) {
      list.sort((a, b) => a.loc.offset - b.loc.offset)
      let run: Request[] = []
      for (const r of list) {
        const first = run[0]
        const last = run[run.length - 1]
        if (
          first &&
          last &&
          (r.loc.offset - (last.loc.offset + last.loc.storedLength) > this.#maxGap || r.loc.offset + r.loc.storedLength - first.loc.offset > this.#maxRun)
        ) {
          void this.#readRun(packId, run)
          run = []
        }
        run.push(r)
      }
      if (run.length > 0) void this.#readRun(packId, run)
    }
  }

  /** One storage read for `run` (sorted by offset); each blob is decoded as soon as its bytes are in. */
  async #readRun(packId: string, run: Request[]): Promise<void> {
    const start = run[0]!.loc.offset
    // With read-ahead, past the end of the pack a read returns what there is.
    const end = Math.max(start + (this.o.readAheadBytes ?? 0), ...run.map((r) => r.loc.offset + r.loc.storedLength))
    const keep: Uint8Array[] | undefined = this.o.readAheadBytes ? [] : undefined
    this.#runs++
    let next = 0
    // The stored bytes of run[next] when they span chunks: gathered here until complete.
    let gathering: { buffer: ArrayBuffer; filled: number } | undefined
    try {
      let at = start
      // Packs are named by their content: the storage may keep them open between the many reads of a restore.
      // Nothing keeps a view of a chunk past its turn (see #decode) unless the read is kept whole for later reads.
      const reuseChunks = keep === undefined
      for await (const chunk of this.repo.storage.read(packKey(packId), {
        offset: start,
        length: end - start,
        signal: this.o.signal,
        immutable: true,
        reuseChunks,
      })) {
        const chunkEnd = at + chunk.length
        keep?.push(chunk)
        while (next < run.length) {
          const r = run[next]!
          const from = r.loc.offset
          const to = from + r.loc.storedLength
          if (from >= chunkEnd) break
          if (!gathering && from < at) {
            // It began in an earlier chunk (the same blob asked for twice in one turn): read on its own.
            this.#blobs++
            this.#fallback(r)
            next++
            continue
          }
          if (!gathering && to <= chunkEnd) {
            this.#decode({ r, stored: chunk.subarray(from - at, to - at), own: undefined })
            next++
            continue
          }
          gathering ??= { buffer: this.#takeStored(r.loc.storedLength), filled: 0 }
          const copyFrom = Math.max(from + gathering.filled, at)
          const copyTo = Math.min(to, chunkEnd)
          new Uint8Array(gathering.buffer, copyFrom - from, copyTo - copyFrom).set(chunk.subarray(copyFrom - at, copyTo - at))
          gathering.filled = copyTo - from
          if (copyTo < to) break // the rest is in the next chunk
          this.#decode({ r, stored: new Uint8Array(gathering.buffer, 0, r.loc.storedLength), own: gathering.buffer })
          gathering = undefined
          next++
        }
        at = chunkEnd
      }
    } catch {
      // Missing pack, I/O error, abort: each blob's own read reports it the repository's way.
    }
    this.#putBack(gathering?.buffer)
    if (keep) this.#kept.add(packId, start, keep)
    // What the read did not deliver (a short read, a failure) is read again blob by blob.
    for (; next < run.length; next++) {
      this.#blobs++
      this.#fallback(run[next]!)
    }
  }

  #decode(d: PendingDecode): void {
    this.#blobs++
    // A window-sized blob goes to a worker while one has a free turn. With every turn taken, this thread decodes it
    // itself instead of queueing it: on two cores shared with the writes, a restore waiting for its one worker was
    // bound by that worker (bench/results/profiles.md), and a queue would only hold more windows.
    if (this.pool && d.r.loc.plainLength >= POOLED_MIN_BYTES && !this.pool.saturated) {
      this.#post(this.pool, d)
      return
    }
    if (this.pool && d.r.loc.plainLength >= POOLED_MIN_BYTES) this.#decodedByCaller++
    const { r, stored, own } = d
    const plain = this.#takePlain(r.loc)
    try {
      const out = this.#codec.decode(stored, r.loc.flags, r.loc.plainLength, Buffer.from(r.id, 'hex'), `blob '${r.id}'`, plain && Buffer.from(plain))
      // Without a buffer of ours, an uncompressed blob is a view into the read: copied, so the read can be freed.
      r.resolve(plain || out.buffer !== stored.buffer ? out : Buffer.from(out))
    } catch {
      this.#putBack(plain)
      this.#fallback(r)
    } finally {
      this.#putBack(own)
    }
  }

  /** Posts one blob to the workers; stored bytes that are a view into a read's chunk travel in a copy. */
  #post(pool: CodecPool, { r, stored, own }: PendingDecode): void {
    let travel = own
    if (!travel) {
      travel = this.#takeStored(stored.length)
      new Uint8Array(travel, 0, stored.length).set(stored)
    }
    const plain = this.#take(r.loc.plainLength)
    pool.decodeInto({ buffer: travel, length: stored.length }, plain, r.loc.flags, r.loc.plainLength, r.id).then(
      (out) => {
        this.#putBack(out.stored)
        r.resolve(out.plain)
      },
      () => this.#fallback(r),
    )
  }

  #fallback(r: Request): void {
    this.#fallbacks++
    this.repo.readBlob(r.id, { signal: this.o.signal }).then(r.resolve, r.reject)
  }
}
