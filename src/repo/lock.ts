// Repository locks (`locks/<id>`, docs/repository-format.md §10): shared (backup, WAL, restore, verify, expire,
// forget, copy, gc) and exclusive (index rebuild) lock objects that their owner refreshes by writing a new object
// and removing the old one. A lock not refreshed by its `expiresAt` is stale; one whose process is provably gone on
// this very host is dead. Live locks are never broken; dead ones are removed on sight; expired ones are removed on
// explicit request, and by an exclusive holder before it removes anything. A holder keeps retrying a failed refresh
// and re-takes its lock after expiry only when provably nobody else took a conflicting one meanwhile; otherwise the
// lock is lost for good.
// Longer than 400 lines on purpose: acquiring, refreshing, re-taking and losing a lock are one protocol whose
// rules only make sense read together (and are written down as such in repository-format.md §10).

import { randomBytes } from 'node:crypto'
import { readFileSync, readlinkSync } from 'node:fs'
import { hostname } from 'node:os'
import { AccessDeniedError, LockedError, UsageError } from '../errors.js'
import type { Storage } from '../storage/storage.js'
import { raceAbort, sleep } from '../storage/abort.js'
import { lockKey, LOCKS_PREFIX } from './layout.js'
import { isNotFound, readObject } from './storage-io.js'

export type LockKind = 'shared' | 'exclusive'

/** The purpose a backup's lock carries: expire looks for it before it removes WAL. */
export const BACKUP_LOCK_PURPOSE = 'backup'
/** The purpose expire's lock carries: a backup waits while one is live before it stores WAL (§10). */
export const EXPIRE_LOCK_PURPOSE = 'expire'

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
  /**
   * Keys of the condemnation records (`gc-condemned`) every repository instance working under this lock has read
   * and can no longer need the packs of (docs/repository-format.md §10a); `["*"]` when none of them can write any
   * more. Absent: acknowledges nothing.
   */
  readonly gcAcks?: readonly string[]
}

/**
 * What a repository instance working under a lock adds to it: acknowledgements of condemned packs for the lock
 * objects it writes, and a chance to read new condemnation records before each refresh.
 */
export interface LockContributor {
  /** Keys this instance acknowledges now; undefined when it can no longer write anything (closed). */
  acknowledged(): readonly string[] | undefined
  /** Called before each refresh (bounded in time; failures are ignored: the acknowledgements then stay as they were). */
  beforeRefresh?(signal: AbortSignal): Promise<void>
}

/**
 * - `live`: refreshed in time and not provably dead: it blocks conflicting locks.
 * - `expired`: not refreshed by `expiresAt`: stale; it no longer blocks, is reported, and is removed by
 *   `removeStaleLocks` or by the next exclusive acquirer (which so breaks it: its owner cannot re-take it).
 * - `dead`: its owner ran on this host and the pid is gone: stale; removed by the next `acquireLock`.
 * - `unreadable`: not a lock object we can read (damaged, or of a newer format): stale, reported; it blocks
 *   exclusive locks (it may be a newer pgkeep's live lock) until `removeStaleLocks` removes it.
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

/**
 * How a held lock stands, as its holder sees it:
 * - `held`: refreshed in time; writes that need the lock may go ahead.
 * - `at-risk`: a refresh failed (it is being retried), or the lock expired before it could be refreshed (it is
 *   being re-taken). Writes that need the lock wait.
 * - `lost`: it could not be kept: re-taking it found a conflicting lock or found it broken, or it stayed at risk
 *   for a whole stale interval past its expiry. Final; `signal` has fired.
 * - `released`: given back by its holder.
 */
export type LockHoldState = 'held' | 'at-risk' | 'lost' | 'released'

/** A change of a held lock's state, with a line for people. */
export interface LockStateChange {
  readonly state: LockHoldState
  /** Safe to print, e.g. "could not refresh the shared lock for 'backup' (…); retrying until …". */
  readonly message: string
  /** The failure that put the lock at risk or lost it. */
  readonly error?: Error
}

