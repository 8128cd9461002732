// Repository locks (`locks/<id>`, docs/repository-format.md §9): shared (backup, WAL) and exclusive (GC, expire)
// lock objects that their owner refreshes by writing a new object and removing the old one. A lock not refreshed
// by its `expiresAt` is stale; one whose process is provably gone on this very host is dead. Live locks are never
// broken; dead ones are removed on sight; expired ones are reported and removed only on explicit request.

import { randomBytes } from 'node:crypto'
import { readFileSync, readlinkSync } from 'node:fs'
import { hostname } from 'node:os'
import { LockedError, UsageError } from '../errors.js'
import type { Storage } from '../storage/storage.js'
import { sleep } from '../storage/abort.js'
import { lockKey, LOCKS_PREFIX } from './layout.js'
import { isNotFound, readObject } from './storage-io.js'

export type LockKind = 'shared' | 'exclusive'

/** The content of a lock object (UTF-8 JSON, not encrypted: it holds no secret and must be readable without a key). */
export interface LockInfo {
  readonly version: 1
  readonly kind: LockKind
  /** What the owner is doing, e.g. 'backup', 'wal stream', 'expire'. */
  readonly purpose: string
  /** Host name, for people. */
  readonly host: string
  /** Identity of the host's process namespace (boot id and pid namespace), to decide whether `pid` can be probed. */
  readonly hostId: string
  readonly pid: number
  /** Random per holder; the objects one holder writes while refreshing share it. */
  readonly session: string
  readonly createdAt: string
  readonly refreshedAt: string
  readonly expiresAt: string
}

/**
 * - `live`: refreshed in time and not provably dead: it blocks conflicting locks.
 * - `expired`: not refreshed by `expiresAt`: stale; it no longer blocks, is reported, and is removed only by
 *   `removeStaleLocks`.
 * - `dead`: its owner ran on this host and the pid is gone: stale; removed by the next `acquireLock`.
 * - `unreadable`: not a lock object (damaged): stale, reported.
 */
export type LockState = 'live' | 'expired' | 'dead' | 'unreadable'

export interface LockStatus {
  readonly key: string
  readonly state: LockState
  readonly info?: LockInfo
  /** Milliseconds since the lock was first created (0 when unreadable). */
  readonly ageMs: number
  /** One line naming kind, purpose, host, pid, age and why it is stale; safe to print. */
  readonly description: string
}

export interface LockTiming {
  /** A lock not refreshed for this long is stale (default 30 min, as restic). */
  staleAfterMs?: number
  /** How often the holder refreshes (default 5 min; at most a third of `staleAfterMs`). */
  refreshIntervalMs?: number
}

export interface AcquireLockOptions extends LockTiming {
  /** What the holder is doing; shown to whoever is blocked. */
  purpose: string
  signal?: AbortSignal
  /** Keep retrying this long while a live conflicting lock exists (default 0: fail at once). */
  waitMs?: number
}

const DEFAULT_STALE_AFTER_MS = 30 * 60_000
const DEFAULT_REFRESH_MS = 5 * 60_000
const RETRY_MS = 1000

let cachedHostId: string | undefined
/** This host's process-namespace identity: boot id plus pid namespace on Linux, else the host name. */
export function currentHostId(): string {
  if (cachedHostId !== undefined) return cachedHostId
  let id = hostname()
  try {
    id += ':' + readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    id += ':' + readlinkSync('/proc/self/ns/pid')
  } catch {
    // not Linux: the host name alone decides (documented limitation)
  }
  cachedHostId = id
  return id
}

/** True only when `pid` provably does not exist in this process namespace. */
function processIsGone(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return false
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH'
  }
}

function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 120) return `${s}s`
  const m = Math.round(s / 60)
  if (m < 120) return `${m}m`
  const h = Math.floor(m / 60)
  return h < 48 ? `${h}h${m % 60}m` : `${Math.floor(h / 24)}d${h % 24}h`
}

function parseLock(bytes: Buffer): LockInfo | undefined {
  try {
    const l = JSON.parse(bytes.toString('utf8')) as LockInfo
    const ok =
      l.version === 1 &&
      (l.kind === 'shared' || l.kind === 'exclusive') &&
      typeof l.purpose === 'string' &&
      typeof l.host === 'string' &&
      typeof l.hostId === 'string' &&
      Number.isSafeInteger(l.pid) &&
      typeof l.session === 'string' &&
      [l.createdAt, l.refreshedAt, l.expiresAt].every((t) => typeof t === 'string' && !Number.isNaN(Date.parse(t)))
    return ok ? l : undefined
  } catch {
    return undefined
  }
}

