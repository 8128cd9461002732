// Making everything a restore wrote durable at once, before pg_control is written (docs/restore.md, "Durability"):
// syncfs(2) on each file system that holds the data directory or a tablespace location, through coreutils'
// `sync --file-system` (Node has no binding for it) on Linux 5.8 or later, whose syncfs reports writeback errors;
// else an fsync of every file and directory under those roots. One call per file system instead of an fsync per
// file: each of those waits for a journal commit of its own, which made restoring 40,000 relations take minutes.

import { execFile } from 'node:child_process'
import { constants, existsSync } from 'node:fs'
import { open, opendir, stat } from 'node:fs/promises'
import { release } from 'node:os'
import { join } from 'node:path'

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
export async function syncTarget(roots: readonly string[], o: { signal?: AbortSignal } = {}): Promise<TargetSyncMethod> {
  // One root per file system.
  const byDevice = new Map<number, string>()
  for (const root of roots) {
    const st = await stat(root)
    if (!byDevice.has(st.dev)) byDevice.set(st.dev, root)
  }
  const sync = syncBinary()
  if (sync) {
    try {
      for (const root of byDevice.values()) await syncFileSystem(sync, root, o.signal)
      return 'syncfs'
    } catch {
      o.signal?.throwIfAborted()
      // An old or foreign `sync` without --file-system, or a failure: the fsync of every file says which.
    }
  }
  for (const root of roots) await fsyncTree(root, o.signal)
  return 'fsync'
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