export interface AcquireLockOptions extends LockTiming {
  /** What the holder is doing; shown to whoever is blocked. */
  purpose: string
  signal?: AbortSignal
  /** Keep retrying this long while a live conflicting lock exists (default 0: fail at once). */
  waitMs?: number
  /** Told when the lock becomes at risk, held again, or lost (not on release). Must not throw. */
  onStateChange?: (change: LockStateChange) => void
}

const DEFAULT_STALE_AFTER_MS = 30 * 60_000
const DEFAULT_REFRESH_MS = 5 * 60_000
const RETRY_MS = 1000
/** First wait before retrying a failed refresh (at most a quarter of the refresh interval); it doubles up to the interval. */
const FIRST_REFRESH_RETRY_MS = 1000
/**
 * A write that needs the lock starts only while at least this fraction of the stale interval is left before the
 * lock expires, and is aborted when that margin is reached: it must be complete before anyone may judge the lock
 * expired (clocks of hosts sharing a repository agree to well within it).
 */
const WRITE_MARGIN_FRACTION = 0.1

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

/** `42s`, `17m`, `3h05m`, `2d4h`: a duration for lock descriptions. */
export function formatLockAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 120) return `${s}s`
  const m = Math.round(s / 60)
  if (m < 120) return `${m}m`
  const h = Math.floor(m / 60)
  return h < 48 ? `${h}h${String(m % 60).padStart(2, '0')}m` : `${Math.floor(h / 24)}d${h % 24}h`
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
    if (!ok) return undefined
    // Acknowledgements that do not parse acknowledge nothing (the safe reading).
    if (l.gcAcks !== undefined && !(Array.isArray(l.gcAcks) && l.gcAcks.every((k) => typeof k === 'string'))) {
      const { gcAcks: _, ...rest } = l
      return rest
    }
    return l
  } catch {
    return undefined
  }
}

function classify(key: string, info: LockInfo | undefined, now: number): LockStatus {
  if (!info) return { key, state: 'unreadable', ageMs: 0, description: `lock object '${key}' is not a lock this pgkeep can read` }
  const ageMs = now - Date.parse(info.createdAt)
  const who = `${info.kind} lock '${key}' for '${info.purpose}' held by pid ${info.pid} on host '${info.host}', created ${formatLockAge(ageMs)} ago`
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
      description: `${who}: not refreshed since ${formatLockAge(now - Date.parse(info.refreshedAt))} ago (expired ${formatLockAge(now - expiresAt)} ago)`,
    }
  }
  return { key, state: 'live', info, ageMs, description: who }
}

/** Every lock object with its state. Locks removed while listing are skipped. Reads only. */
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

/**
 * Live locks held for `purpose` by other sessions than `exceptSession`. Operations that must not overlap although
 * both take shared locks (a backup's WAL and expire's WAL removal, docs/repository-format.md §10) write their own
 * lock first and then look for the other's: of two that start together, at least one sees the other.
 */
export async function liveLocksFor(storage: Storage, purpose: string, exceptSession?: string, o: { signal?: AbortSignal } = {}): Promise<LockStatus[]> {
  return (await listLocks(storage, o)).filter((l) => l.state === 'live' && l.info?.purpose === purpose && l.info.session !== exceptSession)
}

/**
 * Waits while another session than `exceptSession` holds a live lock for `purpose`, checking every second, for at
 * most `maxWaitMs`; `onWait` hears once what it waits for.
 * @throws LockedError when such a lock is still live after `maxWaitMs`
 */
export async function waitWhileLocked(
  storage: Storage,
  purpose: string,
  o: { exceptSession?: string; maxWaitMs: number; signal?: AbortSignal; onWait?: (lock: LockStatus) => void },
): Promise<void> {
  const deadline = Date.now() + o.maxWaitMs
  let told = false
  for (;;) {
    const live = await liveLocksFor(storage, purpose, o.exceptSession, o)
    if (live.length === 0) return
    if (!told) o.onWait?.(live[0]!)
    told = true
    if (Date.now() >= deadline) {
      throw new LockedError(`gave up waiting for the ${live[0]!.description} to finish`, {
        hint: `retry once it has finished; if that process is gone, its lock stops counting once it expires at ${live[0]!.info!.expiresAt} ('pgkeep unlock --repo URL' lists the locks)`,
      })
    }
    await sleep(Math.min(RETRY_MS, Math.max(0, deadline - Date.now())), o.signal)
  }
}

