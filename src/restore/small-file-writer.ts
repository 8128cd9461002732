// Small files of a restore, written on a thread of their own. A cluster with many relations is mostly files of one
// to a few pages, and for each the kernel's work (creating the inode, copying the bytes, mode, times) took a quarter
// of a restore's main thread, which also reads, verifies and decodes every blob: on a second thread the two overlap.
// Files travel in batches, one message each, of numbers and one string (a message per file, or an object per file,
// would give back much of what the thread saves: the codec pool once spent 19% of such a restore's main thread
// posting every small blob, and cloning an object per file here cost 0.22 s): a batch goes out at the end of a turn
// when the thread is idle, or when it is full, and the next one grows while the thread works, so batches follow the
// thread's pace. The caller's bytes are copied into the batch's buffer, so its blobs can go back to the cache at
// once; at most MAX_POSTED batches are out and one is filling (a few MiB). Each file's callback runs once the thread
// wrote it; the first failure fails every later write() and flush().
// The thread costs about 11 MB of memory (its own heap and event loop), which a restore of a few hundred catalogs'
// small files would pay for nothing: it starts with the first file when the caller expects more than
// THREAD_AFTER_FILES files, else only after that many small files were written on the calling thread.

import { Worker } from 'node:worker_threads'
import { compiledModuleUrl } from '../worker-module.js'
import { writeSmallFileSync } from './small-file-io.js'

/** A small file to write: its directories checked by the target tree, its last component opened without following. */
export interface SmallFile {
  /** Absolute path. */
  path: string
  mode: number
  /** Modification time, seconds since the epoch. */
  mtime: number
  sizeBytes: number
  /** The file's bytes at `offsets` (ascending; what lies between stays a hole). */
  parts: readonly Buffer[]
  offsets: readonly number[]
}

/**
 * @internal what the thread is sent: the files' absolute paths joined by NUL (which no path holds), and for each
 * file in `meta` its mode, mtime, size and part count, then (file offset, offset in `data`, length) per part. Numbers
 * and one string, not an object per file: cloning objects cost more than the files' own system calls.
 */
export interface SmallFileBatch {
  paths: string
  meta: Float64Array
  data: ArrayBuffer
}

/** @internal what the thread answers: bytes written per file, up to the one that failed, and the buffer back. */
export interface SmallFileReply {
  written: number[]
  error?: { message: string; code?: string; errno?: number; syscall?: string; path?: string }
  data: ArrayBuffer
}

/** Called once a file is written, with the bytes written. */
export type SmallFileDone = (written: number) => Promise<void> | void

/** A batch's buffer (a file larger than this gets a batch of its own size). */
const BATCH_BYTES = 1 << 20
const BATCH_FILES = 256
/** Batches out to the thread at once: one being written, one waiting, so the thread never waits for the next. */
const MAX_POSTED = 2
/**
 * Small files written on the calling thread before the thread starts, unless the caller expects more files than
 * this. The 2 GB bench data has about 1,000 (its restore stays without the thread); a cluster of 20,000 small
 * tables has 61,000, and with the thread its restore took 6.7-7.1 s instead of 7.7-8.5 s (PG 15, 3 alternating
 * runs).
 */
const THREAD_AFTER_FILES = 4096
/** The thread's heap: it holds a batch's views and little else. */
const THREAD_LIMITS = { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 32 }

interface Filling {
  paths: string[]
  meta: number[]
  done: SmallFileDone[]
  data: ArrayBuffer
  used: number
}

let threadModule: URL | null | undefined

export interface SmallFileWriterOptions {
  /** Write on a thread of its own (default: when the compiled worker module exists); false: on the calling thread. */
  thread?: boolean
  /** Files written on the calling thread before the thread starts (default: see `expectedFiles`). */
  threadAfter?: number
  /**
   * Files the caller will write (small or not), when known: more than THREAD_AFTER_FILES start the thread with the
   * first file, else it starts after THREAD_AFTER_FILES small files.
   */
  expectedFiles?: number
  /** The thread's module (default: the build's small-file-worker.js); tests give one that fails. */
  threadModule?: URL
}

export class SmallFileWriter {
  readonly #url: URL | undefined
  #worker: Worker | undefined
  #filling: Filling | undefined
  /** Callbacks of the batches posted, oldest first (answers come in order). */
  readonly #posted: SmallFileDone[][] = []
  /** Waiting for an answer: writers wanting room, flush and close. */
  #waiters: (() => void)[] = []
  readonly #spare: ArrayBuffer[] = []
  /** Callbacks still running (their promises). */
  readonly #running = new Set<Promise<void>>()
  #failure: { error: unknown } | undefined
  #scheduled = false
  /** Files still to write on the calling thread before the thread starts. */
  #beforeThread: number

  constructor(o: SmallFileWriterOptions = {}) {
    threadModule ??= compiledModuleUrl(import.meta.url, 'small-file-worker.js') ?? null
    this.#url = o.thread === false ? undefined : (o.threadModule ?? threadModule ?? undefined)
    this.#beforeThread = o.threadAfter ?? ((o.expectedFiles ?? 0) > THREAD_AFTER_FILES ? 0 : THREAD_AFTER_FILES)
  }

  /** True when the next file goes to the thread. */
  get onThread(): boolean {
    return this.#url !== undefined && this.#beforeThread <= 0
  }

