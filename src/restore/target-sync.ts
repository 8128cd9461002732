// Making everything a restore wrote durable at once, before pg_control is written (docs/restore.md, "Durability"):
// syncfs(2) on each file system that holds the data directory or a tablespace location, through coreutils'
// `sync --file-system` (Node has no binding for it) on Linux 5.8 or later, whose syncfs reports writeback errors;
// else an fsync of every file and directory under those roots. One call per file system instead of an fsync per
// file: each of those waits for a journal commit of its own, which made restoring 40,000 relations take minutes.
//
// The kernel starts writing dirty pages back only past a share of memory (dirty_background_ratio, 10%: gigabytes on
// a large host), so a restore left to itself writes everything at the end, during that last syncfs, with nothing
// else to do. WritebackAhead starts a syncfs in a child process after each slice of bytes written, so the disk
// writes what is written while the restore decodes and writes the rest; the last syncfs then waits for little.

import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { constants, existsSync } from 'node:fs'
import { open, opendir, stat } from 'node:fs/promises'
import { release } from 'node:os'
import { join } from 'node:path'

/** The shell that runs WritebackAhead's helper (an absolute path: never looked up in PATH). */
const SHELL = '/bin/sh'
/** Where coreutils' sync is (an absolute path: never looked up in PATH). */
const SYNC_BINARIES = ['/usr/bin/sync', '/bin/sync']
/** fsyncs in flight at once in the fallback (libuv's thread pool runs four by default). */
const FSYNC_CONCURRENCY = 8

/** How a target was made durable. */
export type TargetSyncMethod = 'syncfs' | 'fsync'

/**
 * Flushes every file and directory under `roots` (the data directory and the tablespace locations) to stable
 * storage; resolves with the method used.
 * @throws the error of the flush that failed (an I/O error of the target's disk)
 */
export async function syncTarget(roots: readonly string[], o: { signal?: AbortSignal; ahead?: WritebackAhead } = {}): Promise<TargetSyncMethod> {
  const sync = syncBinary()
  // A syncfs reports a write error once: after an earlier one failed (ahead), only the fsync of each file still can.
  if (sync && (await o.ahead?.settle()) !== false) {
    try {
      for (const root of await oneRootPerFileSystem(roots)) await syncFileSystem(sync, root, o.signal)
      return 'syncfs'
    } catch {
      o.signal?.throwIfAborted()
      // An old or foreign `sync` without --file-system, or a failure: the fsync of every file says which.
    }
  }
  for (const root of roots) await fsyncTree(root, o.signal)
  return 'fsync'
}

/**
 * Starts the target's writeback while a restore writes (see the top of this file): after each `stepBytes` written
 * (default 128 MiB), a syncfs of the target's file systems, one at a time. It only starts work early: durability
 * still comes from syncTarget at the end, which is given this object and waits for it.
 *
 * The syncfs runs in one helper process started with the restore (a shell that runs coreutils' sync for each line
 * it reads). A child started from the restore's own process for each flush cost more than the overlap saved: each
 * fork marks the whole heap copy-on-write, and the restore then faulted on every page it wrote (a restore of the
 * bench data: 1.1 s more system time with 8 of them).
 */
export class WritebackAhead {
  readonly #step: number
  readonly #helper: ChildProcess | undefined
  readonly #exited: Promise<void> | undefined
  #pending = 0
  #answer: ((ok: boolean) => void) | undefined
  #running: Promise<void> | undefined
  #failed = false
  #closed = false
  #flushes = 0

