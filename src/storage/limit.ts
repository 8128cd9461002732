// The concurrency-limit decorator: at most N storage operations in flight through one Storage, whatever the
// number of callers (kopia's and restic's connection limits). A FIFO semaphore; waiting honours AbortSignal.

import { probeConditionalWriteOf } from './if-absent.js'
import type { Body, ConditionalWriteSupport, ObjectInfo, OpOptions, ReadOptions, Storage, WriteOptions } from './storage.js'
import { type LeftoversRemoved, removeLeftoversOf } from './storage.js'

/** Options of {@link withConcurrencyLimit}. */
export interface ConcurrencyLimitOptions {
  /** Operations allowed in flight at once (≥ 1). */
  readonly maxConcurrent: number
}

/**
 * Wraps `storage` so that at most `maxConcurrent` operations run at once; the others wait in arrival order.
 *
 * - `stat`, `write`, `remove` hold a slot for their duration.
 * - `read` takes a slot at its first `next()` and holds it until the iteration ends, fails or is returned (an
 *   open read holds a connection or a file). Consume reads to the end or `return()` them (`break` in `for await`
 *   does): an abandoned, unfinished read keeps its slot. Do not start other operations from inside a read loop
 *   when `maxConcurrent` is 1, or they wait forever.
 * - `list` holds a slot only while it fetches the next entry, not while the caller works on an entry, so a
 *   caller may remove or read the entries it lists.
 * - Waiting for a slot rejects with the signal's reason when the call's signal aborts.
 */
export function withConcurrencyLimit(storage: Storage, o: ConcurrencyLimitOptions): Storage {
  if (!(Number.isSafeInteger(o.maxConcurrent) && o.maxConcurrent >= 1)) {
    throw new RangeError(`maxConcurrent must be a positive integer, got ${String(o.maxConcurrent)}`)
  }
  return new LimitedStorage(storage, new Semaphore(o.maxConcurrent))
}

/** A counting semaphore with a FIFO queue of waiters. */
class Semaphore {
  private free: number
  private readonly waiters: { grant: () => void }[] = []

  constructor(slots: number) {
    this.free = slots
  }

  /** Resolves with a release function once a slot is free. Call it exactly once. */
  async acquire(signal: AbortSignal | undefined): Promise<() => void> {
    signal?.throwIfAborted()
    if (this.free > 0) {
      this.free -= 1
      return this.releaser()
    }
    await new Promise<void>((resolve, reject) => {
      const waiter = {
        grant: (): void => {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        },
      }
      const onAbort = (): void => {
        const i = this.waiters.indexOf(waiter)
        if (i >= 0) this.waiters.splice(i, 1)
        reject(signal?.reason)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(waiter)
    })
    return this.releaser()
  }

  private releaser(): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      // Hand the slot straight to the next waiter, so a newcomer cannot overtake the queue.
      const next = this.waiters.shift()
      if (next !== undefined) next.grant()
      else this.free += 1
    }
  }
}

class LimitedStorage implements Storage {
  readonly name: string
  readonly features: Storage['features']

  constructor(
    private readonly inner: Storage,
    private readonly sem: Semaphore,
  ) {
    this.name = inner.name
    this.features = inner.features
  }

  stat(key: string, o: OpOptions = {}): Promise<ObjectInfo | undefined> {
    return this.hold(o.signal, () => this.inner.stat(key, o))
  }

  write(key: string, body: Body, o: WriteOptions = {}): Promise<void> {
    return this.hold(o.signal, () => this.inner.write(key, body, o))
  }

  remove(key: string, o: OpOptions = {}): Promise<void> {
    return this.hold(o.signal, () => this.inner.remove(key, o))
  }

  /** Holds one slot for the whole sweep (its requests are sequential). */
  removeLeftovers(olderThan: Date, o: OpOptions = {}): Promise<LeftoversRemoved> {
    return this.hold(o.signal, () => removeLeftoversOf(this.inner, olderThan, o))
  }

  /** Holds one slot for the whole probe (its requests are sequential). */
  probeConditionalWrite(key: string, o: OpOptions = {}): Promise<ConditionalWriteSupport> {
    return this.hold(o.signal, () => probeConditionalWriteOf(this.inner, key, o))
  }

  async *read(key: string, o: ReadOptions = {}): AsyncGenerator<Uint8Array> {
    const release = await this.sem.acquire(o.signal)
    try {
      yield* this.inner.read(key, o)
    } finally {
      release()
    }
  }

  async *list(prefix: string, o: OpOptions = {}): AsyncGenerator<ObjectInfo> {
    const it = this.inner.list(prefix, o)[Symbol.asyncIterator]()
    let done = false
    try {
      for (;;) {
        const release = await this.sem.acquire(o.signal)
        let r: IteratorResult<ObjectInfo>
        try {
          r = await it.next()
        } catch (err) {
          done = true
          throw err
        } finally {
          release()
        }
        if (r.done === true) {
          done = true
          return
        }
        yield r.value
      }
    } finally {
      if (!done) await it.return?.()
    }
  }

  close(): Promise<void> {
    return this.inner.close()
  }

  private async hold<T>(signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    const release = await this.sem.acquire(signal)
    try {
      return await fn()
    } finally {
      release()
    }
  }
}
