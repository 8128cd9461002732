// The retry decorator: wraps any Storage and retries operations that failed with a retryable error, with
// exponential backoff and jitter (restic's backend/retry). Write bodies are replayed, which is why they are
// replayable; reads resume from the byte they reached.

import { Codes, isPgkeepError } from '../errors.js'
import { anySignal, sleep } from './abort.js'
import { holdsBody, probeConditionalWriteOf } from './if-absent.js'
import type { Body, ConditionalWriteSupport, ObjectInfo, OpOptions, ReadOptions, Storage, WriteOptions } from './storage.js'
import { type LeftoversRemoved, removeLeftoversOf } from './storage.js'

/** One retry about to happen, for logging and diagnostics. */
export interface RetryEvent {
  readonly op: 'stat' | 'read' | 'write' | 'list' | 'remove'
  /** The key (or list prefix). */
  readonly key: string
  /** The attempt that failed (1 for the first). */
  readonly attempt: number
  readonly delayMs: number
  readonly error: unknown
}

/** Options of {@link withRetry}. */
export interface RetryOptions {
  /** Attempts per operation, the first one included (1 = no retries). */
  readonly attempts: number
  /** Wait before the first retry; doubles for each further one. */
  readonly baseDelayMs: number
  /** Cap on any single wait. */
  readonly maxDelayMs: number
  /** Aborts waits and operations of every call through this decorator (on top of each call's own signal). */
  readonly signal?: AbortSignal
  /** Called before each wait. Must not throw. */
  readonly onRetry?: (e: RetryEvent) => void
}

/**
 * Wraps `storage` so that operations failing with an error whose `retryable` is `true` are tried again, up to
 * `attempts` times in all, waiting `min(maxDelayMs, baseDelayMs × 2^(n-1))`, half of it jittered, in between.
 *
 * - Errors that are not retryable (NotFoundError, AlreadyExistsError, configuration, credentials, disk full, a
 *   producer's own error) are thrown at once; so is the last retryable one when attempts run out.
 * - `write` sends the body again: the same bytes, or a fresh iteration of the factory.
 * - `read` resumes after the last byte it yielded with a ranged read, so a consumer never sees a byte twice; the
 *   attempt count restarts whenever a resumed read made progress.
 * - `list` retries only before it yielded its first entry (a restarted listing could repeat entries, and
 *   remembering them would cost memory proportional to the listing).
 * - An abort (the call's signal or `o.signal`) stops waiting at once and rejects with the signal's reason.
 * - An `ifAbsent` write whose attempt failed in a way that may have landed (any retryable error: a timeout or a
 *   reset connection can come after the store wrote the object) and whose later attempt answers AlreadyExistsError
 *   reads the object back: if it holds exactly this body, it is this call's own object and the write succeeds
 *   (with `collisionFree` the key itself says so, and nothing is read).
 * - `probeConditionalWrite` and `removeLeftovers` are retried as a whole (they are idempotent).
 */
export function withRetry(storage: Storage, o: RetryOptions): Storage {
  if (!(Number.isSafeInteger(o.attempts) && o.attempts >= 1)) {
    throw new RangeError(`retry attempts must be a positive integer, got ${String(o.attempts)}`)
  }
  return new RetryingStorage(storage, o)
}

function isRetryable(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { retryable?: unknown }).retryable === true
}

class RetryingStorage implements Storage {
  readonly name: string
  readonly features: Storage['features']

  constructor(
    private readonly inner: Storage,
    private readonly o: RetryOptions,
  ) {
    this.name = inner.name
    this.features = inner.features
  }

  stat(key: string, o: OpOptions = {}): Promise<ObjectInfo | undefined> {
    return this.run('stat', key, o.signal, (signal) => this.inner.stat(key, { ...o, signal }))
  }

  write(key: string, body: Body, o: WriteOptions = {}): Promise<void> {
    if (o.ifAbsent !== true) return this.run('write', key, o.signal, (signal) => this.inner.write(key, body, { ...o, signal }))
    let mayHaveLanded = false
    return this.run('write', key, o.signal, async (signal) => {
      try {
        await this.inner.write(key, body, { ...o, signal })
      } catch (err) {
        if (mayHaveLanded && isPgkeepError(err) && err.code === Codes.ALREADY_EXISTS) {
          if (o.collisionFree === true || (await holdsBody(this.inner, key, body, signal))) return
        }
        if (isRetryable(err)) mayHaveLanded = true
        throw err
      }
    })
  }

