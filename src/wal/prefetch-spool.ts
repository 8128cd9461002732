// The prefetch spool of `wal get`: a directory where a background daemon (prefetch-daemon.ts) keeps the next WAL
// segments, fetched and verified ahead of recovery, and the client side that each restore_command invocation runs.
// Layout (all under the spool directory, mode 0700):
//   daemon.json       the live daemon: pid, boot id, repository, cluster (created exclusively: it is the lock)
//   <WAL file name>   a verified file ready to serve; it appears only by rename, so it is never half-written
//   tmp/              the daemon's files being written
//   req/<id>          requests: {"name", "reply"} written by clients (temp file + rename)
//   resp/<id>         answers: {"status": "ok" | "missing" | "error", "message"?}
//   daemon.log        what the daemon did (recreated at each start)

import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { copyFile, mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'

/** Name of the default spool directory, created beside the destination (in pg_wal). */
export const DEFAULT_SPOOL_DIR_NAME = '.pgkeep-prefetch'

/** The paths of one spool directory (see the file header for the layout). */
export interface SpoolPaths {
  readonly dir: string
  readonly daemonFile: string
  readonly reqDir: string
  readonly respDir: string
  readonly tmpDir: string
  readonly logFile: string
}

/** The layout of the spool at `dir` (made absolute: restore_command's paths are relative to the data directory). */
export function spoolPaths(dir: string): SpoolPaths {
  const d = resolve(dir)
  return {
    dir: d,
    daemonFile: join(d, 'daemon.json'),
    reqDir: join(d, 'req'),
    respDir: join(d, 'resp'),
    tmpDir: join(d, 'tmp'),
    logFile: join(d, 'daemon.log'),
  }
}

/**
 * The default spool: `.pgkeep-prefetch` beside the destination, i.e. inside pg_wal (restore_command's %p is
 * `pg_wal/RECOVERYXLOG`, relative to the data directory). Same file system as the destination, so serving is a
 * rename; and BASE_BACKUP never sends pg_wal's contents, so the spool never ends up in a backup.
 */
export function defaultSpoolDir(dest: string): string {
  return join(dirname(resolve(dest)), DEFAULT_SPOOL_DIR_NAME)
}

/** Creates the spool and its subdirectories (mode 0700) if missing. */
export async function ensureSpoolDirs(p: SpoolPaths): Promise<void> {
  for (const d of [p.dir, p.reqDir, p.respDir, p.tmpDir]) await mkdir(d, { recursive: true, mode: 0o700 })
}

/** What daemon.json holds. */
export interface DaemonInfo {
  pid: number
  bootId: string
  /** The repository location as given on the command line. */
  repo: string
  cluster: string | null
  startedAt: string
}

let cachedBootId: string | undefined
/** This boot's identity (a pid from another boot means nothing). */
export function bootId(): string {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    } catch {
      cachedBootId = ''
    }
  }
  return cachedBootId
}

/**
 * True when process `pid` exists and has not exited. A zombie (exited, not yet reaped: the detached daemon is
 * adopted by PID 1, which in a container may not reap) counts as gone.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return true // no /proc: the signal test decides
  }
}

/** daemon.json, whatever its state; undefined when absent or unreadable. */
export async function readDaemonInfo(p: SpoolPaths): Promise<DaemonInfo | undefined> {
  try {
    const info = JSON.parse(await readFile(p.daemonFile, 'utf8')) as DaemonInfo
    return Number.isSafeInteger(info.pid) && typeof info.repo === 'string' ? info : undefined
  } catch {
    return undefined
  }
}

/** The daemon serving this spool, if its process lives (same boot, pid present). */
export async function readLiveDaemon(p: SpoolPaths): Promise<DaemonInfo | undefined> {
  const info = await readDaemonInfo(p)
  return info && info.bootId === bootId() && processAlive(info.pid) ? info : undefined
}

/** Writes `data` to `path` through a temporary file and a rename: readers see all of it or nothing. */
export async function writeAtomic(path: string, data: string | Uint8Array, tmpDir = dirname(path)): Promise<void> {
  const tmp = join(tmpDir, `.${randomBytes(6).toString('hex')}.tmp`)
  await writeFile(tmp, data, { mode: 0o600 })
  try {
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw err
  }
}

/**
 * Moves spooled file `name` to `dest` (a rename on the same file system, else copy + rename). Resolves false when
 * the file is not in the spool (never spooled, already served, or removed by the daemon).
 */
export async function takeFromSpool(p: SpoolPaths, name: string, dest: string): Promise<boolean> {
  const src = join(p.dir, name)
  try {
    await rename(src, dest)
    return true
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return false
    if (code !== 'EXDEV') throw err
  }
  // Another file system (--spool elsewhere): copy to a temporary file beside dest, then rename.
  const tmp = `${dest}.pgkeep-${randomBytes(4).toString('hex')}`
  try {
    await copyFile(src, tmp)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  }
  await rename(tmp, dest)
  await unlink(src).catch(() => {})
  return true
}

