// The prefetch daemon of `wal get`: one background process per spool that keeps the repository open (so each
// restore_command invocation neither opens the repository nor loads its index), answers requests, and fetches the
// segments after the last one asked for, in parallel, into the spool. It empties the spool and exits when no
// request came for a while. Layout and client side: prefetch-spool.ts.

import { watch, type FSWatcher } from 'node:fs'
import { link, readdir, readFile, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { isWalSegmentName, segmentsPerXlogId } from '../pg/wal-names.js'
import type { Repository } from '../repo/repository.js'
import { bootId, type DaemonInfo, ensureSpoolDirs, readDaemonInfo, type SpoolPaths, type SpoolRequest, type SpoolResponse, writeAtomic, processAlive } from './prefetch-spool.js'
import { fetchWalFile } from './wal-fetch.js'

/** What the daemon serves and how eagerly. */
export interface PrefetchDaemonOptions {
  repo: Repository
  paths: SpoolPaths
  systemId: string
  /** Segments kept ready after the last one asked for (default 8). */
  prefetchCount?: number
  /** Fetches at once (default 4). */
  concurrency?: number
  /** Exit (emptying the spool) after this long without a request (default 60 s). */
  lingerMs?: number
  signal?: AbortSignal
  log?: (line: string) => void
}

/**
 * Takes the spool for this process: creates daemon.json exclusively (a hard link of a complete temporary file, so
 * it is never seen half-written). A daemon.json of a dead process is replaced. Resolves false when a live daemon
 * holds the spool.
 */
export async function acquireSpool(p: SpoolPaths, info: Omit<DaemonInfo, 'pid' | 'bootId' | 'startedAt'>): Promise<boolean> {
  await ensureSpoolDirs(p)
  const mine: DaemonInfo = { pid: process.pid, bootId: bootId(), startedAt: new Date().toISOString(), ...info }
  const tmp = join(p.tmpDir, `daemon.${process.pid}.${randomBytes(4).toString('hex')}`)
  await writeFile(tmp, JSON.stringify(mine), { mode: 0o600 })
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await link(tmp, p.daemonFile)
        return true
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      const other = await readDaemonInfo(p)
      if (other && other.bootId === bootId() && processAlive(other.pid)) return false
      // Dead holder (or unreadable file): remove it and try once more. Two starters racing here may both win;
      // the cost is duplicate fetching, never a wrong file (every file is written by temp + rename).
      await unlink(p.daemonFile).catch(() => {})
    }
    return false
  } finally {
    await unlink(tmp).catch(() => {})
  }
}

/** Removes daemon.json if it is still ours. */
async function releaseSpool(p: SpoolPaths): Promise<void> {
  const info = await readDaemonInfo(p)
  if (info?.pid === process.pid) await unlink(p.daemonFile).catch(() => {})
}

/** Removes every file but the lock and the log: served files of a previous daemon are not trusted. */
async function emptySpool(p: SpoolPaths, keepRequests: boolean): Promise<void> {
  for (const e of await readdir(p.dir, { withFileTypes: true }).catch(() => [])) {
    if (e.isFile() && e.name !== 'daemon.json' && e.name !== 'daemon.log') await unlink(join(p.dir, e.name)).catch(() => {})
  }
  for (const d of [p.tmpDir, p.respDir, ...(keepRequests ? [] : [p.reqDir])]) {
    for (const f of await readdir(d).catch(() => [])) {
      // daemon.<pid>.* in tmp/ may be another starter's lock candidate: leave those.
      if (d === p.tmpDir && f.startsWith('daemon.')) continue
      await unlink(join(d, f)).catch(() => {})
    }
  }
}

const segnoOf = (name: string, perId: bigint) => BigInt(`0x${name.slice(8, 16)}`) * perId + BigInt(`0x${name.slice(16, 24)}`)
const nameOf = (tli: string, segno: bigint, perId: bigint) =>
  tli + (segno / perId).toString(16).toUpperCase().padStart(8, '0') + (segno % perId).toString(16).toUpperCase().padStart(8, '0')

/** How long "not in the repository" is believed before asking again (a streamer may store it any moment). */
const MISSING_TTL_MS = 1000
const TICK_MS = 100

