// The prefetch daemon of `wal get`: one background process per spool that keeps the repository open (so each
// restore_command invocation neither opens the repository nor loads its index), answers requests, and fetches the
// segments after the last one asked for, in parallel, into the spool. Layout and client side: prefetch-spool.ts.
//
// It is bound to what it was started for: the repository at its location (by the repository's id, checked again
// before every batch of answers) and one cluster. A request for another repository or cluster, a repository
// replaced at the same location, or its spool directory removed make it retire at once (the request stays for the
// daemon its client starts next). Its work is driven by requests (and by segments the launcher's fast path takes
// from the spool, fast-path.ts): while nobody asks it makes no repository requests at all, and it exits (emptying
// the spool) `lingerMs` after the last request.
// Longer than 400 lines on purpose: one loop whose state (the window, the spooled files, the requests in hand, the
// segments the launcher's fast path took) its closures share; split up, that state would travel between modules.

import { watch, type FSWatcher } from 'node:fs'
import { readdir, readFile, stat, unlink } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { isFetchableWalName, isWalSegmentName, segmentsPerXlogId } from '../pg/wal-names.js'
import { writeFileAtomic } from '../storage/durable-file.js'
import type { Repository } from '../repo/index.js'
import {
  bootId,
  type DaemonInfo,
  foreignRequest,
  readDaemonInfo,
  spoolLockName,
  type SpoolPaths,
  type SpoolRequest,
  type SpoolResponse,
} from './prefetch-spool.js'
import { fetchWalFile } from './wal-fetch.js'

/** What the daemon was started for: a request for anything else makes it retire. */
export interface DaemonBinding {
  /** The repository location as given on the command line. */
  repo: string
  /** --cluster as given (a name or system identifier), else pg_control's system identifier; null: the only one. */
  cluster: string | null
}

/** The spool, held by this process until `release` (or until it exits). */
export interface SpoolLock {
  /**
   * Removes daemon.json and frees the lock. With `atExit` the lock is left to the kernel, which frees it when this
   * process ends: the caller exits right after, and no client sees the spool free (and starts another daemon)
   * while this process still runs.
   */
  release(o?: { atExit?: boolean }): Promise<void>
}

/**
 * Takes the spool for this process: listens on the spool's lock socket (see prefetch-spool.ts), which only one
 * process can, and the kernel frees when the process ends. Then writes daemon.json (pid, binding). Resolves
 * undefined when another daemon holds the spool. The spool must have been checked (`prepareSpool`).
 */
export async function acquireSpool(p: SpoolPaths, binding: DaemonBinding): Promise<SpoolLock | undefined> {
  const name = await spoolLockName(p)
  const server: Server = createServer((socket) => socket.destroy())
  const listening = await new Promise<boolean>((done, fail) => {
    server.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? done(false) : fail(err)))
    server.listen(name, () => done(true))
  })
  if (!listening) return undefined
  server.unref()
  const info: DaemonInfo = { pid: process.pid, bootId: bootId(), startedAt: new Date().toISOString(), ...binding }
  await writeFileAtomic(p.daemonFile, JSON.stringify(info), { tmpDir: p.tmpDir })
  return {
    async release(o = {}) {
      // daemon.json first: once the lock is free, the next daemon writes its own.
      if ((await readDaemonInfo(p))?.pid === process.pid) await unlink(p.daemonFile).catch(() => {})
      if (!o.atExit) await new Promise<void>((done) => server.close(() => done()))
    },
  }
}

/** What the daemon serves and how eagerly. */
export interface PrefetchDaemonOptions {
  repo: Repository
  paths: SpoolPaths
  binding: DaemonBinding
  /** The cluster's system identifier (`binding.cluster` resolved by the repository). */
  systemId: string
  /** Segments kept ready after the last one asked for (default 8). */
  prefetchCount?: number
  /** Fetches at once (default 4). */
  concurrency?: number
  /** Exit (emptying the spool) after this long without a request (default 10 s). */
  lingerMs?: number
  signal?: AbortSignal
  log?: (line: string) => void
}

/** What the daemon knows of a file it spooled: what the client must find (a segment's header names the rest). */
interface Spooled {
  sizeBytes: number
  crc32c?: string
}

/** Answers older than this belong to a client that is gone (clients look every 20 ms at most). */
const STALE_ANSWER_MS = 60_000

