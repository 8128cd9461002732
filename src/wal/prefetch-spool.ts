// The prefetch spool of `wal get`: a directory where a background daemon (prefetch-daemon.ts) keeps the next WAL
// files, fetched and verified ahead of recovery, and the client side that each restore_command invocation runs.
// Layout (all under the spool directory, which must be the user's own, mode 0700, not a link):
//   daemon.json       the live daemon: pid, repository (location and id), cluster; what a person or test reads
//   <WAL file name>   a verified file ready to serve; it appears only by rename, so it is never half-written
//   tmp/              files being written, and files a client has claimed and is checking
//   req/<id>          requests: {"name", "repo", "cluster", "client"?} written by clients (temp file + rename); the
//                     launcher writes them too (bin/pgkeep, src/wal/fast-path.ts)
//   resp/<id>         answers: {"status": "ok" | "missing" | "error", "message"?, "systemId"?, "pid"?, "sizeBytes"?,
//                     "crc32c"?}
//   daemon.log        what the daemon did (appended to by every daemon of this spool)
// One daemon per spool: it holds the spool's lock, an abstract Unix socket named after the spool's real path and
// the user. The kernel releases it when the process ends, however it ends, so there is no stale lock to break
// and no moment where two daemons both believe they hold it. Every file is 0600.
// Longer than 400 lines on purpose: the spool's layout, its ownership checks and the client's protocol with the
// daemon (requests, answers, the lock socket) are one contract with prefetch-daemon.ts.

import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { copyFile, lstat, mkdir, open, readFile, realpath, rename, stat, unlink } from 'node:fs/promises'
import { connect } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import { ConfigError } from '../errors.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { checkSegmentHeader, WAL_LONG_PAGE_HEADER_BYTES } from '../pg/wal-page.js'
import { isPartialWalName, isWalSegmentName, parseWalFileName } from '../pg/wal-names.js'
import { writeFileAtomic } from '../storage/durable-file.js'
import { assertSameCluster } from './local-cluster.js'

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
 * rename; and BASE_BACKUP never sends pg_wal's contents, so the spool never ends up in a backup. A relative
 * destination is taken from `cwd` (restore_command runs in the data directory).
 */
export function defaultSpoolDir(dest: string, cwd = process.cwd()): string {
  return join(dirname(resolve(cwd, dest)), DEFAULT_SPOOL_DIR_NAME)
}

/**
 * Creates the spool and its subdirectories (mode 0700) where missing, and refuses a spool that is not safe to
 * serve from: a directory another user owns or can write to (or read: the files are WAL), or a symbolic link
 * (which would lead the daemon's writes and removals elsewhere).
 * @throws ConfigError naming the directory and what is wrong with it
 */
export async function prepareSpool(p: SpoolPaths): Promise<void> {
  for (const d of [p.dir, p.reqDir, p.respDir, p.tmpDir]) {
    // Not recursive below the spool: a subdirectory is created only inside a spool already checked.
    await mkdir(d, { recursive: d === p.dir, mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw new ConfigError(`cannot create the prefetch spool '${d}': ${err.code ?? err.message}`, { cause: err, hint: SPOOL_HINT })
    })
    const st = await lstat(d)
    const uid = process.getuid?.()
    const problem = st.isSymbolicLink()
      ? 'it is a symbolic link'
      : !st.isDirectory()
        ? 'it is not a directory'
        : uid !== undefined && st.uid !== uid
          ? `it belongs to user id ${st.uid}, not to this user (${uid})`
          : (st.mode & 0o077) !== 0
            ? `its mode is ${(st.mode & 0o777).toString(8).padStart(4, '0')}, not 0700`
            : undefined
    if (problem !== undefined) {
      throw new ConfigError(`refusing the prefetch spool '${d}': ${problem}`, { hint: SPOOL_HINT })
    }
  }
}

const SPOOL_HINT =
  'the spool must be a directory of the user running restore_command with mode 0700: remove it (it is created as needed), point --spool at such a directory, or use --prefetch 0'