function classify(key: string, info: LockInfo | undefined, now: number): LockStatus {
  if (!info) return { key, state: 'unreadable', ageMs: 0, description: `lock object '${key}' is not a valid lock` }
  const ageMs = now - Date.parse(info.createdAt)
  const who = `${info.kind} lock '${key}' for '${info.purpose}' held by pid ${info.pid} on host '${info.host}', created ${formatDuration(ageMs)} ago`
  if (info.hostId === currentHostId() && info.pid !== process.pid && processIsGone(info.pid)) {
    return { key, state: 'dead', info, ageMs, description: `${who}: that process no longer exists` }
  }
  const expiresAt = Date.parse(info.expiresAt)
  if (now > expiresAt) {
    return {
      key,
      state: 'expired',
      info,
      ageMs,
      description: `${who}: not refreshed since ${formatDuration(now - Date.parse(info.refreshedAt))} ago (expired ${formatDuration(now - expiresAt)} ago)`,
    }
  }
  return { key, state: 'live', info, ageMs, description: who }
}

/** Every lock object with its state. Locks removed while listing are skipped. */
export async function listLocks(storage: Storage, o: { signal?: AbortSignal } = {}): Promise<LockStatus[]> {
  const out: LockStatus[] = []
  for await (const obj of storage.list(LOCKS_PREFIX, { signal: o.signal })) {
    let bytes: Buffer
    try {
      bytes = await readObject(storage, obj.key, { signal: o.signal })
    } catch (err) {
      if (isNotFound(err)) continue // released meanwhile
      throw err
    }
    out.push(classify(obj.key, parseLock(bytes), Date.now()))
  }
  return out
}

/** Removes every stale lock (expired, dead or unreadable) and returns what it removed. Live locks are kept. */
export async function removeStaleLocks(storage: Storage, o: { signal?: AbortSignal } = {}): Promise<LockStatus[]> {
  const stale = (await listLocks(storage, o)).filter((l) => l.state !== 'live')
  for (const l of stale) await storage.remove(l.key, { signal: o.signal })
  return stale
}

function conflicts(kind: LockKind, other: LockInfo): boolean {
  return kind === 'exclusive' || other.kind === 'exclusive'
}

function lockedError(kind: LockKind, blocker: LockStatus): LockedError {
  const i = blocker.info!
  return new LockedError(`cannot take ${kind === 'exclusive' ? 'an exclusive' : 'a shared'} lock: the repository is locked by ${blocker.description}`, {
    hint:
      `wait until that ${i.purpose} on host '${i.host}' (pid ${i.pid}) finishes and retry; ` +
      `if that process is gone, its lock stops blocking once it expires at ${i.expiresAt}`,
  })
}

/** A held lock. Keep it refreshed by leaving the process running; `release` when done. */
export class RepoLock {
  readonly kind: LockKind
  readonly purpose: string
  /** Stale locks seen while acquiring (expired or unreadable): they did not block; report them. */
  readonly staleLocks: readonly LockStatus[]
  /** Dead locks of gone processes on this host, removed while acquiring. */
  readonly removedLocks: readonly LockStatus[]
  readonly #storage: Storage
  readonly #session: string
  readonly #staleAfterMs: number
  readonly #lost = new AbortController()
  #key: string
  #expiresAt: number
  readonly #createdAt: number
  #timer: NodeJS.Timeout | undefined
  #refreshing: Promise<void> | undefined
  #released = false
  readonly #onRelease: ((lock: RepoLock) => void) | undefined

  /** @internal use acquireLock */
  constructor(
    storage: Storage,
    init: { kind: LockKind; purpose: string; session: string; key: string; createdAt: number; expiresAt: number; staleAfterMs: number; refreshIntervalMs: number },
    seen: { stale: LockStatus[]; removed: LockStatus[] },
    onRelease?: (lock: RepoLock) => void,
  ) {
    this.#onRelease = onRelease
    this.#storage = storage
    this.kind = init.kind
    this.purpose = init.purpose
    this.#session = init.session
    this.#key = init.key
    this.#expiresAt = init.expiresAt
    this.#createdAt = init.createdAt
    this.#staleAfterMs = init.staleAfterMs
    this.staleLocks = seen.stale
    this.removedLocks = seen.removed
    this.#timer = setInterval(() => void this.refresh().catch(() => {}), init.refreshIntervalMs)
    this.#timer.unref()
  }

  /** The lock object's current key (it changes on every refresh). */
  get key(): string {
    return this.#key
  }

  /**
   * Aborted (with a LockedError) when the lock was lost: it could not be refreshed before it expired, so another
   * process may by now hold a conflicting lock. Holders must stop writing when it fires.
   */
  get signal(): AbortSignal {
    return this.#lost.signal
  }