/** Serves the spool until idle for `lingerMs` or aborted; then empties it and releases it. */
export async function runPrefetchDaemon(o: PrefetchDaemonOptions): Promise<void> {
  const p = o.paths
  const log = o.log ?? (() => {})
  const prefetchCount = Math.max(0, o.prefetchCount ?? 8)
  const concurrency = Math.max(1, o.concurrency ?? 4)
  const lingerMs = o.lingerMs ?? 60_000
  let segSize: number | undefined
  const inFlight = new Map<string, Promise<'ok' | 'missing' | 'error'>>()
  const spooled = new Set<string>()
  const missingAt = new Map<string, number>()
  let base: string | undefined
  let lastRequestAt = Date.now()
  let wake: (() => void) | undefined
  const poke = () => {
    const w = wake
    wake = undefined
    w?.()
  }
  let watcher: FSWatcher | undefined
  try {
    watcher = watch(p.reqDir, poke)
    watcher.on('error', () => {})
  } catch {
    // Polling alone (TICK_MS) still works.
  }
  o.signal?.addEventListener('abort', poke, { once: true })
  await emptySpool(p, true)
  log(`daemon ${process.pid} serving cluster ${o.systemId}, prefetch ${prefetchCount}, concurrency ${concurrency}`)

  const fetch = (name: string): Promise<'ok' | 'missing' | 'error'> => {
    const running = inFlight.get(name)
    if (running) return running
    const job = (async (): Promise<'ok' | 'missing' | 'error'> => {
      const t0 = Date.now()
      try {
        const bytes = await fetchWalFile(o.repo, o.systemId, name, { signal: o.signal })
        if (!bytes) {
          missingAt.set(name, Date.now())
          return 'missing'
        }
        if (isWalSegmentName(name)) segSize ??= bytes.length
        await writeAtomic(join(p.dir, name), bytes, p.tmpDir)
        spooled.add(name)
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

  const answer = async (id: string, r: SpoolResponse) => {
    await writeAtomic(join(p.respDir, id), JSON.stringify(r), p.tmpDir).catch((err) => log(`cannot answer ${id}: ${(err as Error).message}`))
  }

  const exists = (name: string) => stat(join(p.dir, name)).then(
    () => true,
    () => false,
  )

  const handleRequests = async () => {
    const ids = (await readdir(p.reqDir).catch(() => [] as string[])).filter((f) => !f.startsWith('.')).sort()
    for (const id of ids) {
      const path = join(p.reqDir, id)
      let req: SpoolRequest
      try {
        req = JSON.parse(await readFile(path, 'utf8')) as SpoolRequest
      } catch {
        continue // removed by its client meanwhile, or not ours
      }
      await unlink(path).catch(() => {})
      lastRequestAt = Date.now()
      if (isWalSegmentName(req.name)) base = req.name
      if (!req.reply) {
        spooled.delete(req.name)
        continue
      }
      if (spooled.has(req.name) && (await exists(req.name))) {
        await answer(id, { status: 'ok' })
        continue
      }
      spooled.delete(req.name)
      // Asked for now: fetched at once, ahead of the prefetch queue; answered when done, without blocking others.
      void fetch(req.name).then((status) =>
        answer(id, status === 'error' ? { status, message: `could not fetch '${req.name}'; see ${p.logFile}` } : { status }),
      )
    }
  }

  const prefetch = async () => {
    if (base === undefined || segSize === undefined || prefetchCount === 0) return
    const perId = segmentsPerXlogId(segSize)
    const tli = base.slice(0, 8)
    const first = segnoOf(base, perId)
    const window = new Set<string>([base])
    for (let i = 1n; i <= BigInt(prefetchCount); i++) window.add(nameOf(tli, first + i, perId))
    // Files behind the window (or on a timeline recovery left) will not be asked for again.
    for (const name of [...spooled]) {
      if (!window.has(name)) {
        spooled.delete(name)
        await unlink(join(p.dir, name)).catch(() => {})
      }
    }
    const now = Date.now()
    for (const name of window) {
      if (inFlight.size >= concurrency) break
      if (name === base || spooled.has(name) || inFlight.has(name)) continue
      const missing = missingAt.get(name)
      // The archive ends here (for now): nothing after a missing segment is fetched either.
      if (missing !== undefined && now - missing < MISSING_TTL_MS) break
      void fetch(name)
    }
  }

  try {
    for (;;) {
      if (o.signal?.aborted) break
      await handleRequests()
      await prefetch()
      if (inFlight.size === 0 && Date.now() - lastRequestAt > lingerMs) {
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
  } finally {
    watcher?.close()
    await emptySpool(p, true)
    await releaseSpool(p)
    log(`daemon ${process.pid} exits`)
  }
}