/** What daemon.json holds. */
export interface DaemonInfo {
  pid: number
  bootId: string
  /** The repository location as given on the command line. */
  repo: string
  /** The cluster as the daemon was asked for it (--cluster, or pg_control's system identifier); null: the only one. */
  cluster: string | null
  /** The id of the repository the daemon opened there (once it has). */
  repoId?: string
  /** The cluster's system identifier (once the daemon has resolved it). */
  systemId?: string
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

/** The daemon serving this spool by daemon.json, if its process lives (same boot, pid present). */
export async function readLiveDaemon(p: SpoolPaths): Promise<DaemonInfo | undefined> {
  const info = await readDaemonInfo(p)
  return info && info.bootId === bootId() && processAlive(info.pid) ? info : undefined
}

/**
 * The name of the spool's lock: an abstract Unix socket (Linux; no file, gone with its process) named after the
 * user and the spool's real path, so every spelling of one directory means one lock.
 */
export async function spoolLockName(p: SpoolPaths): Promise<string> {
  const real = await realpath(p.dir)
  return `\0pgkeep-prefetch-${process.getuid?.() ?? 0}-${createHash('sha256').update(real).digest('hex').slice(0, 40)}`
}

/** True when a daemon holds the spool's lock (its socket accepts a connection). */
export function spoolLockHeld(lockName: string): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ path: lockName })
    socket.once('connect', () => {
      socket.destroy()
      done(true)
    })
    socket.once('error', () => done(false))
    // The kernel completes a connection to a listening socket at once; no answer means someone is there but busy.
    socket.setTimeout(2000, () => {
      socket.destroy()
      done(true)
    })
  })
}

/** Moves `src` to `dest`: a rename on the same file system, else a copy to a temporary file beside dest and a rename. */
async function moveInto(src: string, dest: string): Promise<void> {
  try {
    await rename(src, dest)
    return
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err
  }
  const tmp = `${dest}.pgkeep-${randomBytes(4).toString('hex')}`
  try {
    await copyFile(src, tmp)
    await rename(tmp, dest)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw err
  }
  await unlink(src).catch(() => {})
}

/** A client's request file `req/<id>`: a WAL file, of which repository (as given to restore_command) and cluster. */
export interface SpoolRequest {
  name: string
  repo: string
  /** --cluster as given, else pg_control's system identifier; null when neither is known (the only cluster). */
  cluster: string | null
  /**
   * Who asks, which the daemon's log names: 'lean' from the lean entry point (src/cli/wal-get-lean.ts), 'shell'
   * from the launcher (fast-path.ts); absent from the full command.
   */
  client?: 'lean' | 'shell'
}

/**
 * Why a daemon bound to `daemon` (its repository location and cluster as asked for, and the system identifier it
 * resolved, once it has) does not serve request `req`, described; undefined when it does.
 */
export function foreignRequest(
  daemon: { repo: string; cluster: string | null; systemId?: string },
  req: { repo: string; cluster: string | null },
): string | undefined {
  if (req.repo !== daemon.repo) return `repository '${req.repo}'`
  if (req.cluster !== daemon.cluster && (daemon.systemId === undefined || req.cluster !== daemon.systemId))
    return `cluster '${req.cluster ?? '(the only one)'}'`
  return undefined
}

/** The daemon's answer file `resp/<id>`. With 'ok', what the spooled file must be. */
export interface SpoolResponse {
  status: 'ok' | 'missing' | 'error'
  message?: string
  /** The cluster the daemon serves. */
  systemId?: string
  sizeBytes?: number
  /** CRC-32C of the whole file (hex, little-endian) from the verified content; for files other than segments. */
  crc32c?: string
  /** The daemon's process id (with 'ok' and 'missing'): the launcher's fast path is bound to it (fast-path.ts). */
  pid?: number
}