/**
 * Removes every stale lock (expired, dead or unreadable) and returns what it removed. Live locks are kept. An
 * expired lock's owner that comes back finds its lock gone and knows it lost it.
 */
export async function removeStaleLocks(storage: Storage, o: { signal?: AbortSignal } = {}): Promise<LockStatus[]> {
  const stale = (await listLocks(storage, o)).filter((l) => l.state !== 'live')
  for (const l of stale) await storage.remove(l.key, { signal: o.signal })
  return stale
}

function conflicts(kind: LockKind, other: LockInfo): boolean {
  return kind === 'exclusive' || other.kind === 'exclusive'
}

interface LockScan {
  /** A lock that stops `kind` from being taken: a live conflicting one, or for an exclusive lock an unreadable one. */
  blocker?: LockStatus
  /** Dead locks of other sessions. */
  dead: LockStatus[]
  /** Expired and (for shared locks) unreadable locks of other sessions: they do not block. */
  stale: LockStatus[]
}

/** Lists the locks of other sessions than `session` and sorts them by what they mean for taking `kind`. */
async function scanLocks(storage: Storage, kind: LockKind, session: string, signal?: AbortSignal): Promise<LockScan> {
  const scan: LockScan = { dead: [], stale: [] }
  for (const l of await listLocks(storage, { signal })) {
    if (l.info?.session === session) continue
    if (l.state === 'dead') scan.dead.push(l)
    else if (l.state === 'live' ? conflicts(kind, l.info!) : l.state === 'unreadable' && kind === 'exclusive') scan.blocker ??= l
    else if (l.state !== 'live') scan.stale.push(l)
  }
  return scan
}

function lockedError(kind: LockKind, blocker: LockStatus): LockedError {
  const what = `cannot take ${kind === 'exclusive' ? 'an exclusive' : 'a shared'} lock`
  const i = blocker.info
  if (!i) {
    return new LockedError(`${what}: the repository holds ${blocker.description}`, {
      hint:
        "see it with 'pgkeep unlock --repo URL'; unless a newer pgkeep version works on this repository, " +
        "remove it with 'pgkeep unlock --repo URL --remove-stale'",
    })
  }
  return new LockedError(`${what}: the repository is locked by ${blocker.description}`, {
    hint:
      `wait until that ${i.purpose} on host '${i.host}' (pid ${i.pid}) finishes and retry; ` +
      `if that process is gone, its lock stops blocking once it expires at ${i.expiresAt} ` +
      `(at once when it ran on this host); 'pgkeep unlock --repo URL' lists every lock`,
  })
}

/**
 * A held lock. It refreshes itself while the process runs: every `refreshIntervalMs`, and after a failure again
 * and again with a growing delay (up to the refresh interval). A refresh before `expiresAt` writes a new lock
 * object and removes the old one. After `expiresAt` the lock is re-taken only if its old object is still there
 * and no conflicting lock of another session exists, both checked after the new object is written (the same
 * race-safe order as acquiring); otherwise, or when it stays at risk for another stale interval, it is lost.
 *
 * Holders watch `signal` (fires when lost) and make the writes that need the lock through `runHeld`.
 */
export class RepoLock {
  readonly kind: LockKind
  readonly purpose: string
  /** Stale locks seen while acquiring and left in place (expired or unreadable): they did not block; report them. */
  readonly staleLocks: readonly LockStatus[]
  /** Locks removed while acquiring: dead ones, and for an exclusive lock also the expired ones it broke. */
  readonly removedLocks: readonly LockStatus[]
  readonly #storage: Storage
  readonly #session: string
  readonly #staleAfterMs: number
  readonly #refreshIntervalMs: number
  readonly #firstRetryMs: number
  readonly #createdAt: number
  readonly #lost = new AbortController()
  readonly #onRelease: ((lock: RepoLock) => void) | undefined
  readonly #onStateChange: ((change: LockStateChange) => void) | undefined
  #key: string
  #expiresAt: number
  /** Why the last refresh attempt failed; undefined while refreshes succeed. */
  #failure: Error | undefined
  #retryMs: number
  #timer: NodeJS.Timeout | undefined
  #attempt: Promise<void> | undefined
  /** Woken after every refresh attempt and when the lock is lost or released. */
  #waiters: (() => void)[] = []
  readonly #contributors: LockContributor[] = []
  /** Objects of this session whose write failed but may have landed (an answer lost): removed when possible. */
  readonly #strays = new Set<string>()
  #released = false

