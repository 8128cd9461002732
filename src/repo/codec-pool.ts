// Worker threads for the per-byte work on blobs (codec-work.ts): a fixed number of workers bound to one
// repository's codec, a bound on jobs in flight, and a free list of 1 MiB window buffers that travel to the workers
// and back as transferred ArrayBuffers. Backup analyses and encodes windows on it, restore decodes blobs and hashes
// pages. The repository makes pools (its keys never leave repo/); engines only choose how many workers.

import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { AssertionError } from '../errors.js'
import { compiledModuleUrl } from '../worker-module.js'
import type { BlobId } from './blob.js'
import type { AnalyzeRequest, CodecJob, CodecJobResult, CodecWorkerData, WindowAnalysis } from './codec-work.js'
import type { RepoKeys } from './crypto.js'
import { type PageHashAlgorithm, WINDOW_BYTES } from './file-map.js'

/** The analysis of a window and the window itself, back from the worker. */
export interface WindowFacts extends WindowAnalysis {
  /** The window's bytes: a new view over the same memory, which the caller owns again. */
  readonly window: Buffer
}

/** A window encoded as the repository stores it, and the window's buffer, back from the worker. */
export interface EncodedWindow {
  /**
   * The window's memory, which the caller owns again, to recycle once `stored` was copied: `stored` usually lies in
   * it, and the plain bytes are gone.
   */
  readonly window: Buffer
  readonly stored: Buffer
  readonly flags: number
}

export interface CodecPoolOptions {
  /** The repository's keys (undefined: plain repository). */
  keys: RepoKeys | undefined
  /** zstd level of the repository (undefined: blobs are stored uncompressed). */
  compressionLevel: number | undefined
  /** Worker threads (at least 1). */
  workers: number
  /** Jobs sent to workers and not yet answered, at most; more wait their turn (default 2 per worker). */
  maxInFlight?: number
  /** The compiled worker module (default: workerModuleUrl()). */
  workerUrl?: URL
  /** Workers stop after this long without work and start again on demand (default 2000 ms). */
  idleMs?: number
}

interface Slot {
  readonly worker: Worker
  /** Jobs posted to this worker and not answered. */
  outstanding: number
  /** Set once the worker failed or exited: no new jobs. */
  dead: boolean
}

interface PendingJob {
  readonly slot: Slot
  readonly resolve: (r: CodecJobResult) => void
  readonly reject: (err: unknown) => void
}

const DEFAULT_IDLE_MS = 2_000
/**
 * Work on fewer bytes than this (a small file, a few changed pages, a file map) stays on the calling thread: a
 * round trip to a worker (posting, copying, waking it) costs more than hashing, compressing or decoding them. A
 * restore of 41,000 small files that posted every blob spent 19 % of its main thread's time in postMessage.
 */
export const POOLED_MIN_BYTES = 256 * 1024
/** Window buffers kept for reuse beyond those in flight. */
const SPARE_BUFFERS = 4

let workerModule: URL | null | undefined

/** The compiled worker module, codec-worker.js (src/worker-module.ts says where it is looked for). */
export function workerModuleUrl(): URL | undefined {
  if (workerModule === undefined) workerModule = compiledModuleUrl(import.meta.url, 'codec-worker.js') ?? null
  return workerModule ?? undefined
}

/**
 * Worker threads for work that runs beside `mainThreadCores` busy cores, at most `max`: the cores beyond them. A
 * backup counts one (its calling thread takes a window itself while every worker is busy, so a worker there never
 * leaves work waiting), a restore two (its calling thread does the I/O and the server's share is the disk's; on two
 * cores a decoding worker cost a restore CPU and memory without saving time).
 */
export function defaultWorkers(mainThreadCores: number, max: number, parallelism = availableParallelism()): number {
  return Math.max(0, Math.min(max, parallelism - mainThreadCores))
}

