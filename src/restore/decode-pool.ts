// Worker threads for the per-byte work of a restore: decoding blobs (decrypt, decompress, re-hash against the id)
// and hashing the pages of a delta restore's existing files, so that `--jobs` spreads it over the cores while the
// main thread does the I/O. Bytes travel to the workers and back as transferred ArrayBuffers. Without a compiled
// worker module (running from TypeScript sources) or with one core, there is no pool and the main thread does it.

import { existsSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { AssertionError } from '../errors.js'
import type { RepoKeys } from '../repo/crypto.js'

/** What a worker starts with: the repository's keys (secret: never logged, never sent back). */
export interface DecodeWorkerData {
  readonly keys: { readonly dataKey: Uint8Array; readonly idKey: Uint8Array } | undefined
}

export type DecodeJob =
  | { op: 'decode'; job: number; stored: ArrayBuffer; flags: number; plainLength: number; id: string }
  | { op: 'hash'; job: number; buffer: ArrayBuffer; length: number }

export type DecodeJobResult =
  | { op: 'decode'; job: number; plain: ArrayBuffer }
  | { op: 'hash'; job: number; buffer: ArrayBuffer; hashes: ArrayBuffer }
  | { op: 'error'; job: number; message: string; buffer?: ArrayBuffer }

const DEFAULT_WORKER_URL = new URL('./decode-worker.js', import.meta.url)

interface Pending {
  resolve: (r: DecodeJobResult) => void
  reject: (err: unknown) => void
}

/**
 * A fixed set of workers, started on first use. Jobs go round-robin; memory is bounded by the callers (the blob
 * cache's read-ahead, the delta windows of running jobs).
 */
export class DecodePool {
  readonly #workers: Worker[] = []
  readonly #jobs = new Map<number, Pending>()
  #next = 1
  #turn = 0
  #failure: Error | undefined

  private constructor(
    readonly size: number,
    private readonly data: DecodeWorkerData,
    private readonly url: URL,
  ) {}

  /**
   * A pool of `workers` threads for a repository with `keys`, or undefined when it would not help (0 workers) or
   * cannot run (no compiled worker module beside this one).
   */
  static create(keys: RepoKeys | undefined, workers: number, url = DEFAULT_WORKER_URL): DecodePool | undefined {
    if (workers < 1) return undefined
    if (url.protocol === 'file:' && !existsSync(fileURLToPath(url))) return undefined
    return new DecodePool(workers, { keys: keys ? { dataKey: new Uint8Array(keys.dataKey), idKey: new Uint8Array(keys.idKey) } : undefined }, url)
  }

  /** Workers for `jobs` on this machine: the main thread keeps a core for I/O; none on a single core. */
  static defaultSize(jobs: number, parallelism = availableParallelism()): number {
    return Math.max(0, Math.min(jobs, parallelism - 1, 8))
  }

  /** Decodes and verifies stored blob bytes (`stored` is copied to travel); rejects with the worker's reason. */
  async decode(stored: Uint8Array, flags: number, plainLength: number, id: string): Promise<Buffer> {
    const copy = new ArrayBuffer(stored.byteLength)
    new Uint8Array(copy).set(stored)
    const r = await this.#run({ op: 'decode', job: this.#next++, stored: copy, flags, plainLength, id }, [copy])
    if (r.op !== 'decode') throw new AssertionError(`decode worker answered with '${r.op}'`)
    return Buffer.from(r.plain)
  }

  /**
   * Page hashes (first 8 bytes of SHA-256, zeros for an all-zero page) of `window`, which must be a whole
   * ArrayBuffer of its own: it travels to the worker and comes back as the returned `window`.
   */
  async hashPages(window: Buffer): Promise<{ window: Buffer; hashes: Buffer }> {
    const buffer = window.buffer
    if (!(buffer instanceof ArrayBuffer) || window.byteOffset !== 0) throw new AssertionError('hashPages needs a buffer of its own')
    const r = await this.#run({ op: 'hash', job: this.#next++, buffer, length: window.byteLength }, [buffer])
    if (r.op !== 'hash') throw new AssertionError(`decode worker answered with '${r.op}'`)
    return { window: Buffer.from(r.buffer, 0, window.byteLength), hashes: Buffer.from(r.hashes) }
  }

  async close(): Promise<void> {
    const workers = this.#workers.splice(0)
    for (const [job, p] of this.#jobs) {
      this.#jobs.delete(job)
      p.reject(new AssertionError('the decode pool was closed'))
    }
    await Promise.all(workers.map((w) => w.terminate()))
  }

  #run(m: DecodeJob, transfer: ArrayBuffer[]): Promise<DecodeJobResult> {
    if (this.#failure) return Promise.reject(this.#failure)
    while (this.#workers.length < this.size) this.#workers.push(this.#start())
    const worker = this.#workers[this.#turn++ % this.#workers.length]!
    return new Promise<DecodeJobResult>((resolve, reject) => {
      this.#jobs.set(m.job, { resolve, reject })
      worker.postMessage(m, transfer)
    }).then((r) => {
      if (r.op === 'error') throw new Error(r.message)
      return r
    })
  }

  #start(): Worker {
    const w = new Worker(this.url, { workerData: this.data })
    w.on('message', (r: DecodeJobResult) => {
      const p = this.#jobs.get(r.job)
      if (!p) return
      this.#jobs.delete(r.job)
      p.resolve(r)
    })
    const fail = (why: string) => {
      this.#failure ??= new AssertionError(`decode worker ${why}`)
      for (const [job, p] of this.#jobs) {
        this.#jobs.delete(job)
        p.reject(this.#failure)
      }
    }
    w.on('error', (err) => fail(`failed: ${err.message}`))
    w.on('exit', (code) => {
      if (this.#workers.includes(w)) fail(`exited with code ${code}`)
    })
    return w
  }
}