  private constructor(helper: ChildProcess | undefined, stepBytes: number) {
    this.#step = stepBytes
    this.#helper = helper
    if (!helper) return
    // A helper that ended any other way than by the end of its input (killed, or failed to start) may have been in a
    // syncfs: whether that reported an error is unknown, so it counts as failed.
    this.#exited = new Promise((resolve) => {
      const ended = (ok: boolean) => {
        if (!ok) this.#failed = true
        this.#answer?.(false)
        resolve()
      }
      helper.once('close', (code, signal) => ended(code === 0 && signal === null))
      helper.once('error', () => ended(false)) // a failed spawn or an abort (a 'close' may follow: no harm)
    })
    helper.on('error', () => {}) // any later one: the first already counted
    let line = ''
    helper.stdout?.setEncoding('latin1').on('data', (text: string) => {
      line += text
      for (let nl = line.indexOf('\n'); nl >= 0; nl = line.indexOf('\n')) {
        const ok = line.slice(0, nl) === 'ok'
        line = line.slice(nl + 1)
        this.#answer?.(ok)
      }
    })
    helper.stdin?.on('error', () => {}) // a helper that died: its 'close' says so
  }

  /** For `roots` (the data directory and the tablespace locations); flushes nothing where syncTarget would fsync. */
  static async start(roots: readonly string[], o: { signal?: AbortSignal; stepBytes?: number } = {}): Promise<WritebackAhead> {
    const sync = syncBinary()
    const step = o.stepBytes ?? 128 << 20
    if (!sync || !existsSync(SHELL)) return new WritebackAhead(undefined, step)
    // The paths travel as arguments, never inside the script; `--` so that none is taken for an option.
    const script = 'sync="$1"; shift; while read -r _; do if "$sync" --file-system -- "$@"; then echo ok; else echo failed; fi; done'
    const helper = spawn(SHELL, ['-c', script, 'sh', sync, ...(await oneRootPerFileSystem(roots))], {
      env: {},
      stdio: ['pipe', 'pipe', 'ignore'],
      signal: o.signal,
    })
    return new WritebackAhead(helper, step)
  }

  /** syncfs runs asked of the helper so far (for tests). */
  get flushes(): number {
    return this.#flushes
  }

  /** Counts bytes just written; asks for a flush when a slice is complete and none runs. */
  written(bytes: number): void {
    const helper = this.#helper
    if (!helper?.stdin || this.#failed || this.#closed) return
    this.#pending += bytes
    if (this.#pending < this.#step || this.#running) return
    this.#pending = 0
    this.#flushes++
    this.#running = new Promise<boolean>((resolve) => {
      this.#answer = resolve
    }).then((ok) => {
      this.#answer = undefined
      this.#running = undefined
      if (!ok) this.#failed = true
    })
    helper.stdin.write('\n')
  }

  /**
   * Waits for a flush under way and ends the helper; false when a flush failed or the helper died (a syncfs
   * reports an error once: syncTarget must then fsync every file). Later calls answer the same.
   */
  async settle(): Promise<boolean> {
    await this.#running
    this.#closed = true
    this.#helper?.stdin?.end()
    await this.#exited
    return !this.#failed
  }
}

async function oneRootPerFileSystem(roots: readonly string[]): Promise<string[]> {
  const byDevice = new Map<number, string>()
  for (const root of roots) {
    const st = await stat(root)
    if (!byDevice.has(st.dev)) byDevice.set(st.dev, root)
  }
  return [...byDevice.values()]
}

/** coreutils' sync when this is Linux 5.8 or later (older kernels' syncfs does not report writeback errors). */
function syncBinary(): string | undefined {
  if (process.platform !== 'linux') return undefined
  const m = /^(\d+)\.(\d+)/.exec(release())
  if (!m || Number(m[1]) * 1000 + Number(m[2]) < 5008) return undefined
  return SYNC_BINARIES.find((p) => existsSync(p))
}

function syncFileSystem(sync: string, dir: string, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    // `--` so that no directory name is taken for an option.
    execFile(sync, ['--file-system', '--', dir], { signal, env: {} }, (err) => (err ? reject(err) : resolve()))
  })
}

/** fsync of every regular file and directory below `root` and of `root` itself; links are not followed. */
async function fsyncTree(root: string, signal: AbortSignal | undefined): Promise<void> {
  const inFlight = new Set<Promise<void>>()
  let failure: { error: unknown } | undefined
  const fsyncPath = (path: string, directory: boolean): Promise<void> => {
    const p: Promise<void> = (async () => {
      const fh = await open(path, directory ? constants.O_RDONLY | constants.O_DIRECTORY : constants.O_RDONLY | constants.O_NOFOLLOW)
      try {
        await fh.sync()
      } finally {
        await fh.close()
      }
    })().then(
      () => void inFlight.delete(p),
      (error: unknown) => {
        inFlight.delete(p)
        failure ??= { error }
      },
    )
    inFlight.add(p)
    return inFlight.size >= FSYNC_CONCURRENCY ? Promise.race(inFlight) : Promise.resolve()
  }
  const walk = async (dir: string): Promise<void> => {
    for await (const e of await opendir(dir)) {
      signal?.throwIfAborted()
      if (failure) throw failure.error
      const path = join(dir, e.name)
      if (e.isDirectory()) await walk(path)
      else if (e.isFile()) await fsyncPath(path, false)
    }
    await fsyncPath(dir, true)
  }
  try {
    await walk(root)
  } finally {
    await Promise.all(inFlight)
  }
  if (failure) throw failure.error
}