  /** @internal use acquireLock */
  constructor(
    storage: Storage,
    init: {
      kind: LockKind
      purpose: string
      session: string
      key: string
      createdAt: number
      expiresAt: number
      staleAfterMs: number
      refreshIntervalMs: number
    },
    seen: { stale: LockStatus[]; removed: LockStatus[] },
    hooks: { onRelease?: (lock: RepoLock) => void; onStateChange?: (change: LockStateChange) => void } = {},
  ) {
    this.#storage = storage
    this.kind = init.kind
    this.purpose = init.purpose
    this.#session = init.session
    this.#key = init.key
    this.#expiresAt = init.expiresAt
    this.#createdAt = init.createdAt
    this.#staleAfterMs = init.staleAfterMs
    this.#refreshIntervalMs = init.refreshIntervalMs
    this.#firstRetryMs = Math.max(1, Math.min(FIRST_REFRESH_RETRY_MS, Math.floor(init.refreshIntervalMs / 4)))
    this.#retryMs = this.#firstRetryMs
    this.staleLocks = seen.stale
    this.removedLocks = seen.removed
    this.#onRelease = hooks.onRelease
    this.#onStateChange = hooks.onStateChange
    this.#schedule(init.refreshIntervalMs)
  }

  /** The lock object's current key (it changes on every refresh). */
  get key(): string {
    return this.#key
  }

  /** The holder's session: every object this lock writes while refreshing carries it. */
  get session(): string {
    return this.#session
  }