/** Posts a request; resolves with its id. Ids sort in posting order (time first). */
export async function postRequest(p: SpoolPaths, req: SpoolRequest): Promise<string> {
  const id = `${Date.now().toString(36).padStart(9, '0')}-${process.pid}-${randomBytes(4).toString('hex')}`
  await writeFileAtomic(join(p.reqDir, id), JSON.stringify(req), { tmpDir: p.reqDir })
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

/**
 * What is wrong with spooled file `path` served as WAL file `name`, or undefined when it is what the daemon said:
 * a regular file of the announced size; for a segment, a first page whose long header names this segment, its
 * timeline, the file's size and the cluster `expect.systemId` (only that page is read: serving stays a rename);
 * for any other file (history, backup history: small) the announced CRC-32C.
 */
export async function checkSpooledFile(path: string, name: string, expect: SpoolResponse): Promise<string | undefined> {
  const st = await lstat(path)
  if (!st.isFile()) return 'it is not a regular file'
  if (expect.sizeBytes === undefined || st.size !== expect.sizeBytes) return `it is ${st.size} bytes, not ${String(expect.sizeBytes)}`
  if (isWalSegmentName(name) || isPartialWalName(name)) {
    if (expect.systemId === undefined) return 'the cluster is not known'
    let parsed: ReturnType<typeof parseWalFileName>
    try {
      parsed = parseWalFileName(name.slice(0, 24), st.size)
    } catch (err) {
      return (err as Error).message
    }
    if (parsed.kind !== 'segment') return 'not a segment name'
    const page = await readHead(path, WAL_LONG_PAGE_HEADER_BYTES)
    const problems = checkSegmentHeader(page, { segno: parsed.segno, segSizeBytes: st.size, systemId: BigInt(expect.systemId), tli: parsed.tli })
    return problems.length > 0 ? `its first page header does not fit: ${problems.join('; ')}` : undefined
  }
  const crc = crc32cHexLE(crc32c(await readFile(path)))
  return crc === expect.crc32c ? undefined : `its CRC-32C is ${crc}, not ${String(expect.crc32c)}`
}

async function readHead(path: string, bytes: number): Promise<Buffer> {
  const f = await open(path, 'r')
  try {
    const buf = Buffer.alloc(bytes)
    const { bytesRead } = await f.read(buf, 0, bytes, 0)
    return buf.subarray(0, bytesRead)
  } finally {
    await f.close()
  }
}

/**
 * Serves spooled file `name` to `dest` after checking it (see {@link checkSpooledFile}). The file is first claimed
 * by a rename into tmp/, so nothing changes it while it is checked; a file that fails the check is removed.
 * Resolves false when the file is gone or was bad.
 */
async function serveSpooled(p: SpoolPaths, name: string, dest: string, expect: SpoolResponse, warn: (text: string) => void): Promise<boolean> {
  const claim = join(p.tmpDir, `claim.${randomBytes(6).toString('hex')}`)
  try {
    await rename(join(p.dir, name), claim)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  }
  try {
    const problem = await checkSpooledFile(claim, name, expect)
    if (problem !== undefined) {
      warn(`the prefetched copy of ${name} failed its check (${problem}); it was removed and ${name} is fetched from the repository`)
      return false
    }
    await moveInto(claim, dest)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false // the daemon emptied its spool meanwhile
    throw err
  } finally {
    await unlink(claim).catch(() => {})
  }
}

/** One `wal get` through the spool. */
export interface SpoolGetOptions {
  paths: SpoolPaths
  name: string
  dest: string
  /** The repository location; a daemon serving another one is replaced. */
  repo: string
  /** --cluster as given, else pg_control's system identifier, else null; a daemon serving another is replaced. */
  cluster: string | null
  /** The data directory's cluster (pg_control), when known: a daemon's file of another cluster is refused. */
  localSystemId?: string
  /**
   * Starts a daemon for this spool (detached; it exits on its own when idle). Resolves when that daemon has
   * ended (lost the race for the lock, failed, or finished), so the client may start another if none holds the
   * spool then. Absent (the lean entry point when a daemon serves the spool already): no daemon holding the spool →
   * 'unavailable'.
   */
  spawnDaemon?: () => Promise<unknown>
  /** Daemons this call starts at most (default 3: one replacing a daemon that retired, one more if that one lost a race). */
  maxSpawns?: number
  /** Says who asks, for the daemon's log (see {@link SpoolRequest.client}). */
  client?: 'lean'
  /** Warnings for the user (a spooled file that failed its check). */
  onWarning?: (text: string) => void
  /** Called with the daemon's answer once the file is in place, or once it said the file is missing (fast-path.ts). */
  onAnswered?: (response: SpoolResponse) => Promise<void>
  /** How long a daemon may take to answer before the client fetches on its own (default 10 min). */
  answerTimeoutMs?: number
  /** How long a spawned daemon may take to take the spool (default 20 s). */
  startTimeoutMs?: number
}

/** Daemons one `wal get` starts at most (one replacing a daemon that retired, one more if that one lost a race). */
const MAX_SPAWNS = 3
const CHECK_INTERVAL_MS = 100

/**
 * `wal get` through the spool: asks the daemon (starting one when none holds the spool) and serves the file it
 * spooled once that file passed its checks. Every call asks, so the daemon confirms before each answer that it
 * still serves the repository and cluster asked for; a daemon that does not retires, and this client starts one
 * that does. 'unavailable' means the spool could not help: fetch directly.
 * @throws UsageError when the daemon serves another cluster than the data directory's (a wrong --cluster)
 */
export async function getViaSpool(o: SpoolGetOptions): Promise<'served' | 'missing' | 'unavailable'> {
  const p = o.paths
  const lock = await spoolLockName(p)
  const request: SpoolRequest = { name: o.name, repo: o.repo, cluster: o.cluster, ...(o.client ? { client: o.client } : {}) }
  let id = await postRequest(p, request)
  const started = Date.now()
  const answerTimeoutMs = o.answerTimeoutMs ?? 600_000
  const startTimeoutMs = o.startTimeoutMs ?? 20_000
  let spawns = 0
  let starting: { since: number; ended: boolean } | undefined
  let heldWithoutDaemonSince: number | undefined
  let lastCheck = 0
  let pollMs = 2
  try {
    for (;;) {
      const resp = await takeResponse(p, id)
      if (resp) {
        if (resp.status === 'missing') {
          await o.onAnswered?.(resp)
          return 'missing'
        }
        if (resp.status !== 'ok') return 'unavailable'
        if (resp.systemId !== undefined) assertSameCluster(resp.systemId, { selector: o.cluster ?? undefined, localSystemId: o.localSystemId })
        if (!(await serveSpooled(p, o.name, o.dest, resp, o.onWarning ?? (() => {})))) return 'unavailable'
        await o.onAnswered?.(resp)
        return 'served'
      }
      const now = Date.now()
      if (now - started > answerTimeoutMs) return 'unavailable'
      if (now - lastCheck >= CHECK_INTERVAL_MS) {
        lastCheck = now
        if (await spoolLockHeld(lock)) {
          // A holder that never says who it is (daemon.json) is not a daemon to wait for.
          if (await readLiveDaemon(p)) heldWithoutDaemonSince = undefined
          else if ((heldWithoutDaemonSince ??= now) < now - startTimeoutMs) return 'unavailable'
        } else {
          // A daemon that ended without answering (it retired, or its spool was replaced) may have taken the
          // request along: post it again for the next one.
          const exists = (path: string) =>
            stat(path).then(
              () => true,
              () => false,
            )
          if (!(await exists(join(p.reqDir, id)))) {
            if (await exists(join(p.respDir, id))) continue // answered just before it left
            id = await postRequest(p, request)
          }
          if (!starting || starting.ended || now - starting.since > startTimeoutMs) {
            if (spawns >= (o.maxSpawns ?? MAX_SPAWNS) || !o.spawnDaemon) return 'unavailable'
            spawns++
            const s = { since: now, ended: false }
            starting = s
            void o.spawnDaemon().then(
              () => (s.ended = true),
              () => (s.ended = true),
            )
          }
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
