// If-absent writes beyond what a store enforces: telling whether an object holds exactly the bytes a write was
// sending (the write's answer was lost, so its own object may be what is there), and the fallback protocol for
// stores without conditional writes (check, write, wait, read back) as a decorator around any Storage.

import { createHash } from 'node:crypto'

import { AlreadyExistsError, Codes, isPgkeepError } from '../errors.js'
import { sleep } from './abort.js'
import type { Body, ConditionalWriteSupport, ObjectInfo, OpOptions, ReadOptions, Storage, StorageFeatures, WriteOptions } from './storage.js'
import { type LeftoversRemoved, removeLeftoversOf } from './storage.js'

/**
 * Shortest wait of the fallback between its write and its read-back. Two writers of one key stay apart when each
 * takes less than the other's wait from its check to the end of its write; on a healthy store that takes tens of
 * milliseconds for the small objects that need it (records, config).
 */
export const MIN_SETTLE_MS = 1_000

/**
 * True when the object under `key` holds exactly the bytes of `body` (a factory body is replayed, as for a retry);
 * false when it holds other bytes or is gone. Both sides are streamed through SHA-256, so memory does not grow
 * with the object. Storage errors propagate; so does an error thrown by a factory body.
 */
export async function holdsBody(storage: Storage, key: string, body: Body, signal?: AbortSignal): Promise<boolean> {
  const want = await digest(body instanceof Uint8Array ? [body] : body(), signal)
  let got: { size: number; hash: string }
  try {
    got = await digest(storage.read(key, { signal }), signal)
  } catch (err) {
    if (isPgkeepError(err) && err.code === Codes.NOT_FOUND) return false
    throw err
  }
  return got.size === want.size && got.hash === want.hash
}

async function digest(chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>, signal: AbortSignal | undefined) {
  const h = createHash('sha256')
  let size = 0
  for await (const c of chunks) {
    signal?.throwIfAborted()
    h.update(c)
    size += c.byteLength
  }
  return { size, hash: h.digest('hex') }
}

/**
 * The answer of `storage.probeConditionalWrite`, or, for a Storage that does not implement it, what its
 * `features.conditionalWrite` declares.
 */
export function probeConditionalWriteOf(storage: Storage, key: string, o: OpOptions = {}): Promise<ConditionalWriteSupport> {
  if (storage.probeConditionalWrite !== undefined) return storage.probeConditionalWrite(key, o)
  return Promise.resolve(storage.features.conditionalWrite ? 'enforced' : 'ignored')
}

/** Options of {@link withCheckedIfAbsent}. */
export interface CheckedIfAbsentOptions {
  /** Shortest wait between write and read-back (default {@link MIN_SETTLE_MS}); tests of the protocol may shorten it. */
  readonly minSettleMs?: number
}

/**
 * Wraps `storage` so that `ifAbsent` writes never send a conditional request (a store may refuse it with 501, or
 * ignore it), and are kept exclusive by this protocol instead (docs/storage.md, "Stores without conditional
 * writes"):
 * 1. `stat` the key; an object there → AlreadyExistsError (nothing is sent).
 * 2. Write the object unconditionally. With `collisionFree` the write ends here: no one can put other bytes
 *    under such a key, so replacing an equal object is harmless.
 * 3. Wait `max(minSettleMs, 2 × the time from step 1 to the end of step 2)`.
 * 4. Read the object back and compare it with the body: equal → success; different → AlreadyExistsError (another
 *    writer's object, written after ours, is the one that stays).
 * Of several writers racing for one key, the one whose write lands last is the only one that succeeds, provided
 * none of them took longer from its check to the end of its write than the others wait in step 3 (the argument of
 * Fischer's mutual exclusion); a writer stalled longer (a suspended process) can replace an object whose writer
 * already succeeded. An abort stops steps 1 and 2; once the object is written, steps 3 and 4 run to the end, so an
 * aborted call never leaves its own object behind unreported.
 *
 * Put it outermost (around the retry decorator): a lost answer in step 2 is then retried as the plain write it is.
 * `features.conditionalWrite` is false. Every other operation passes through unchanged.
 */
export function withCheckedIfAbsent(storage: Storage, o: CheckedIfAbsentOptions = {}): Storage {
  return new CheckedIfAbsentStorage(storage, o.minSettleMs ?? MIN_SETTLE_MS)
}

class CheckedIfAbsentStorage implements Storage {
  readonly name: string
  readonly features: StorageFeatures

  constructor(
    private readonly inner: Storage,
    private readonly minSettleMs: number,
  ) {
    this.name = inner.name
    this.features = { ...inner.features, conditionalWrite: false }
  }

  stat(key: string, o?: OpOptions): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key, o)
  }

  read(key: string, o?: ReadOptions): AsyncIterable<Uint8Array> {
    return this.inner.read(key, o)
  }

  list(prefix: string, o?: OpOptions): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix, o)
  }

  remove(key: string, o?: OpOptions): Promise<void> {
    return this.inner.remove(key, o)
  }

  probeConditionalWrite(key: string, o?: OpOptions): Promise<ConditionalWriteSupport> {
    return probeConditionalWriteOf(this.inner, key, o)
  }

  removeLeftovers(olderThan: Date, o?: OpOptions): Promise<LeftoversRemoved> {
    return removeLeftoversOf(this.inner, olderThan, o)
  }

  close(): Promise<void> {
    return this.inner.close()
  }

  async write(key: string, body: Body, o: WriteOptions = {}): Promise<void> {
    const { ifAbsent, collisionFree, ...plain } = o
    if (ifAbsent !== true) return await this.inner.write(key, body, plain)
    const checkedAt = performance.now()
    if ((await this.inner.stat(key, { signal: o.signal })) !== undefined) throw this.exists(key, 'already exists')
    await this.inner.write(key, body, plain)
    if (collisionFree === true) return
    // From here on the object is visible: finish without the signal, so the answer says what is there.
    const exposureMs = performance.now() - checkedAt
    await sleep(Math.max(this.minSettleMs, 2 * exposureMs))
    if (!(await holdsBody(this.inner, key, body))) {
      throw this.exists(key, 'already exists: another writer wrote it at the same moment, and its object is the one kept')
    }
  }

  private exists(key: string, what: string): AlreadyExistsError {
    return new AlreadyExistsError(`object '${key}' in '${this.name}' ${what}`)
  }
}