/** Removes every served file and temporary file: those of a previous daemon are not trusted. Requests stay. */
async function emptySpool(p: SpoolPaths): Promise<void> {
  for (const e of await readdir(p.dir, { withFileTypes: true }).catch(() => [])) {
    if (e.isFile() && e.name !== 'daemon.json' && e.name !== 'daemon.log') await unlink(join(p.dir, e.name)).catch(() => {})
  }
  for (const f of await readdir(p.tmpDir).catch(() => [])) await unlink(join(p.tmpDir, f)).catch(() => {})
  for (const f of await readdir(p.respDir).catch(() => [])) {
    const st = await stat(join(p.respDir, f)).catch(() => undefined)
    if (st && Date.now() - st.mtimeMs > STALE_ANSWER_MS) await unlink(join(p.respDir, f)).catch(() => {})
  }
}

/** Device and inode of a directory: a spool removed and made again at the same path is another one. */
const dirIdentity = async (dir: string) => {
  const st = await stat(dir).catch(() => undefined)
  return st ? `${st.dev}:${st.ino}` : undefined
}

const segnoOf = (name: string, perId: bigint) => BigInt(`0x${name.slice(8, 16)}`) * perId + BigInt(`0x${name.slice(16, 24)}`)
const nameOf = (tli: string, segno: bigint, perId: bigint) =>
  tli + (segno / perId).toString(16).toUpperCase().padStart(8, '0') + (segno % perId).toString(16).toUpperCase().padStart(8, '0')

/**
 * A segment found missing is looked up again only for a request that comes at least this long after (a streamer
 * may store it any moment); until then nothing after it is prefetched either.
 */
const MISSING_RETRY_MS = 1000
const TICK_MS = 100
/** While the launcher's fast path takes segments, the repository's identity is checked at most this often. */
const LOCATION_CHECK_MS = 1000

/**
 * Serves the spool until idle for `lingerMs`, aborted, or retired (see the file header); then empties it.
 * Resolves with why it stopped.
 */
