// The Storage interface: the only view engines and the repository have of where bytes live.
// Drivers (fs, s3) implement it; retry and concurrency limits are decorators around any Storage.
// Keys are relative, '/'-separated paths such as `packs/ab/ab12…` (no leading '/', no '..').

/** What a driver can and cannot do; callers branch on these, never on `instanceof`. */
export interface StorageFeatures {
  /** Writes become durable on their own medium (fs: fsync of file and directory). */
  readonly fsync: boolean
  /**
   * `write(…, { ifAbsent: true })` is enforced atomically by the store itself (fs: link(2); S3: `If-None-Match: *`
   * on a store that honours it). When false, `ifAbsent` is a check before the write, and exclusive only as far as
   * {@link WriteOptions.ifAbsent} says.
   */
  readonly conditionalWrite: boolean
  /** The store is shared by machines (object store); local-only assumptions (pids, hosts) do not hold. */
  readonly remote: boolean
}

/** Metadata of one stored object. */
export interface ObjectInfo {
  readonly key: string
  readonly sizeBytes: number
  readonly modifiedAt: Date
}

export interface OpOptions {
  signal?: AbortSignal
}

export interface ReadOptions extends OpOptions {
  /** First byte to read (default 0). */
  offset?: number
  /** Number of bytes to read from `offset` (default: to the end). */
  length?: number
  /**
   * The caller knows the object under this key never changes while it exists (a pack, named by its content): a
   * driver may keep it open between reads, and may then still serve its bytes for a while after it was removed.
   */
  immutable?: boolean
  /**
   * The caller is done with each chunk before it asks for the next one and keeps no view of it: a driver may hand
   * the same memory out again (the local-directory driver then reads into a buffer it reuses, not a fresh one per
   * chunk).
   */
  reuseChunks?: boolean
}

export interface WriteOptions extends OpOptions {
  /**
   * Fail with AlreadyExistsError when the key exists, leaving the existing object as it was. Atomic where
   * `features.conditionalWrite` is true. Where it is false, the storage is either a driver that checks before it
   * writes (a concurrent writer can race it), or the fallback of if-absent.ts (`withCheckedIfAbsent`), which checks,
   * writes, waits and reads back, so that of two writers racing for one key exactly one succeeds as long as
   * neither stalls, between its check and the end of its write, for longer than the other waits (docs/storage.md).
   */
  ifAbsent?: boolean
  /**
   * With `ifAbsent`: no writer can ever put other bytes under this key, because the key is a hash of the bytes
   * (packs, index and key objects) or a fresh random name (lock objects). An existing object is then as good as
   * the one being written, and the fallback for stores without conditional writes skips its wait and read-back.
   */
  collisionFree?: boolean
}

/**
 * What a store does with a conditional write (`If-None-Match: *` on S3) to a key that exists, as found by
 * {@link Storage.probeConditionalWrite}:
 * - `enforced`: refuses it (S3: 412 PreconditionFailed); `ifAbsent` can rely on the store.
 * - `ignored`: overwrites the object as if the condition were not there (s3rver, older MinIO and Ceph builds).
 * - `unsupported`: refuses every conditional write (S3: 501 NotImplemented; OpenStack Swift's S3 layer).
 */
export type ConditionalWriteSupport = 'enforced' | 'ignored' | 'unsupported'

/**
 * A write body. It must be replayable so a retry can send it again: either bytes, or a factory that yields a fresh
 * iterable of the same bytes each time it is called.
 */
export type Body = Uint8Array | (() => AsyncIterable<Uint8Array>)

/**
 * A place that stores immutable objects under string keys.
 *
 * Contract (the conformance suite in test/integration/storage-conformance checks every point):
 * - `write` is atomic: once it resolves, every reader sees the whole object; if it rejects or is aborted, nothing
 *   under that key became visible (a previous object under the key stays as it was).
 * - `write` with `ifAbsent` rejects with AlreadyExistsError when the key holds an object, except when an earlier
 *   attempt of the same call may have landed (its answer was lost: a timeout, a reset connection) and the object
 *   holds exactly the bytes being written: that is this call's own object, and the write succeeds.
 * - `read` yields the object's bytes (or the requested range); a missing key rejects with NotFoundError no later than
 *   the first `next()`. A range past the end yields what exists.
 * - `stat` resolves `undefined` for a missing key.
 * - `list(prefix)` yields every object whose key starts with `prefix`, in unspecified order, each exactly once.
 * - `remove` of a missing key is not an error.
 * - Failures are StorageError (with `retryable` set when a retry may help), NotFoundError or AlreadyExistsError;
 *   an abort rejects with the signal's reason.
 */
export interface Storage {
  /** A human-readable location, safe to print (no credentials). */
  readonly name: string
  readonly features: StorageFeatures
  stat(key: string, o?: OpOptions): Promise<ObjectInfo | undefined>
  read(key: string, o?: ReadOptions): AsyncIterable<Uint8Array>
  write(key: string, body: Body, o?: WriteOptions): Promise<void>
  list(prefix: string, o?: OpOptions): AsyncIterable<ObjectInfo>
  remove(key: string, o?: OpOptions): Promise<void>
  /**
   * Finds out by experiment how the store treats a conditional write to an existing key: writes `key`, writes it
   * again if absent (a single request and, on S3, also a one-part multipart upload), and removes it. `init` runs
   * it once and records the answer in the repository's config. Idempotent; leaves nothing under `key`. Optional
   * for stores other than pgkeep's drivers: without it, `features.conditionalWrite` is taken as the answer.
   */
  probeConditionalWrite?(key: string, o?: OpOptions): Promise<ConditionalWriteSupport>
  /**
   * Removes what interrupted writes of this driver left behind where no reader sees it (fs: `.tmp-*` files; S3:
   * incomplete multipart uploads under the prefix), when it was started before `olderThan`: a write still going on
   * is younger than that. Garbage collection calls it with its grace period. Optional: without it a store's
   * leftovers are left to its own rules (an S3 lifecycle rule that aborts incomplete uploads).
   */
  removeLeftovers?(olderThan: Date, o?: OpOptions): Promise<LeftoversRemoved>
  close(): Promise<void>
}

/** What `removeLeftovers` removed: how many leftovers, and their bytes where the store says (0 otherwise). */
export interface LeftoversRemoved {
  readonly removed: number
  readonly bytes: number
}

/** `storage.removeLeftovers`, or nothing removed for a store without it. */
export function removeLeftoversOf(storage: Storage, olderThan: Date, o: OpOptions = {}): Promise<LeftoversRemoved> {
  return storage.removeLeftovers ? storage.removeLeftovers(olderThan, o) : Promise.resolve({ removed: 0, bytes: 0 })
}
