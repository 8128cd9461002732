// Records: small immutable objects the layers above keep in the repository (backup records, cluster records, the
// WAL catalog), `records/<kind>/<key>`, encrypted in encrypted repositories and verified on read
// (docs/repository-format.md §9). A record is written only after every blob put before it is durable.

import { AlreadyExistsError, NotFoundError } from '../errors.js'
import type { Storage } from '../storage/storage.js'
import type { BlobId } from './blob.js'
import type { RepoKeys } from './crypto.js'
import { RECORDS_PREFIX, recordKey, recordPrefix } from './layout.js'
import type { GuardedWrite } from './loaded-index.js'
import { decodeRecord, encodeRecord, type RepoRecord } from './record-format.js'
import { isAlreadyExists, isNotFound, readObject } from './storage-io.js'

/** A record listed by `listRecords`. */
export interface RecordInfo {
  readonly key: string
  readonly sizeBytes: number
  readonly modifiedAt: Date
}

export interface RecordStoreOptions {
  storage: Storage
  keys: RepoKeys | undefined
  /** zstd level for records (undefined: stored uncompressed). */
  level: number | undefined
  /** Records are written and removed through it (under the repository's lock). */
  guard: GuardedWrite
  /** True when a blob is in the repository or put in this session (takes no reference). */
  isKnownBlob(id: BlobId): boolean
  /** Makes every blob put so far durable. */
  flush(signal: AbortSignal | undefined): Promise<void>
  /** Told the blobs a record that was just written lists: their references are recorded. */
  settle(ids: readonly BlobId[]): void
}

export class RecordStore {
  readonly #storage: Storage
  readonly #keys: RepoKeys | undefined
  readonly #level: number | undefined
  readonly #guard: GuardedWrite
  readonly #isKnownBlob: (id: BlobId) => boolean
  readonly #flush: (signal: AbortSignal | undefined) => Promise<void>
  readonly #settle: (ids: readonly BlobId[]) => void

  constructor(o: RecordStoreOptions) {
    this.#storage = o.storage
    this.#keys = o.keys
    this.#level = o.level
    this.#guard = o.guard
    this.#isKnownBlob = o.isKnownBlob
    this.#flush = o.flush
    this.#settle = o.settle
  }

  /**
   * Stores an immutable record under `kind`/`key` (never overwritten: AlreadyExistsError if it exists). First
   * flushes, so every blob put before (and every blob in `blobRefs`) is durable before the record appears.
   * Records are encrypted in encrypted repositories and verified on read; keep them small (large data in blobs).
   * Under a lock (`acquireLock`, `writeUnder`) the record is written only while that lock is held: the write waits
   * while it is at risk, throws its LockedError once it is lost, and is aborted if it would outlive it.
   */
  async write<T>(kind: string, key: string, value: T, o: { blobRefs?: readonly BlobId[]; signal?: AbortSignal } = {}): Promise<void> {
    const storageKey = recordKey(kind, key)
    const blobRefs = [...(o.blobRefs ?? [])]
    for (const ref of blobRefs) {
      if (!this.#isKnownBlob(ref)) {
        throw new NotFoundError(`record '${storageKey}' references blob '${ref}', which is not in the repository`, {
          hint: 'put the blob before writing the record that references it (this is a bug in the caller)',
        })
      }
    }
    await this.#flush(o.signal)
    const record: RepoRecord<T> = { kind, key, createdAt: new Date().toISOString(), blobRefs, value }
    const bytes = encodeRecord(record, storageKey, this.#keys, this.#level)
    try {
      await this.#guard((s) => this.#storage.write(storageKey, bytes, { ifAbsent: true, signal: s }), o.signal)
    } catch (err) {
      if (isAlreadyExists(err)) {
        throw new AlreadyExistsError(`record '${storageKey}' already exists`, {
          cause: err,
          hint: 'records are immutable: remove it first or use another key',
        })
      }
      throw err
    }
    this.#settle(blobRefs)
  }

  /** Reads and verifies a record. NotFoundError when it does not exist; IntegrityError when it is damaged. */
  async read<T = unknown>(kind: string, key: string, o: { signal?: AbortSignal } = {}): Promise<RepoRecord<T>> {
    const storageKey = recordKey(kind, key)
    let bytes: Buffer
    try {
      bytes = await readObject(this.#storage, storageKey, { signal: o.signal })
    } catch (err) {
      if (isNotFound(err)) throw new NotFoundError(`record '${storageKey}' does not exist in '${this.#storage.name}'`, { cause: err })
      throw err
    }
    return decodeRecord<T>(bytes, storageKey, kind, key, this.#keys)
  }

  /** Lists the records of `kind` whose key starts with `keyPrefix`, in unspecified order. */
  async *list(kind: string, keyPrefix = '', o: { signal?: AbortSignal } = {}): AsyncIterable<RecordInfo> {
    const prefix = recordPrefix(kind, keyPrefix)
    const strip = `${RECORDS_PREFIX}${kind}/`.length
    for await (const obj of this.#storage.list(prefix, { signal: o.signal })) {
      yield { key: obj.key.slice(strip), sizeBytes: obj.sizeBytes, modifiedAt: obj.modifiedAt }
    }
  }

  /** Removes a record (for expire). Removing a missing record is not an error. Under a lock as `writeRecord`. */
  async remove(kind: string, key: string, o: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#guard((s) => this.#storage.remove(recordKey(kind, key), { signal: s }), o.signal)
  }
}
