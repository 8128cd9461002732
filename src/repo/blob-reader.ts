// Reads blobs for a restore in runs: the blobs requested together (a worker reading ahead through a file) that lie
// close together in one pack are fetched with one storage read, then each is decoded and verified against its id
// with the repository's codec, on a CodecPool's workers when the reader has one. A restore reads blobs in about the
// order a backup wrote them, so most runs cover several blobs: far fewer requests (one object store GET per run
// instead of per blob) and system calls. Anything unusual (a blob not in the index, a short read, a blob that does
// not verify) goes through the repository's readBlob, which reads it again on its own and says precisely what is
// wrong. The reader also hashes the pages of files on disk for a delta restore, on the same workers.

import type { Storage } from '../storage/storage.js'
import { BlobCodec, type BlobId } from './blob.js'
import type { BlobLocation } from './blob-index.js'
import { pageHashesOf } from './codec-work.js'
import type { CodecPool } from './codec-pool.js'
import type { RepoKeys } from './crypto.js'
import { type PageHashAlgorithm, WINDOW_BYTES } from './file-map.js'
import { packKey } from './layout.js'
import { readObject } from './storage-io.js'

export interface BlobReaderOptions {
  /** Blobs whose stored bytes are at most this far apart in a pack are read together (default 256 KiB). */
  maxGapBytes?: number
  /** A run is cut at this many stored bytes (default 8 MiB). */
  maxRunBytes?: number
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

/** Bytes of a pack read ahead and kept. */
interface KeptRange {
  readonly packId: string
  readonly start: number
  readonly bytes: Buffer
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

export class BlobReader {
  readonly #codec: BlobCodec
  readonly #maxGap: number
  readonly #maxRun: number
  #queue: Request[] = []
  #scheduled = false
  #runs = 0
  #blobs = 0
  #fallbacks = 0

  readonly #free: ArrayBuffer[] = []
  readonly #kept: KeptRange[] = []
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
  }

  /** Worker threads behind this reader (0: the calling thread decodes). */
  get workers(): number {
    return this.pool?.workers ?? 0
  }

  /** A window buffer (WINDOW_BYTES) for hashPages, owned by the caller until it passes it there. */
  takeBuffer(): Buffer {
    if (this.pool) return this.pool.takeBuffer()
    return Buffer.from(this.#free.pop() ?? new ArrayBuffer(WINDOW_BYTES))
  }

  /** Gives back a buffer from takeBuffer (or a view over one); the caller must not use it again. */
  recycle(window: Buffer): void {
    if (this.pool) return this.pool.recycle(window)
    const ab = window.buffer
    if (ab instanceof ArrayBuffer && ab.byteLength === WINDOW_BYTES && this.#free.length < 8) this.#free.push(ab)
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

  /** The verified plain bytes of a blob; requests made in the same turn of the event loop share storage reads. */
  read(id: BlobId): Promise<Buffer> {
    const loc = this.repo.locateBlob(id)
    if (!loc) return this.repo.readBlob(id, { signal: this.o.signal })
    const kept = this.#kept.find((k) => k.packId === loc.packId && loc.offset >= k.start && loc.offset + loc.storedLength <= k.start + k.bytes.length)
    if (kept) {
      this.#keptHits++
      return new Promise<Buffer>((resolve, reject) => this.#decodeFrom(kept.bytes, kept.start, { id, loc, resolve, reject }))
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
   * Storage reads made, blobs asked of them, blobs read again through Repository.readBlob, and blobs served from
   * ranges read ahead.
   */
  get stats(): { runs: number; blobs: number; fallbacks: number; readAheadHits: number } {
    return { runs: this.#runs, blobs: this.#blobs, fallbacks: this.#fallbacks, readAheadHits: this.#keptHits }
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

  async #readRun(packId: string, run: Request[]): Promise<void> {
    const start = run[0]!.loc.offset
    // Past the end of the pack, a read returns what there is.
    const end = Math.max(start + (this.o.readAheadBytes ?? 0), ...run.map((r) => r.loc.offset + r.loc.storedLength))
    let bytes: Buffer | undefined
    try {
      this.#runs++
      bytes = await readObject(this.repo.storage, packKey(packId), { offset: start, length: end - start, signal: this.o.signal })
    } catch {
      // Missing pack, I/O error, abort: each blob's own read reports it the repository's way.
    }
    if (bytes && this.o.readAheadBytes) {
      this.#kept.push({ packId, start, bytes })
      if (this.#kept.length > (this.o.keepRanges ?? 4)) this.#kept.shift()
    }
    for (const r of run) {
      this.#blobs++
      this.#decodeFrom(bytes, start, r)
    }
  }

  /** Decodes request `r` from `bytes`, read from its pack at `start` (undefined or short: read it on its own). */
  #decodeFrom(bytes: Buffer | undefined, start: number, r: Request): void {
    const at = r.loc.offset - start
    if (!bytes || bytes.length < at + r.loc.storedLength) {
      this.#fallback(r)
      return
    }
    const stored = bytes.subarray(at, at + r.loc.storedLength)
    if (this.pool) {
      this.pool.decode(stored, r.loc.flags, r.loc.plainLength, r.id).then(r.resolve, () => this.#fallback(r))
      return
    }
    try {
      let plain = this.#codec.decode(stored, r.loc.flags, r.loc.plainLength, Buffer.from(r.id, 'hex'), `blob '${r.id}'`)
      // An uncompressed blob comes back as a view into the whole run: copy it so the run can be freed.
      if (plain.buffer === bytes.buffer) plain = Buffer.from(plain)
      r.resolve(plain)
    } catch {
      this.#fallback(r)
    }
  }

  #fallback(r: Request): void {
    this.#fallbacks++
    this.repo.readBlob(r.id, { signal: this.o.signal }).then(r.resolve, r.reject)
  }
}