  /** Writes a fresh lock object and removes the previous one. Called by the timer; callable directly. */
  refresh(): Promise<void> {
    if (this.#released || this.#lost.signal.aborted) return Promise.resolve()
    this.#refreshing ??= this.#doRefresh().finally(() => {
      this.#refreshing = undefined
    })
    return this.#refreshing
  }

  async #doRefresh(): Promise<void> {
    if (Date.now() > this.#expiresAt) {
      this.#markLost('it expired before it could be refreshed (was the process suspended?)')
      return
    }
    const old = this.#key
    const now = Date.now()
    const next = lockObject(this.kind, this.purpose, this.#session, now, this.#staleAfterMs, this.#createdAt)
    try {
      await this.#storage.write(next.key, next.bytes, { ifAbsent: true, collisionFree: true })
    } catch (err) {
      if (Date.now() > this.#expiresAt) this.#markLost(`refreshing failed until it expired: ${(err as Error).message}`)
      throw err
    }
    this.#key = next.key
    this.#expiresAt = next.expiresAt
    if (this.#released) {
      await this.#storage.remove(next.key)
      return
    }
    await this.#storage.remove(old).catch(() => {
      // A leftover object of our own session is harmless: it expires and is ignored by our own checks.
    })
  }

  #markLost(why: string): void {
    if (this.#timer) clearInterval(this.#timer)
    this.#lost.abort(new LockedError(`${this.kind} lock for '${this.purpose}' was lost: ${why}`, {
      hint: 'run the operation again; nothing it wrote is visible until it completes',
    }))
  }

  /** Stops refreshing and removes the lock object. Idempotent. */
  async release(): Promise<void> {
    if (this.#released) return
    this.#released = true
    this.#onRelease?.(this)
    if (this.#timer) clearInterval(this.#timer)
    await this.#refreshing?.catch(() => {})
    await this.#storage.remove(this.#key)
  }
}

function lockObject(kind: LockKind, purpose: string, session: string, now: number, staleAfterMs: number, createdAt = now) {
  const expiresAt = now + staleAfterMs
  const info: LockInfo = {
    version: 1,
    kind,
    purpose,
    host: hostname(),
    hostId: currentHostId(),
    pid: process.pid,
    session,
    createdAt: new Date(createdAt).toISOString(),
    refreshedAt: new Date(now).toISOString(),
    expiresAt: new Date(expiresAt).toISOString(),
  }
  return { key: lockKey(randomBytes(16).toString('hex')), bytes: Buffer.from(JSON.stringify(info) + '\n'), expiresAt, info }
}

/**
 * Takes a lock: exclusive conflicts with every live lock, shared only with live exclusive ones. The protocol (as
 * restic's): check, write our own lock object, then list again and re-check, because two acquirers may have
 * written at the same moment; if the re-check finds a live conflict, both back off (our object is removed and
 * LockedError is thrown), which is safe, never both proceeding. Dead locks of this host are removed on the way;
 * expired ones are reported in `staleLocks` and do not block.
 */
export async function acquireLock(
  storage: Storage,
  kind: LockKind,
  o: AcquireLockOptions,
  onRelease?: (lock: RepoLock) => void,
): Promise<RepoLock> {
  if (kind !== 'shared' && kind !== 'exclusive') throw new UsageError(`invalid lock kind '${String(kind)}'`)
  const staleAfterMs = o.staleAfterMs ?? DEFAULT_STALE_AFTER_MS
  const refreshIntervalMs = Math.min(o.refreshIntervalMs ?? DEFAULT_REFRESH_MS, Math.floor(staleAfterMs / 3))
  const session = randomBytes(8).toString('hex')
  const deadline = Date.now() + (o.waitMs ?? 0)
  const removed: LockStatus[] = []

  // Returns the first live conflicting lock, removing dead ones; collects stale ones.
  const check = async (): Promise<{ blocker?: LockStatus; stale: LockStatus[] }> => {
    const stale: LockStatus[] = []
    for (const l of await listLocks(storage, { signal: o.signal })) {
      if (l.info?.session === session) continue
      if (l.state === 'dead') {
        await storage.remove(l.key, { signal: o.signal })
        removed.push(l)
      } else if (l.state !== 'live') stale.push(l)
      else if (conflicts(kind, l.info!)) return { blocker: l, stale }
    }
    return { stale }
  }
  const waitOrThrow = async (blocker: LockStatus): Promise<void> => {
    if (Date.now() + RETRY_MS > deadline) throw lockedError(kind, blocker)
    await sleep(RETRY_MS, o.signal)
  }

  for (;;) {
    o.signal?.throwIfAborted()
    const before = await check()
    if (before.blocker) {
      await waitOrThrow(before.blocker)
      continue
    }
    const mine = lockObject(kind, o.purpose, session, Date.now(), staleAfterMs)
    // A fresh random name: no one else writes it, so stores without conditional writes need no read-back.
    await storage.write(mine.key, mine.bytes, { ifAbsent: true, collisionFree: true, signal: o.signal })
    let after: Awaited<ReturnType<typeof check>>
    try {
      after = await check()
    } catch (err) {
      await storage.remove(mine.key).catch(() => {})
      throw err
    }
    if (after.blocker) {
      await storage.remove(mine.key)
      await waitOrThrow(after.blocker)
      continue
    }
    return new RepoLock(
      storage,
      { kind, purpose: o.purpose, session, key: mine.key, createdAt: Date.parse(mine.info.createdAt), expiresAt: mine.expiresAt, staleAfterMs, refreshIntervalMs },
      { stale: after.stale, removed },
      onRelease,
    )
  }
}
