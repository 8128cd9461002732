// Worker threads for the per-byte work of ingest: a fixed set of workers (window-worker.ts) that analyze windows
// (page hashes, blob id, CRC-32C) and encode blobs with one repository's codec, a bound on jobs in flight, and a
// free list of 1 MiB window buffers that travel to the workers and back as transferred ArrayBuffers.

import { existsSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { AssertionError } from '../errors.js'
import type { BlobId } from '../repo/blob.js'
import type { RepoKeys } from '../repo/crypto.js'
import { WINDOW_BYTES } from '../repo/file-map.js'
import type { Repository } from '../repo/repository.js'
import type { AnalyzeRequest, WindowJob, WindowJobResult, WindowWorkerData } from './window-work.js'

/** The analysis of a window (see window-work.ts) and the window itself, back from the worker. */
export interface WindowFacts {
  /** The window's bytes: a new view over the same memory, which the caller owns again. */
  readonly window: Buffer
  readonly allZero: boolean
  readonly crc32c: number | undefined
  readonly id: BlobId | undefined
  readonly pageHashes: Buffer | undefined
}

/** A window encoded as the repository stores it, and the window itself, back from the worker. */
export interface EncodedWindow {
  readonly window: Buffer
  readonly stored: Buffer
  readonly flags: number
}

export interface WindowPoolOptions {
  /** The repository's keys (undefined: plain repository). */
  keys: RepoKeys | undefined
  /** zstd level of the repository (undefined: blobs are stored uncompressed). */
  compressionLevel: number | undefined
  /** Worker threads (at least 1). */
  workers: number
  /** Jobs sent to workers and not yet answered, at most; more wait their turn (default 2 per worker). */
  maxInFlight?: number
  /** The compiled worker module (default: window-worker.js beside this module). */
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
  readonly resolve: (r: WindowJobResult) => void
  readonly reject: (err: unknown) => void
}

const DEFAULT_WORKER_URL = new URL('./window-worker.js', import.meta.url)
const DEFAULT_IDLE_MS = 2_000
/** More workers than this only add memory: the main thread, parsing the protocol and tar, cannot feed them. */
const MAX_DEFAULT_WORKERS = 4
/** Window buffers kept for reuse beyond those in flight. */
const SPARE_BUFFERS = 4

/**
 * A fixed number of worker threads bound to one repository's codec. Workers start on the first job and stop after
 * `idleMs` without work; an idle pool keeps no thread alive and does not hold the process open. Jobs beyond
 * `maxInFlight` wait for a free turn, so memory stays bounded by the callers' own limits plus this many windows.
 * Results come back per job; callers order them.
 */
export class WindowPool {
  readonly workers: number
  readonly maxInFlight: number
  /** Jobs answered so far, by kind (for tests and profiles: encodes should match blobs actually stored). */
  readonly jobCounts = { analyze: 0, encode: 0 }
  readonly #workerData: WindowWorkerData
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

  constructor(o: WindowPoolOptions) {
    if (!Number.isSafeInteger(o.workers) || o.workers < 1) throw new AssertionError(`a window pool needs at least one worker, not ${o.workers}`)
    this.workers = o.workers
    this.maxInFlight = Math.max(1, o.maxInFlight ?? 2 * o.workers)
    this.#workerData = {
      // Copies of exactly the keys' bytes: a view would carry its whole backing buffer to the worker.
      keys: o.keys ? { dataKey: new Uint8Array(o.keys.dataKey), idKey: new Uint8Array(o.keys.idKey) } : undefined,
      compressionLevel: o.compressionLevel,
    }
    this.#workerUrl = o.workerUrl ?? DEFAULT_WORKER_URL
    this.#idleMs = o.idleMs ?? DEFAULT_IDLE_MS
  }

  /** True once close() was called. */
  get closed(): boolean {
    return this.#closed
  }

  /** Threads running now (0 while idle). */
  get runningWorkers(): number {
    return this.#slots.filter((s) => !s.dead).length
  }

  /** A window buffer (WINDOW_BYTES, contents undefined) that the caller owns until it passes it to a job. */
  takeBuffer(): Buffer {
    const ab = this.#free.pop() ?? new ArrayBuffer(WINDOW_BYTES)
    return Buffer.from(ab)
  }

  /** Gives back a buffer from takeBuffer (or any view over one) for reuse; the caller must not use it again. */
  recycle(window: Buffer): void {
    const ab = window.buffer
    if (ab instanceof ArrayBuffer && ab.byteLength === WINDOW_BYTES && this.#free.length < this.maxInFlight + SPARE_BUFFERS) this.#free.push(ab)
  }

  /**
   * Analyzes `window` (a view over a buffer from takeBuffer, which passes to the pool): CRC-32C, all-zero test,
   * blob id and page hashes as `request` asks. Resolves with the results and the window's bytes.
   */
  async analyze(window: Buffer, request: AnalyzeRequest): Promise<WindowFacts> {
    const { buffer, offset, length } = this.#detachable(window)
    const job = this.#nextJob++
    const r = await this.#run({ op: 'analyze', job, buffer, offset, length, request }, [buffer])
    if (r.op !== 'analyze') throw new AssertionError(`window worker answered an analyze job with '${r.op}'`)
    this.jobCounts.analyze++
    return {
      window: Buffer.from(r.buffer, offset, length),
      allZero: r.allZero,
      crc32c: r.crc32c,
      id: r.id,
      pageHashes: r.pageHashes ? Buffer.from(r.pageHashes) : undefined,
    }
  }

  /**
   * Encodes `window` (a view over a buffer from takeBuffer, which passes to the pool) as the repository's codec
   * stores a data blob. Resolves with the stored bytes (a buffer of their own), flags and the window's bytes.
   */
  async encode(window: Buffer): Promise<EncodedWindow> {
    const { buffer, offset, length } = this.#detachable(window)
    const job = this.#nextJob++
    const r = await this.#run({ op: 'encode', job, buffer, offset, length }, [buffer])
    if (r.op !== 'encode') throw new AssertionError(`window worker answered an encode job with '${r.op}'`)
    this.jobCounts.encode++
    return { window: Buffer.from(r.buffer, offset, length), stored: Buffer.from(r.stored), flags: r.flags }
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
      p.reject(new AssertionError('the window pool was closed'))
    }
    await this.#stopWorkers()
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

  async #run(m: WindowJob, transfer: ArrayBuffer[]): Promise<WindowJobResult> {
    while (this.#inFlight >= this.maxInFlight && !this.#closed) await new Promise<void>((resolve) => this.#waiting.push(resolve))
    if (this.#closed) throw new AssertionError('the window pool is closed')
    const slot = this.#pick()
    this.#inFlight++
    clearTimeout(this.#idleTimer)
    if (slot.outstanding++ === 0) slot.worker.ref()
    const answer = new Promise<WindowJobResult>((resolve, reject) => this.#jobs.set(m.job, { slot, resolve, reject }))
    slot.worker.postMessage(m, transfer)
    const r = await answer
    if (r.op === 'error') {
      this.recycle(Buffer.from(r.buffer))
      throw new AssertionError(`window worker failed: ${r.message}`)
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
    worker.on('message', (r: WindowJobResult) => this.#answered(r))
    const fail = (why: string) => {
      if (slot.dead) return
      slot.dead = true
      for (const [job, p] of this.#jobs) {
        if (p.slot !== slot) continue
        this.#jobs.delete(job)
        this.#finished(slot)
        p.reject(new AssertionError(`window worker ${why}`))
      }
    }
    worker.on('error', (err) => fail(`failed: ${err.message}`))
    worker.on('exit', (code) => fail(`exited with code ${code}`))
    return slot
  }

  #answered(r: WindowJobResult): void {
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
      if (this.#inFlight === 0) void this.#stopWorkers()
    }, this.#idleMs)
    this.#idleTimer.unref()
  }

  async #stopWorkers(): Promise<void> {
    clearTimeout(this.#idleTimer)
    const slots = this.#slots
    this.#slots = []
    for (const s of slots) s.dead = true
    await Promise.all(slots.map((s) => s.worker.terminate()))
  }
}

/** Process-wide settings of the pools ingest uses; the CLI sets them from its options and environment. */
export interface IngestWorkerSettings {
  /** Worker threads per pool: 'auto' (the default, see defaultIngestWorkers); 0 runs everything on the main thread. */
  workers?: number | 'auto'
  /** Relation files smaller than this are hashed on the main thread (a round trip costs more than the work). */
  minPooledFileBytes?: number
  /**
   * Bytes of files of at least minPooledFileBytes that a repository ingests on the main thread before its workers
   * take over (they start at half of it): a backup smaller than this is over before workers pay for their start.
   */
  warmupBytes?: number
  /** The compiled worker module (tests running from TypeScript sources point at a compiled copy). */
  workerUrl?: URL
}

/** Relation files below this size stay on the main thread (bench/profile-backup.bench.ts). */
export const DEFAULT_MIN_POOLED_FILE_BYTES = 256 * 1024
/**
 * A worker takes ~90 ms and ~80 ms of CPU to start (loading modules, zstd); a backup of a fresh cluster (~30 MB)
 * was 7 % slower with one than without, while each MB moved off the main thread saves ~4 ms: break-even near 25 MB.
 */
export const DEFAULT_WARMUP_BYTES = 32 * 1024 * 1024

interface Settings {
  workers: number | 'auto'
  minPooledFileBytes: number
  warmupBytes: number
  workerUrl: URL | undefined
}

let settings: Settings = {
  workers: 'auto',
  minPooledFileBytes: DEFAULT_MIN_POOLED_FILE_BYTES,
  warmupBytes: DEFAULT_WARMUP_BYTES,
  workerUrl: undefined,
}
const shared = new WeakMap<Repository, { pool: WindowPool | undefined; eligibleBytes: number }>()
const available = new Map<string, boolean>()

/** Changes the settings of the pools ingest uses from now on (fields left out keep their value). */
export function configureIngestWorkers(o: IngestWorkerSettings): void {
  if (o.workers !== undefined && o.workers !== 'auto' && (!Number.isSafeInteger(o.workers) || o.workers < 0)) {
    throw new AssertionError(`invalid number of ingest workers ${o.workers}`)
  }
  settings = {
    workers: o.workers ?? settings.workers,
    minPooledFileBytes: o.minPooledFileBytes ?? settings.minPooledFileBytes,
    warmupBytes: o.warmupBytes ?? settings.warmupBytes,
    workerUrl: o.workerUrl ?? settings.workerUrl,
  }
}

/** The current settings (for ingest). */
export function ingestWorkerSettings(): Readonly<Settings> {
  return settings
}

/**
 * Worker threads for `parallelism` cores: one core stays with the main thread (protocol, tar, placing results) and
 * one with the rest of a backup (PostgreSQL's WAL sender when it runs on the same host, V8's GC threads, the WAL
 * stream); at most MAX_DEFAULT_WORKERS. So none on 2 cores: there, measured on a shared 2-core machine
 * (bench/profile-backup.bench.ts), one worker halved the main thread's CPU but left no core free to use it: wall
 * time 0 to 11 % worse, +8 % CPU, +25 MB peak RSS. configureIngestWorkers({ workers }) overrides this.
 */
export function defaultIngestWorkers(parallelism = availableParallelism()): number {
  return Math.max(0, Math.min(MAX_DEFAULT_WORKERS, parallelism - 2))
}

/**
 * The pool for ingesting a file of `fileBytes` into `repo`, or undefined to ingest it on the calling thread: when
 * workers are off, the file is smaller than minPooledFileBytes, the repository has not ingested warmupBytes of
 * such files yet (counting this one), or no compiled worker module exists (running from TypeScript sources). The
 * pool is created on first use and kept with the repository.
 */
export function sharedWindowPool(repo: Repository, fileBytes: number): WindowPool | undefined {
  const workers = settings.workers === 'auto' ? defaultIngestWorkers() : settings.workers
  if (workers === 0 || fileBytes < settings.minPooledFileBytes) return undefined
  const url = settings.workerUrl ?? DEFAULT_WORKER_URL
  let ok = available.get(url.href)
  if (ok === undefined) available.set(url.href, (ok = url.protocol !== 'file:' || existsSync(fileURLToPath(url))))
  if (!ok) return undefined
  let s = shared.get(repo)
  if (!s) shared.set(repo, (s = { pool: undefined, eligibleBytes: 0 }))
  s.eligibleBytes += fileBytes
  if (s.eligibleBytes < settings.warmupBytes / 2) return undefined
  if (!s.pool || s.pool.closed || s.pool.workers !== workers) {
    const c = repo.config.compression
    s.pool = new WindowPool({ keys: repo.keys, compressionLevel: c.algorithm === 'zstd' ? c.level : undefined, workers, workerUrl: url })
  }
  if (s.eligibleBytes >= settings.warmupBytes) return s.pool
  // Halfway: start the threads now, so they are ready when the warm-up ends.
  s.pool.prestart()
  return undefined
}