  /**
   * Takes a file: written at once on the calling thread, or copied into the thread's next batch (waiting for room when
   * MAX_POSTED batches are out and the filling one is full). `done` runs once it is on disk.
   * @throws the first failure of an earlier file, or of a callback
   */
  async write(f: SmallFile, done: SmallFileDone): Promise<void> {
    this.#throwIfFailed()
    if (!this.onThread) {
      this.#beforeThread--
      try {
        await done(writeSmallFileSync(f.path, f.mode, f.mtime, f.sizeBytes, f.parts, f.offsets))
      } catch (err) {
        this.#fail(err)
        throw err
      }
      return
    }
    let bytes = 0
    for (const p of f.parts) bytes += p.length
    for (;;) {
      const b = this.#filling
      if (!b || (b.used + bytes <= b.data.byteLength && b.paths.length < BATCH_FILES)) break
      if (this.#posted.length < MAX_POSTED) this.#post()
      else await this.#answered()
      this.#throwIfFailed()
    }
    const b = (this.#filling ??= this.#batch(bytes))
    const into = new Uint8Array(b.data)
    b.paths.push(f.path)
    b.meta.push(f.mode, f.mtime, f.sizeBytes, f.parts.length)
    for (let i = 0; i < f.parts.length; i++) {
      const part = f.parts[i]!
      into.set(part, b.used)
      b.meta.push(f.offsets[i]!, b.used, part.length)
      b.used += part.length
    }
    b.done.push(done)
    if (this.#posted.length === 0 && !this.#scheduled) {
      // Not at once: the other workers' files of this turn go in the same batch.
      this.#scheduled = true
      setImmediate(() => {
        this.#scheduled = false
        if (this.#filling && this.#posted.length === 0 && !this.#failure) this.#post()
      })
    }
  }

  /**
   * Waits until every file taken is on disk and its callback done.
   * @throws the first failure
   */
  async flush(): Promise<void> {
    if (this.#filling && !this.#failure) this.#post()
    while (this.#posted.length > 0) await this.#answered()
    await Promise.all(this.#running)
    this.#throwIfFailed()
  }

  /** Drops files not yet sent, waits for those sent (no file is left half written), and stops the thread. */
  async close(): Promise<void> {
    this.#filling = undefined
    while (this.#posted.length > 0) await this.#answered()
    const w = this.#worker
    this.#worker = undefined
    await w?.terminate()
  }

  #batch(bytes: number): Filling {
    const data = bytes <= BATCH_BYTES ? (this.#spare.pop() ?? new ArrayBuffer(BATCH_BYTES)) : new ArrayBuffer(bytes)
    return { paths: [], meta: [], done: [], data, used: 0 }
  }

  #post(): void {
    const b = this.#filling!
    this.#filling = undefined
    this.#posted.push(b.done)
    const meta = new Float64Array(new ArrayBuffer(b.meta.length * 8))
    meta.set(b.meta)
    const batch: SmallFileBatch = { paths: b.paths.join('\0'), meta, data: b.data }
    this.#thread().postMessage(batch, [meta.buffer, b.data])
  }

  #thread(): Worker {
    if (this.#worker) return this.#worker
    const w = new Worker(this.#url!, { resourceLimits: THREAD_LIMITS })
    w.on('message', (reply: SmallFileReply) => this.#answer(reply))
    // The thread catches what a file's calls throw; anything else ends it (running out of its heap too), and every
    // batch out with it: the restore fails rather than wait for answers that cannot come.
    w.on('error', (err) => this.#lost(w, err))
    w.on('exit', (code) => this.#lost(w, new Error(`the restore's small-file writer thread stopped (exit code ${code})`)))
    this.#worker = w
    return w
  }

  #answer(reply: SmallFileReply): void {
    const done = this.#posted.shift()
    if (!done) return
    for (let i = 0; i < reply.written.length; i++) this.#report(done[i]!, reply.written[i]!)
    if (reply.error) this.#fail(systemError(reply.error))
    if (reply.data.byteLength === BATCH_BYTES && this.#spare.length < MAX_POSTED + 1) this.#spare.push(reply.data)
    if (this.#filling && this.#posted.length < MAX_POSTED && !this.#failure) this.#post()
    this.#wake()
  }

  #report(done: SmallFileDone, written: number): void {
    try {
      const r = done(written)
      if (!r) return
      const p = r.then(
        () => {},
        (err: unknown) => this.#fail(err),
      )
      this.#running.add(p)
      void p.finally(() => this.#running.delete(p))
    } catch (err) {
      this.#fail(err)
    }
  }

  #lost(w: Worker, err: unknown): void {
    // Not once close() stopped it.
    if (this.#worker !== w) return
    this.#worker = undefined
    this.#posted.length = 0
    this.#fail(err)
    this.#wake()
  }

  #fail(error: unknown): void {
    this.#failure ??= { error }
  }

  #throwIfFailed(): void {
    if (this.#failure) throw this.#failure.error
  }

  #answered(): Promise<void> {
    return new Promise<void>((resolve) => this.#waiters.push(resolve))
  }

  #wake(): void {
    const waiters = this.#waiters
    this.#waiters = []
    for (const w of waiters) w()
  }
}

/** The thread's report of a failed call, as the same call on this thread would have thrown it. */
function systemError(e: NonNullable<SmallFileReply['error']>): Error {
  const err: NodeJS.ErrnoException = new Error(e.message)
  if (e.code !== undefined) err.code = e.code
  if (e.errno !== undefined) err.errno = e.errno
  if (e.syscall !== undefined) err.syscall = e.syscall
  if (e.path !== undefined) err.path = e.path
  return err
}