/**
 * A fixed number of worker threads bound to one repository's codec. Workers start on the first job and stop after
 * `idleMs` without work; an idle pool keeps no thread alive and does not hold the process open. Jobs beyond
 * `maxInFlight` wait for a free turn, so memory stays bounded by the callers' own limits plus this many windows.
 */
export class CodecPool {
  readonly workers: number
  readonly maxInFlight: number
  /** Jobs answered so far, by kind (for tests and profiles: encodes should match blobs actually stored). */
  readonly jobCounts = { analyze: 0, encode: 0, decode: 0, hash: 0 }
  readonly #workerData: CodecWorkerData
  readonly #workerUrl: URL
  readonly #idleMs: number
  #slots: Slot[] = []
  readonly #jobs = new Map<number, PendingJob>()
  #nextJob = 1
  #inFlight = 0
  readonly #waiting: (() => void)[] = []
  readonly #free: ArrayBuffer[] = []
  #idleTimer: NodeJS.Timeout | undefined
  #closed = false

  constructor(o: CodecPoolOptions) {
    if (!Number.isSafeInteger(o.workers) || o.workers < 1) throw new AssertionError(`a codec pool needs at least one worker, not ${o.workers}`)
    const url = o.workerUrl ?? workerModuleUrl()
    if (!url) throw new AssertionError('no compiled codec worker module (run the build)')
    this.workers = o.workers
    this.maxInFlight = Math.max(1, o.maxInFlight ?? 2 * o.workers)
    this.#workerData = {
      // Copies of exactly the keys' bytes: a view would carry its whole backing buffer to the worker.
      keys: o.keys ? { dataKey: new Uint8Array(o.keys.dataKey), idKey: new Uint8Array(o.keys.idKey) } : undefined,
      compressionLevel: o.compressionLevel,
    }
    this.#workerUrl = url
    this.#idleMs = o.idleMs ?? DEFAULT_IDLE_MS
  }

  /** True once close() was called. */
  get closed(): boolean {
    return this.#closed
  }

  /**
   * True while every turn is taken: a job given now would wait for an answer first. A caller that can do the job
   * itself (WindowStore, BlobReader) does it then, so its own thread works while the workers are busy instead of
   * waiting.
   */
  get saturated(): boolean {
    return this.#inFlight >= this.maxInFlight
  }

  /** Threads running now (0 while idle). */
  get runningWorkers(): number {
    return this.#slots.filter((s) => !s.dead).length
  }

  /** A window buffer (WINDOW_BYTES, contents undefined) that the caller owns until it passes it to a job. */
  takeBuffer(): Buffer {
    return Buffer.from(this.#free.pop() ?? new ArrayBuffer(WINDOW_BYTES))
  }

  /** Gives back a buffer from takeBuffer (or any view over one) for reuse; the caller must not use it again. */
  recycle(window: Buffer): void {
    const ab = window.buffer
    if (ab instanceof ArrayBuffer && ab.byteLength === WINDOW_BYTES && this.#free.length < this.maxInFlight + SPARE_BUFFERS) this.#free.push(ab)
  }

  /** Analyses `window` (a view over a buffer from takeBuffer, which passes to the pool). */
  async analyze(window: Buffer, request: AnalyzeRequest): Promise<WindowFacts> {
    const { buffer, offset, length } = this.#detachable(window)
    const r = await this.#run({ op: 'analyze', job: this.#nextJob++, buffer, offset, length, request }, [buffer])
    if (r.op !== 'analyze') throw unexpected('analyze', r)
    return {
      window: Buffer.from(r.buffer, offset, length),
      allZero: r.allZero,
      id: r.id,
      pageHashes: r.pageHashes ? Buffer.from(r.pageHashes) : undefined,
      legacyPageHashes: r.legacyPageHashes ? Buffer.from(r.legacyPageHashes) : undefined,
      pageCrcs: r.pageCrcs ? Buffer.from(r.pageCrcs) : undefined,
    }
  }

  /**
   * Encodes `window` (a view over a buffer from takeBuffer, which passes to the pool) as a stored data blob. The
   * stored bytes come back in the window's buffer when they fit (EncodedWindow says when to recycle it).
   */
  async encode(window: Buffer): Promise<EncodedWindow> {
    const { buffer, offset, length } = this.#detachable(window)
    const r = await this.#run({ op: 'encode', job: this.#nextJob++, buffer, offset, length }, [buffer])
    if (r.op !== 'encode') throw unexpected('encode', r)
    const stored = Buffer.from(r.stored ?? r.buffer, r.storedOffset, r.storedLength)
    return { window: Buffer.from(r.buffer, offset, length), stored, flags: r.flags }
  }

  /** Decodes and verifies stored blob bytes (copied to travel); rejects with the worker's reason. */
  async decode(stored: Uint8Array, flags: number, plainLength: number, id: BlobId): Promise<Buffer> {
    const copy = new ArrayBuffer(stored.byteLength)
    new Uint8Array(copy).set(stored)
    return (await this.decodeInto({ buffer: copy, length: copy.byteLength }, undefined, flags, plainLength, id)).plain
  }

  /**
   * Decodes and verifies the first `stored.length` bytes of `stored.buffer` into `plain` (at least `plainLength`
   * bytes; a new buffer when undefined). Both buffers pass to the pool and come back in the result (`plain` as the
   * view over the plain bytes, `stored` for reuse), so a caller with its own free list allocates nothing per blob.
   * Rejects with the worker's reason; a lent `plain` buffer is not given back then.
   */
  async decodeInto(
    stored: { buffer: ArrayBuffer; length: number },
    plain: ArrayBuffer | undefined,
    flags: number,
    plainLength: number,
    id: BlobId,
  ): Promise<{ plain: Buffer; stored: ArrayBuffer | undefined }> {
    const transfer = plain ? [stored.buffer, plain] : [stored.buffer]
    const r = await this.#run(
      { op: 'decode', job: this.#nextJob++, stored: stored.buffer, storedLength: stored.length, plain, flags, plainLength, id },
      transfer,
    )
    if (r.op !== 'decode') throw unexpected('decode', r)
    return { plain: Buffer.from(r.plain, 0, plainLength), stored: r.stored }
  }

  /**
   * Page hashes of `window` in `algorithm` (a view over a buffer from takeBuffer, which passes to the pool and comes
   * back).
   */
  async hashPages(window: Buffer, algorithm: PageHashAlgorithm): Promise<{ window: Buffer; hashes: Buffer }> {
    const { buffer, offset, length } = this.#detachable(window)
    const r = await this.#run({ op: 'hash', job: this.#nextJob++, buffer, offset, length, algorithm }, [buffer])
    if (r.op !== 'hash') throw unexpected('hash', r)
    return { window: Buffer.from(r.buffer, offset, length), hashes: Buffer.from(r.hashes) }
  }

  /** Starts the workers now (they start on the first job otherwise); they stop again after `idleMs` unused. */
  prestart(): void {
    if (this.#closed) return
    this.#slots = this.#slots.filter((s) => !s.dead)
    while (this.#slots.length < this.workers) this.#slots.push(this.#start())
    if (this.#inFlight === 0) this.#armIdleTimer()
  }

  /** Stops the workers; jobs not answered yet fail. The pool cannot be used afterwards. */
  async close(): Promise<void> {
    this.#closed = true
    for (const wake of this.#waiting.splice(0)) wake()
    for (const [job, p] of this.#jobs) {
      this.#jobs.delete(job)
      this.#finished(p.slot)
      p.reject(new AssertionError('the codec pool was closed'))
    }
    clearTimeout(this.#idleTimer)
    const slots = this.#slots
    this.#slots = []
    for (const s of slots) s.dead = true
    await Promise.all(slots.map((s) => s.worker.terminate()))
  }

  #detachable(window: Buffer): { buffer: ArrayBuffer; offset: number; length: number } {
    const buffer = window.buffer
    // Only the pool's own buffers travel: transferring any other (Node's shared 8 KiB pool, a caller's buffer)
    // would detach memory that others still use.
    if (!(buffer instanceof ArrayBuffer) || buffer.byteLength !== WINDOW_BYTES) {
      throw new AssertionError('a window sent to a worker must be a view over a buffer from takeBuffer()')
    }
    return { buffer, offset: window.byteOffset, length: window.byteLength }
  }

  async #run(m: CodecJob, transfer: ArrayBuffer[]): Promise<CodecJobResult> {
    while (this.#inFlight >= this.maxInFlight && !this.#closed) await new Promise<void>((resolve) => this.#waiting.push(resolve))
    if (this.#closed) throw new AssertionError('the codec pool is closed')
    const slot = this.#pick()
    this.#inFlight++
    clearTimeout(this.#idleTimer)
    if (slot.outstanding++ === 0) slot.worker.ref()
    const answer = new Promise<CodecJobResult>((resolve, reject) => this.#jobs.set(m.job, { slot, resolve, reject }))
    slot.worker.postMessage(m, transfer)
    const r = await answer
    this.jobCounts[m.op]++
    if (r.op === 'error') {
      if (r.buffer) this.recycle(Buffer.from(r.buffer))
      throw new CodecWorkerError(r.message)
    }
    return r
  }

  /** The live worker with the fewest jobs, starting workers when fewer than `workers` live. */
  #pick(): Slot {
    this.#slots = this.#slots.filter((s) => !s.dead)
    while (this.#slots.length < this.workers) this.#slots.push(this.#start())
    let best = this.#slots[0]!
    for (const s of this.#slots) if (s.outstanding < best.outstanding) best = s
    return best
  }

  #start(): Slot {
    const worker = new Worker(this.#workerUrl, { workerData: this.#workerData })
    const slot: Slot = { worker, outstanding: 0, dead: false }
    worker.unref()
    worker.on('message', (r: CodecJobResult) => this.#answered(r))
    const fail = (why: string) => {
      if (slot.dead) return
      slot.dead = true
      for (const [job, p] of this.#jobs) {
        if (p.slot !== slot) continue
        this.#jobs.delete(job)
        this.#finished(slot)
        p.reject(new AssertionError(`codec worker ${why}`))
      }
    }
    worker.on('error', (err) => fail(`failed: ${err.message}`))
    worker.on('exit', (code) => fail(`exited with code ${code}`))
    return slot
  }

  #answered(r: CodecJobResult): void {
    const p = this.#jobs.get(r.job)
    if (!p) return
    this.#jobs.delete(r.job)
    this.#finished(p.slot)
    p.resolve(r)
  }

  /** Bookkeeping when a job is answered or lost: frees its turn, lets an idle worker stop holding the process. */
  #finished(slot: Slot): void {
    this.#inFlight--
    if (--slot.outstanding === 0 && !slot.dead) slot.worker.unref()
    this.#waiting.shift()?.()
    if (this.#inFlight === 0) this.#armIdleTimer()
  }

  #armIdleTimer(): void {
    if (this.#closed) return
    clearTimeout(this.#idleTimer)
    this.#idleTimer = setTimeout(() => {
      if (this.#inFlight > 0) return
      const slots = this.#slots
      this.#slots = []
      for (const s of slots) {
        s.dead = true
        void s.worker.terminate()
      }
    }, this.#idleMs)
    this.#idleTimer.unref()
  }
}

/** A job failed inside the worker (the bytes did not verify, say): the message is the worker's. */
export class CodecWorkerError extends Error {}

function unexpected(op: string, r: CodecJobResult): AssertionError {
  return new AssertionError(`codec worker answered a ${op} job with '${r.op}'`)
}