export async function runPrefetchDaemon(o: PrefetchDaemonOptions): Promise<string> {
  const p = o.paths
  const log = o.log ?? (() => {})
  const prefetchCount = Math.max(0, o.prefetchCount ?? 8)
  const concurrency = Math.max(1, o.concurrency ?? 4)
  const lingerMs = o.lingerMs ?? 10_000
  let segSize: number | undefined
  const inFlight = new Map<string, Promise<'ok' | 'missing' | 'error'>>()
  const spooled = new Map<string, Spooled>()
  const missingAt = new Map<string, number>()
  /** Last segments fetched again for the end of recovery (see prefetch). */
  const fetchedAgain = new Set<string>()
  /** Spooled segments answered 'ok' to a request: their clients claim them (see noticeTaken). */
  const answeredOk = new Set<string>()
  /** Requests read and not yet answered (their files stay in req/ until answered). */
  const handling = new Set<string>()
  /** Answers still being written, awaited before the daemon leaves. */
  const answering = new Set<Promise<void>>()
  let base: string | undefined
  let lastRequestAt = Date.now()
  let retired: string | undefined
  let wake: (() => void) | undefined
  const poke = () => {
    const w = wake
    wake = undefined
    w?.()
  }
  // Requests, and segments the launcher's fast path takes from the spool (fast-path.ts): the window moves on at
  // once, not at the next tick.
  const watchers: FSWatcher[] = []
  for (const dir of [p.reqDir, p.dir]) {
    try {
      const w = watch(dir, poke)
      w.on('error', () => {})
      watchers.push(w)
    } catch {
      // Polling alone (TICK_MS) still works.
    }
  }
  o.signal?.addEventListener('abort', poke, { once: true })
  const spoolId = await dirIdentity(p.dir)
  await emptySpool(p)
  const info: DaemonInfo = {
    pid: process.pid,
    bootId: bootId(),
    startedAt: new Date().toISOString(),
    ...o.binding,
    repoId: o.repo.config.id,
    systemId: o.systemId,
  }
  await writeFileAtomic(p.daemonFile, JSON.stringify(info), { tmpDir: p.tmpDir })
  log(
    `daemon ${process.pid} serving cluster ${o.systemId} of repository ${o.repo.config.id} at ${o.binding.repo}, prefetch ${prefetchCount}, concurrency ${concurrency}, linger ${lingerMs / 1000} s`,
  )

  // Segment buffers that served a fetch and are free again: a fresh 16 MiB buffer for each segment costs more in
  // page faults than the copy into it (WalReadOptions.into). At most one per parallel fetch. For the same reason
  // all fetches read through one blob reader, which keeps the buffers its pieces were decoded into.
  const spareBuffers: Buffer[] = []
  const reader = o.repo.openBlobReader({ workers: 0, signal: o.signal })
  const into = (length: number) => {
    const spare = spareBuffers.pop()
    return spare !== undefined && spare.length === length ? spare : Buffer.allocUnsafeSlow(length)
  }

  const fetch = (name: string): Promise<'ok' | 'missing' | 'error'> => {
    const running = inFlight.get(name)
    if (running) return running
    const job = (async (): Promise<'ok' | 'missing' | 'error'> => {
      const t0 = Date.now()
      try {
        const bytes = await fetchWalFile(o.repo, o.systemId, name, { signal: o.signal, into, reader })
        if (!bytes) {
          missingAt.set(name, Date.now())
          return 'missing'
        }
        if (isWalSegmentName(name)) segSize ??= bytes.length
        await writeFileAtomic(join(p.dir, name), bytes, { tmpDir: p.tmpDir })
        spooled.set(name, isWalSegmentName(name) ? { sizeBytes: bytes.length } : { sizeBytes: bytes.length, crc32c: crc32cHexLE(crc32c(bytes)) })
        if (isWalSegmentName(name) && spareBuffers.length < concurrency) spareBuffers.push(bytes)
        missingAt.delete(name)
        log(`fetched ${name} in ${Date.now() - t0} ms`)
        return 'ok'
      } catch (err) {
        log(`failed to fetch ${name}: ${(err as Error).message}`)
        return 'error'
      } finally {
        inFlight.delete(name)
        poke()
      }
    })()
    inFlight.set(name, job)
    return job
  }

  const answer = async (id: string, r: SpoolResponse, req?: SpoolRequest) => {
    if (r.status === 'ok' && req && isWalSegmentName(req.name)) answeredOk.add(req.name)
    await writeFileAtomic(join(p.respDir, id), JSON.stringify(r), { tmpDir: p.tmpDir }).then(
      // Who asked: the lean entry point (src/cli/wal-get-lean.ts), the launcher (fast-path.ts) or the full command.
      () => log(`answered ${req?.name ?? id}: ${r.status} (${req?.client === 'lean' || req?.client === 'shell' ? req.client : 'full'} client)`),
      (err: unknown) => log(`cannot answer ${id}: ${(err as Error).message}`),
    )
    await unlink(join(p.reqDir, id)).catch(() => {})
    handling.delete(id)
    poke()
  }

  const exists = (name: string) =>
    stat(join(p.dir, name)).then(
      () => true,
      () => false,
    )

  /** The request for another repository or cluster than this daemon's, described; undefined when it is ours. */
  const foreign = (req: SpoolRequest): string | undefined => foreignRequest({ ...o.binding, systemId: o.systemId }, req)

  /** Whether the repository at the location is still the one this daemon opened; retires it when not. */
  let lastLocationCheck = 0
  let takenSinceCheck = false
  const stillAtLocation = async (): Promise<boolean> => {
    lastLocationCheck = Date.now()
    takenSinceCheck = false
    let same = false
    try {
      same = await o.repo.isStillAtLocation({ signal: o.signal })
    } catch (err) {
      log(`cannot read the repository's config: ${(err as Error).message}`)
    }
    if (!same) retired = `the repository at ${o.binding.repo} is no longer the one it opened (${o.repo.config.id})`
    return same
  }

  const handleRequests = async () => {
    const ids = (await readdir(p.reqDir).catch(() => [] as string[])).filter((f) => !f.startsWith('.') && !handling.has(f)).sort()
    if (ids.length === 0) return
    lastRequestAt = Date.now()
    // Before answering: is the repository at the location still the one this daemon opened? (Replaced, it would
    // answer "not there" for WAL the new one holds, or serve the old one's.)
    if (!(await stillAtLocation())) return
    for (const id of ids) {
      let req: SpoolRequest
      try {
        req = JSON.parse(await readFile(join(p.reqDir, id), 'utf8')) as SpoolRequest
      } catch {
        continue // removed by its client meanwhile
      }
      if (
        typeof req?.name !== 'string' ||
        !isFetchableWalName(req.name) ||
        typeof req.repo !== 'string' ||
        (req.cluster !== null && typeof req.cluster !== 'string')
      ) {
        handling.add(id)
        await answer(id, { status: 'error', message: 'malformed request' })
        continue
      }
      const other = foreign(req)
      if (other !== undefined) {
        // Left in req/ for the daemon its client starts next.
        retired = `asked for ${other}`
        return
      }
      handling.add(id)
      if (isWalSegmentName(req.name)) base = req.name
      const known = spooled.get(req.name)
      if (known && (await exists(req.name))) {
        await answer(id, { status: 'ok', systemId: o.systemId, pid: process.pid, ...known }, req)
        continue
      }
      spooled.delete(req.name)
      // Asked for now: fetched at once, ahead of the prefetch queue; answered when done, without blocking others.
      const name = req.name
      const answered = fetch(name).then((status) => {
        const s = spooled.get(name)
        return answer(
          id,
          status === 'ok' && s
            ? { status, systemId: o.systemId, pid: process.pid, ...s }
            : status === 'error' || status === 'ok'
              ? { status: 'error', message: `could not fetch '${name}'; see ${p.logFile}` }
              : { status, pid: process.pid },
          req,
        )
      })
      answering.add(answered)
      void answered.finally(() => answering.delete(answered))
    }
  }

  /**
   * Segments gone from the spool without a request: taken by the launcher's fast path (fast-path.ts), which asks
   * nothing. Recovery has come that far, so the window moves on, and the daemon is not idle.
   */
  const noticeTaken = async () => {
    for (const name of [...spooled.keys()]) {
      if (!isWalSegmentName(name) || (await exists(name))) continue
      spooled.delete(name)
      lastRequestAt = Date.now()
      // Claimed by the client a request was answered for: nothing new.
      if (answeredOk.delete(name)) continue
      if (base === undefined || (name.slice(0, 8) === base.slice(0, 8) && name > base)) base = name
      takenSinceCheck = true
      log(`taken ${name} (fast path)`)
    }
  }

  const prefetch = async () => {
    await noticeTaken()
    if (base === undefined || segSize === undefined || prefetchCount === 0) return
    const perId = segmentsPerXlogId(segSize)
    const tli = base.slice(0, 8)
    const first = segnoOf(base, perId)
    const window = new Set<string>([base])
    for (let i = 1n; i <= BigInt(prefetchCount); i++) window.add(nameOf(tli, first + i, perId))
    // Segments behind the window (or on a timeline recovery left) will not be asked for again, except the last
    // segment fetched again for the end of recovery (below) while recovery asks for the one after it. Other files
    // (history, backup history) are only fetched when asked for, and their client is about to take them.
    const previous = first > 0n ? nameOf(tli, first - 1n, perId) : undefined
    for (const name of [...spooled.keys()]) {
      if (isWalSegmentName(name) && !window.has(name) && !(name === previous && fetchedAgain.has(name))) {
        spooled.delete(name)
        answeredOk.delete(name)
        await unlink(join(p.dir, name)).catch(() => {})
      }
    }
    // Fetches share this thread (decoding, hashing): started together, the segment recovery asks for next would be
    // ready only with the others. So while a client waits, its segment has the thread to itself, and the window
    // widens as it fills: one fetch ahead of an empty window, one more for each segment ready.
    let ready = 0
    for (const name of window) if (name !== base && spooled.has(name)) ready++
    const allowed = Math.min(concurrency, 1 + ready)
    for (const name of window) {
      const missing = missingAt.get(name)
      // The archive ends here (for now; `base` included): nothing after a missing segment is fetched either, and
      // the missing one is looked up again only when recovery asks again.
      if (missing !== undefined && lastRequestAt - missing < MISSING_RETRY_MS) break
      if (inFlight.size >= allowed || handling.size > 0) break
      if (name === base || spooled.has(name) || inFlight.has(name)) continue
      void fetch(name)
    }
    // The archive ends after `base` (for now): when recovery ends, PostgreSQL reads its last segment once more (to
    // begin the new timeline), so it is fetched again, once, for the launcher's fast path to serve.
    if (missingAt.has(nameOf(tli, first + 1n, perId)) && !spooled.has(base) && !inFlight.has(base) && !fetchedAgain.has(base)) {
      fetchedAgain.add(base)
      void fetch(base)
    }
  }

  let stopped = 'idle'
  try {
    for (;;) {
      if (o.signal?.aborted) {
        stopped = 'stopped by a signal'
        break
      }
      if ((await dirIdentity(p.dir)) !== spoolId) {
        stopped = 'its spool directory was removed or replaced'
        break
      }
      await handleRequests()
      if (retired !== undefined) {
        stopped = `retired: ${retired}`
        break
      }
      await prefetch()
      // The launcher's fast path asks nothing, so nothing else would check the repository while it serves: a
      // repository replaced at the location retires the daemon (emptying the spool) within a second.
      if (takenSinceCheck && Date.now() - lastLocationCheck >= LOCATION_CHECK_MS && !(await stillAtLocation())) {
        stopped = `retired: ${retired}`
        break
      }
      if (inFlight.size === 0 && handling.size === 0 && Date.now() - lastRequestAt > lingerMs) {
        // A request that came in the last moment is still answered.
        const pending = (await readdir(p.reqDir).catch(() => [] as string[])).filter((f) => !f.startsWith('.'))
        if (pending.length === 0) break
      }
      await new Promise<void>((resolve) => {
        wake = resolve
        setTimeout(poke, TICK_MS)
      })
    }
    await Promise.allSettled([...inFlight.values()])
    await Promise.allSettled([...answering])
  } finally {
    for (const w of watchers) w.close()
    await reader.close()
    await emptySpool(p)
    log(`daemon ${process.pid} exits: ${stopped}`)
  }
  return stopped
}
