// The Storage interface: the only view engines and the repository have of where bytes live.
// Drivers (fs, s3) implement it; retry and concurrency limits are decorators around any Storage.
// Keys are relative, '/'-separated paths such as `packs/ab/ab12…` (no leading '/', no '..').

/** What a driver can and cannot do; callers branch on these, never on `instanceof`. */
export interface StorageFeatures {
  /** Writes become durable on their own medium (fs: fsync of file and directory). */
  readonly fsync: boolean
  /** `write(…, { ifAbsent: true })` is enforced atomically by the store itself. */
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
}

export interface WriteOptions extends OpOptions {
  /** Fail with AlreadyExistsError when the key exists. Best effort where `features.conditionalWrite` is false. */
  ifAbsent?: boolean
}

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
  close(): Promise<void>
}