  /**
   * Adds a repository instance working under this lock: from the next refresh on, the lock objects carry the
   * acknowledgements of condemned packs that every contributor gives (docs/repository-format.md §10a).
   */
  addContributor(c: LockContributor): void {
    if (!this.#contributors.includes(c)) this.#contributors.push(c)
  }

  /** The `gcAcks` member of the next lock object: what every contributor acknowledges; undefined without any. */
  #acknowledgements(): readonly string[] | undefined {
    if (this.#contributors.length === 0) return undefined
    let acks: Set<string> | undefined
    for (const c of this.#contributors) {
      const mine = c.acknowledged()
      if (mine === undefined) continue
      acks = acks === undefined ? new Set(mine) : new Set(mine.filter((k) => acks!.has(k)))
    }
    return acks === undefined ? [ALL_ACKNOWLEDGED] : [...acks].sort()
  }

  /** Lets contributors read condemnation records before a refresh, for at most a tenth of the refresh interval. */
  async #prepareRefresh(): Promise<void> {
    const withHook = this.#contributors.filter((c) => c.beforeRefresh !== undefined)
    if (withHook.length === 0) return
    const budget = AbortSignal.timeout(Math.max(1000, Math.floor(this.#refreshIntervalMs / 10)))
    const signal = AbortSignal.any([budget, this.#lost.signal])
    await raceAbort(Promise.allSettled(withHook.map((c) => c.beforeRefresh!(signal))), signal).catch(() => {})
  }

  /** When the lock object now in the repository expires (by this host's clock). */
  get expiresAt(): Date {
    return new Date(this.#expiresAt)
  }

  get state(): LockHoldState {
    if (this.#released) return 'released'
    if (this.#lost.signal.aborted) return 'lost'
    return this.#failure !== undefined || Date.now() >= this.#expiresAt ? 'at-risk' : 'held'
  }

  /**
   * Aborted (with a LockedError) when the lock is lost: another process may by now hold a conflicting lock, so
   * the holder must stop and must not make anything it wrote visible.
   */
  get signal(): AbortSignal {
    return this.#lost.signal
  }

  /** Throws the LockedError of a lost lock, or a LockedError once released; at risk or held, returns. */
  assertHeld(): void {
    if (this.#lost.signal.aborted) throw this.#lost.signal.reason
    if (this.#released)
      throw new LockedError(`the ${this.kind} lock for '${this.purpose}' was released`, {
        hint: 'this is a bug in pgkeep: a write came after its lock was given back',
      })
  }

  /**
   * Runs `fn` (a write that needs the lock) only while the lock is held, with a signal that aborts it when the
   * lock is lost or when less than the safety margin is left before the lock expires. While the lock is at risk
   * it waits for the retries (or re-taking) to succeed; when it is lost it throws the LockedError.
   */
  async runHeld<T>(fn: (signal: AbortSignal) => Promise<T>, o: { signal?: AbortSignal } = {}): Promise<T> {
    const marginMs = this.#staleAfterMs * WRITE_MARGIN_FRACTION
    for (;;) {
      o.signal?.throwIfAborted()
      this.assertHeld()
      if (this.#failure === undefined && this.#expiresAt - Date.now() > marginMs) break
      // Due, overdue or expired (a suspended process, a late timer): refresh or re-take now. After a failure, the
      // retries are already scheduled: wait for the next one rather than adding attempts.
      if (this.#failure === undefined) await this.refresh().catch(() => {})
      else await raceAbort(this.#nextAttempt(), o.signal)
    }
    // One controller per write, with listeners removed afterwards: a streamer makes many such writes under one
    // long-lived lock, and composite signals hanging off it would pile up.
    const write = new AbortController()
    const timer = setTimeout(
      () =>
        write.abort(
          new LockedError(`a write under the ${this.kind} lock for '${this.purpose}' did not finish before the lock came close to expiring`, {
            hint: 'the repository storage is very slow; run the operation again',
          }),
        ),
      this.#expiresAt - marginMs - Date.now(),
    )
    const sources = [o.signal, this.#lost.signal].filter((x): x is AbortSignal => x !== undefined)
    const onAbort = (e: Event) => write.abort((e.target as AbortSignal).reason)
    for (const src of sources) src.addEventListener('abort', onAbort, { once: true })
    try {
      return await fn(write.signal)
    } finally {
      clearTimeout(timer)
      for (const src of sources) src.removeEventListener('abort', onAbort)
    }
  }

  /**
   * One refresh attempt now (or the one under way): resolves when the lock is refreshed (or re-taken), rejects
   * with the storage error when the attempt failed (the lock is then at risk and retried) or with the LockedError
   * when the lock is lost. Called by the lock's own timer; callable directly.
   */
  refresh(): Promise<void> {
    if (this.#released) return Promise.resolve()
    if (this.#lost.signal.aborted) return Promise.reject(this.#lost.signal.reason)
    this.#attempt ??= this.#tryRefresh().finally(() => {
      this.#attempt = undefined
      if (!this.#released && !this.#lost.signal.aborted) this.#schedule(this.#failure === undefined ? this.#refreshIntervalMs : this.#nextRetryDelay())
      this.#wake()
    })
    return this.#attempt
  }

  async #tryRefresh(): Promise<void> {
    const started = Date.now()
    const giveUpAt = this.#expiresAt + this.#staleAfterMs
    if (started >= giveUpAt) {
      this.#markLost(
        `it was neither refreshed nor re-taken in the ${formatLockAge(this.#staleAfterMs)} after it expired${this.#failure ? ` (last error: ${this.#failure.message})` : ''}`,
        this.#failure,
      )
    }
    const old = this.#key
    const expired = started >= this.#expiresAt
    // New acknowledgements are worth a little time only when nothing is urgent.
    if (!expired && this.#failure === undefined) await this.#prepareRefresh()
    try {
      // Our object must still be there: it is removed by nobody but us while live, and once expired only by an
      // exclusive holder breaking it or by `unlock --remove-stale`: either way the lock is gone.
      if ((await this.#storage.stat(old)) === undefined)
        this.#markLost(`its lock object '${old}' was removed by another process (it had expired, or someone ran 'pgkeep unlock --remove-stale')`)
      const next = lockObject(this.kind, this.purpose, this.#session, Date.now(), this.#staleAfterMs, this.#createdAt, this.#acknowledgements())
      this.#strays.add(next.key)
      await this.#storage.write(next.key, next.bytes, { ifAbsent: true, collisionFree: true })
      if (expired) {
        // Re-taking an expired lock: someone may have taken a conflicting lock meanwhile (ours no longer blocked
        // it). Checked after our new object is written, as when acquiring, so that a racing acquirer sees ours.
        const scan = await scanLocks(this.#storage, this.kind, this.#session)
        const survived = (await this.#storage.stat(old)) !== undefined
        if (scan.blocker || !survived) {
          await this.#storage.remove(next.key).then(
            () => this.#strays.delete(next.key),
            () => {},
          )
          this.#markLost(
            scan.blocker
              ? `it expired, and meanwhile the repository was locked by ${scan.blocker.description}`
              : `it expired, and meanwhile its lock object '${old}' was removed by another process`,
          )
        }
      }
      this.#strays.delete(next.key)
      this.#key = next.key
      this.#expiresAt = next.expiresAt
      const recovered = this.#failure !== undefined || expired
      this.#failure = undefined
      this.#retryMs = this.#firstRetryMs
      if (recovered && !this.#released)
        this.#say('held', `the ${this.#what()} is ${expired ? 're-taken after it expired' : 'refreshed again'}; it expires at ${this.expiresAt.toISOString()}`)
      await this.#storage.remove(old).catch(() => this.#strays.add(old)) // ours and superseded: removed later if need be
      await this.#removeStrays()
    } catch (err) {
      if (this.#lost.signal.aborted) throw this.#lost.signal.reason
      const error = err instanceof Error ? err : new Error(String(err))
      const first = this.#failure === undefined
      this.#failure = error
      if (Date.now() >= giveUpAt)
        this.#markLost(
          `it was neither refreshed nor re-taken in the ${formatLockAge(this.#staleAfterMs)} after it expired (last error: ${error.message})`,
          error,
        )
      if (first) {
        this.#say(
          'at-risk',
          `could not refresh the ${this.#what()} (${error.message}); retrying, and re-taking it if it expires at ${this.expiresAt.toISOString()} meanwhile; ` +
            `writes that need it wait`,
          error,
        )
      }
      throw err
    }
  }

  #what(): string {
    return `${this.kind} lock for '${this.purpose}'`
  }

  #nextRetryDelay(): number {
    const d = this.#retryMs
    this.#retryMs = Math.min(this.#refreshIntervalMs, this.#retryMs * 2)
    return d
  }

  #schedule(delayMs: number): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = setTimeout(() => void this.refresh().catch(() => {}), delayMs)
    this.#timer.unref()
  }

  /** Resolves after the next refresh attempt ends, or when the lock is lost or released. */
  #nextAttempt(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve))
  }

  #wake(): void {
    const waiters = this.#waiters
    this.#waiters = []
    for (const w of waiters) w()
  }

  async #removeStrays(): Promise<void> {
    for (const key of [...this.#strays]) {
      if (key === this.#key) continue
      await this.#storage.remove(key).then(
        () => this.#strays.delete(key),
        () => {},
      )
    }
  }

  #say(state: LockHoldState, message: string, error?: Error): void {
    try {
      this.#onStateChange?.({ state, message, error })
    } catch {
      // a listener's failure is not the lock's
    }
  }

  /** Marks the lock lost for good and throws its LockedError (so callers stop at once). */
  #markLost(why: string, cause?: Error): never {
    if (!this.#lost.signal.aborted) {
      if (this.#timer) clearTimeout(this.#timer)
      const error = new LockedError(`the ${this.#what()} was lost: ${why}`, {
        cause,
        hint: 'nothing written under it after it was lost is listed in the repository; run the operation again (check the storage if this repeats)',
      })
      this.#lost.abort(error)
      this.#say('lost', error.message, error)
      this.#wake()
    }
    throw this.#lost.signal.reason
  }

  /** Stops refreshing and removes the lock object. Idempotent. */
  async release(): Promise<void> {
    if (this.#released) return
    this.#released = true
    this.#onRelease?.(this)
    if (this.#timer) clearTimeout(this.#timer)
    this.#wake()
    await this.#attempt?.catch(() => {})
    await this.#removeStrays()
    if (this.#lost.signal.aborted) {
      // Our last object (expired) may still be there; it is ours to remove, but nothing depends on it any more.
      await this.#storage.remove(this.#key).catch(() => {})
      return
    }
    await this.#storage.remove(this.#key)
  }
}

/** `gcAcks: ["*"]`: the holder can write nothing any more, so it needs no condemned pack. */
export const ALL_ACKNOWLEDGED = '*'

function lockObject(kind: LockKind, purpose: string, session: string, now: number, staleAfterMs: number, createdAt = now, gcAcks?: readonly string[]) {
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
    ...(gcAcks !== undefined ? { gcAcks } : {}),
  }
  return { key: lockKey(randomBytes(16).toString('hex')), bytes: Buffer.from(JSON.stringify(info) + '\n'), expiresAt, info }
}

/**
 * Takes a lock: exclusive conflicts with every live lock (and with unreadable ones), shared only with live
 * exclusive ones. The protocol (as restic's): check, write our own lock object, then list again and re-check,
 * because two acquirers may have written at the same moment; if the re-check finds a conflict, both back off (our
 * object is removed and LockedError is thrown), which is safe, never both proceeding. Dead locks of this host are
 * removed on the way. Expired ones do not block: a shared acquirer reports them in `staleLocks`; an exclusive one
 * removes them once it holds its lock (before its holder removes anything), so that their owners, should they
 * come back, find them gone and cannot re-take them.
 */
export async function acquireLock(storage: Storage, kind: LockKind, o: AcquireLockOptions, onRelease?: (lock: RepoLock) => void): Promise<RepoLock> {
  if (kind !== 'shared' && kind !== 'exclusive') throw new UsageError(`invalid lock kind '${String(kind)}'`)
  const staleAfterMs = o.staleAfterMs ?? DEFAULT_STALE_AFTER_MS
  const refreshIntervalMs = Math.min(o.refreshIntervalMs ?? DEFAULT_REFRESH_MS, Math.floor(staleAfterMs / 3))
  const session = randomBytes(8).toString('hex')
  const deadline = Date.now() + (o.waitMs ?? 0)
  const removed: LockStatus[] = []

  // The first live conflicting lock, after removing dead ones.
  const check = async (): Promise<LockScan> => {
    const scan = await scanLocks(storage, kind, session, o.signal)
    for (const l of scan.dead) {
      await storage.remove(l.key, { signal: o.signal })
      removed.push(l)
    }
    return scan
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
    let after: LockScan
    try {
      after = await check()
      if (!after.blocker && kind === 'exclusive') {
        // Break expired locks now, before the holder may remove anything (docs/repository-format.md §10).
        for (const l of after.stale.filter((s) => s.state === 'expired')) {
          await storage.remove(l.key, { signal: o.signal })
          removed.push(l)
        }
      }
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
      {
        kind,
        purpose: o.purpose,
        session,
        key: mine.key,
        createdAt: Date.parse(mine.info.createdAt),
        expiresAt: mine.expiresAt,
        staleAfterMs,
        refreshIntervalMs,
      },
      { stale: after.stale.filter((l) => !removed.includes(l)), removed },
      { onRelease, onStateChange: o.onStateChange },
    )
  }
}

/**
 * Takes a shared lock for a reader (restore, verify), so that maintenance knows a reader is there. When the
 * storage refuses to write it for lack of permission (read-only access), resolves undefined: the reader goes on
 * without a lock, and should say so. A live exclusive lock still stops it (LockedError), as for any reader.
 */
export async function acquireReaderLock(storage: Storage, o: AcquireLockOptions, onRelease?: (lock: RepoLock) => void): Promise<RepoLock | undefined> {
  try {
    return await acquireLock(storage, 'shared', o, onRelease)
  } catch (err) {
    if (err instanceof AccessDeniedError) return undefined
    throw err
  }
}