/** True when spooled file `name` exists and is newer than the daemon's start. */
async function writtenBy(p: SpoolPaths, name: string, daemon: DaemonInfo): Promise<boolean> {
  const st = await stat(join(p.dir, name)).catch(() => undefined)
  return st !== undefined && st.mtimeMs >= Date.parse(daemon.startedAt)
}

/** A client's request file `req/<id>`. */
export interface SpoolRequest {
  name: string
  /** The client waits for an answer in resp/<id>; without it, the request only moves the prefetch window. */
  reply: boolean
}

/** The daemon's answer file `resp/<id>`. */
export interface SpoolResponse {
  status: 'ok' | 'missing' | 'error'
  message?: string
}

/** Posts a request; resolves with its id. Ids sort in posting order (time first). */
export async function postRequest(p: SpoolPaths, req: SpoolRequest): Promise<string> {
  const id = `${Date.now().toString(36).padStart(9, '0')}-${process.pid}-${randomBytes(4).toString('hex')}`
  await writeAtomic(join(p.reqDir, id), JSON.stringify(req), p.reqDir)
  return id
}

/** Reads and removes the answer to request `id`; undefined while there is none. */
export async function takeResponse(p: SpoolPaths, id: string): Promise<SpoolResponse | undefined> {
  const path = join(p.respDir, id)
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch {
    return undefined
  }
  await unlink(path).catch(() => {})
  try {
    return JSON.parse(text) as SpoolResponse
  } catch {
    return { status: 'error', message: 'unreadable answer from the prefetch daemon' }
  }
}

/** One `wal get` through the spool. */
export interface SpoolGetOptions {
  paths: SpoolPaths
  name: string
  dest: string
  /** The repository location; a daemon serving another one is not used. */
  repo: string
  /** The cluster, when known here; a daemon serving another one is not used. */
  cluster: string | undefined
  /** Starts a daemon process for this spool (detached; it exits on its own when idle). */
  spawnDaemon: () => void
  /** How long a daemon may take to answer before the client fetches on its own (default 10 min). */
  answerTimeoutMs?: number
  /** How long to wait for a spawned daemon to show up (default 20 s). */
  startTimeoutMs?: number
}

/**
 * `wal get` through the spool: serve a prefetched file at once, else ask the daemon (starting one when none
 * runs) and serve what it fetched. 'unavailable' means the daemon could not help: fetch directly.
 */
export async function getViaSpool(o: SpoolGetOptions): Promise<'served' | 'missing' | 'unavailable'> {
  const p = o.paths
  await ensureSpoolDirs(p)
  const usable = (d: DaemonInfo) => d.repo === o.repo && (o.cluster === undefined || d.cluster === null || d.cluster === o.cluster)
  let daemon = await readLiveDaemon(p)
  if (daemon && !usable(daemon)) return 'unavailable'
  // A file is trusted only while the daemon that wrote it lives, and only if written after that daemon started
  // (a new daemon empties the spool, but a client may look before it has).
  if (daemon && (await writtenBy(p, o.name, daemon)) && (await takeFromSpool(p, o.name, o.dest))) {
    await postRequest(p, { name: o.name, reply: false })
    return 'served'
  }
  let spawns = 0
  let spawnedAt = 0
  if (!daemon) {
    o.spawnDaemon()
    spawns++
    spawnedAt = Date.now()
  }
  const id = await postRequest(p, { name: o.name, reply: true })
  const started = Date.now()
  const answerTimeoutMs = o.answerTimeoutMs ?? 600_000
  const startTimeoutMs = o.startTimeoutMs ?? 20_000
  let pollMs = 2
  let lastDaemonCheck = Date.now()
  try {
    for (;;) {
      const resp = await takeResponse(p, id)
      if (resp) {
        if (resp.status === 'missing') return 'missing'
        if (resp.status === 'ok' && (await takeFromSpool(p, o.name, o.dest))) return 'served'
        return 'unavailable'
      }
      const now = Date.now()
      if (now - started > answerTimeoutMs) return 'unavailable'
      if (now - lastDaemonCheck >= 200) {
        lastDaemonCheck = now
        daemon = await readLiveDaemon(p)
        if (daemon && !usable(daemon)) return 'unavailable'
        if (!daemon && now - spawnedAt > startTimeoutMs) {
          // The daemon exited (idle) just as this request came, or never started: one more, then give up.
          if (spawns >= 2) return 'unavailable'
          o.spawnDaemon()
          spawns++
          spawnedAt = now
        }
      }
      await new Promise((r) => setTimeout(r, pollMs))
      pollMs = Math.min(20, pollMs * 2)
    }
  } finally {
    await unlink(join(p.reqDir, id)).catch(() => {})
    await unlink(join(p.respDir, id)).catch(() => {})
  }
}