  probeConditionalWrite(key: string, o: OpOptions = {}): Promise<ConditionalWriteSupport> {
    return this.run('write', key, o.signal, (signal) => probeConditionalWriteOf(this.inner, key, { ...o, signal }))
  }

  remove(key: string, o: OpOptions = {}): Promise<void> {
    return this.run('remove', key, o.signal, (signal) => this.inner.remove(key, { ...o, signal }))
  }

  /** Retried as a whole: it is idempotent (what is gone stays gone). */
  removeLeftovers(olderThan: Date, o: OpOptions = {}): Promise<LeftoversRemoved> {
    return this.run('remove', '', o.signal, (signal) => removeLeftoversOf(this.inner, olderThan, { ...o, signal }))
  }

  async *read(key: string, o: ReadOptions = {}): AsyncGenerator<Uint8Array> {
    const signal = anySignal(o.signal, this.o.signal)
    let offset = o.offset ?? 0
    let remaining = o.length
    let attempt = 1
    for (;;) {
      signal?.throwIfAborted()
      const it = this.inner.read(key, { ...o, signal, offset, length: remaining })[Symbol.asyncIterator]()
      let failure: { error: unknown } | undefined
      let progressed = false
      try {
        for (;;) {
          let r: IteratorResult<Uint8Array>
          try {
            r = await it.next()
          } catch (err) {
            failure = { error: err }
            break
          }
          if (r.done === true) return
          offset += r.value.byteLength
          if (remaining !== undefined) remaining -= r.value.byteLength
          progressed = true
          // Outside the try around next(): a consumer's own exception is not a storage failure.
          yield r.value
        }
      } finally {
        // The consumer stopped early: release the inner read (connection, file handle).
        if (failure === undefined) await it.return?.()
      }
      if (failure === undefined) return
      // Everything asked for arrived and the failure came after the last byte (a length of 0 never gets here with
      // progress, so its NotFoundError still propagates below).
      if (remaining === 0 && progressed) return
      if (progressed) attempt = 1
      await this.backoff('read', key, attempt, failure.error, signal)
      attempt += 1
    }
  }

  async *list(prefix: string, o: OpOptions = {}): AsyncGenerator<ObjectInfo> {
    const signal = anySignal(o.signal, this.o.signal)
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted()
      const it = this.inner.list(prefix, { ...o, signal })[Symbol.asyncIterator]()
      let first: IteratorResult<ObjectInfo>
      try {
        first = await it.next()
      } catch (err) {
        await this.backoff('list', prefix, attempt, err, signal)
        continue
      }
      // From here on the listing is committed: failures propagate.
      try {
        for (let r = first; r.done !== true; r = await it.next()) yield r.value
      } finally {
        await it.return?.()
      }
      return
    }
  }

  close(): Promise<void> {
    return this.inner.close()
  }

  private async run<T>(
    op: RetryEvent['op'],
    key: string,
    callSignal: AbortSignal | undefined,
    fn: (signal: AbortSignal | undefined) => Promise<T>,
  ): Promise<T> {
    const signal = anySignal(callSignal, this.o.signal)
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted()
      try {
        return await fn(signal)
      } catch (err) {
        await this.backoff(op, key, attempt, err, signal)
      }
    }
  }

  /** Rethrows `err` unless it deserves another attempt; otherwise waits the backoff delay. */
  private async backoff(op: RetryEvent['op'], key: string, attempt: number, err: unknown, signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted === true) throw signal.reason
    if (!isRetryable(err) || attempt >= this.o.attempts) throw err
    const capMs = Math.min(this.o.maxDelayMs, this.o.baseDelayMs * 2 ** (attempt - 1))
    // "Equal jitter": at least half the exponential delay, so retries never storm, and random above that, so many
    // clients failing together do not retry in lockstep.
    const delayMs = Math.round(capMs / 2 + Math.random() * (capMs / 2))
    this.o.onRetry?.({ op, key, attempt, delayMs, error: err })
    await sleep(delayMs, signal)
  }
}
