// An open repository: the one door to its bytes. It composes the parts that each own one thing (blob-store.ts:
// blobs, packs and index commits; loaded-index.ts: the index as loaded; records.ts; key-ring.ts; lock.ts) and
// hands out what engines need without showing them storage keys, the codec or key material: window stores for
// backups, blob readers for restores. open.ts creates and opens repositories.
// Longer than 400 lines on purpose: it is the facade every engine goes through; each method delegates in a few
// lines to the part that owns the work.

import { AssertionError, UsageError } from '../errors.js'
import type { Storage } from '../storage/storage.js'
import { BlobCodec, type BlobId, type BlobType } from './blob.js'
import { CONDEMNED_RECORD_KIND, CondemnedWatch, type CondemnedRecord, checkCondemnedRecord } from './condemned.js'
import type { BlobLocation } from './blob-index.js'
import { BlobReader, type BlobReaderOptions } from './blob-reader.js'
import { BlobStore, type PutBlobResult, type SessionStats } from './blob-store.js'
import { CodecPool, defaultWorkers, workerModuleUrl } from './codec-pool.js'
import type { RepoConfig } from './config.js'
import type { RepoKeys, ScryptParams } from './crypto.js'
import { addKey, changePassphrase, type KeyInfo, listKeyObjects, removeKey, type UnlockedKey } from './key-ring.js'
import { CONFIG_KEY, packIdOfKey, PACKS_PREFIX } from './layout.js'
import { type DamagedObject, LoadedIndex, type RebuildIndexResult } from './loaded-index.js'
import {
  acquireLock,
  acquireReaderLock,
  listLocks,
  liveLocksFor,
  removeStaleLocks,
  waitWhileLocked,
  type AcquireLockOptions,
  type LockContributor,
  type LockKind,
  type LockStatus,
  type RepoLock,
} from './lock.js'
import type { RepoRecord } from './record-format.js'
import { type RecordInfo, RecordStore } from './records.js'
import { isNotFound, readObject } from './storage-io.js'
import { WindowStore } from './window-store.js'

export type { DamagedObject, KeyInfo, PutBlobResult, RebuildIndexResult, RecordInfo, SessionStats }

/** Dense numbers of the blobs indexed when it was made (Repository.blobNumbering). */
export interface BlobNumbering {
  /** How many: numbers run from 0 to size − 1. */
  readonly size: number
  /** The number of a blob, or undefined when it was not indexed then. */
  numberOf(id: BlobId): number | undefined
  idOf(n: number): BlobId
  /** Bytes its chosen copy takes in its pack. */
  storedBytesOf(n: number): number
}

/** What open.ts hands the constructor. */
export interface RepositoryParts {
  storage: Storage
  config: RepoConfig
  configBytes: Buffer
  unlocked: UnlockedKey | undefined
  maxPackUploads: number
  /** Load only these blob types into the index (garbage collection: `meta`); undefined loads all. */
  indexTypes?: ReadonlySet<BlobType>
  /** The index of another instance to share (a twin). */
  index?: LoadedIndex
}

/**
 * An open repository. Not safe for use from several threads; many concurrent async calls are fine.
 * Blobs put are durable only after `flush()` resolves (records flush first on their own).
 */
export class Repository {
  readonly storage: Storage
  readonly config: RepoConfig
  readonly #configBytes: Buffer
  readonly #unlocked: UnlockedKey | undefined
  readonly #codec: BlobCodec
  readonly #index: LoadedIndex
  readonly #blobs: BlobStore
  readonly #records: RecordStore
  readonly #parts: RepositoryParts
  readonly #locks = new Set<RepoLock>()
  /** Locks that index objects and records are written under (the newest one not released), see `writeUnder`. */
  readonly #writeLocks: RepoLock[] = []
  /** The condemnation records of garbage collection as this instance last read them (condemned.ts). */
  readonly #watch: CondemnedWatch
  /** What this instance adds to every lock it works under: its acknowledgements of condemned packs. */
  readonly #contribution: LockContributor
  /** While above 0 this instance acknowledges no condemnation (see holdPacks). */
  #holds = 0
  #closed = false

  /** @internal use openRepository or initRepository */
  constructor(p: RepositoryParts) {
    this.#parts = p
    this.storage = p.storage
    this.config = p.config
    this.#configBytes = p.configBytes
    this.#unlocked = p.unlocked
    const level = p.config.compression.algorithm === 'zstd' ? p.config.compression.level : undefined
    const keys = p.unlocked?.keys
    this.#codec = new BlobCodec(keys, level)
    this.#index = p.index ?? new LoadedIndex(p.storage, keys, p.indexTypes)
    const guard = <T>(write: (signal: AbortSignal | undefined) => Promise<T>, signal: AbortSignal | undefined) => this.#underLock(write, signal)
    this.#blobs = new BlobStore({
      storage: p.storage,
      codec: this.#codec,
      keys,
      index: this.#index,
      guard,
      packTargetBytes: p.config.packTargetBytes,
      maxPackUploads: p.maxPackUploads,
    })
    this.#records = new RecordStore({
      storage: p.storage,
      keys,
      level,
      guard,
      isKnownBlob: (id) => this.#blobs.isKnown(id),
      flush: (signal) => this.flush({ signal }),
      settle: (ids) => this.#blobs.settle(ids),
    })
    this.#watch = new CondemnedWatch({
      listKeys: async (signal) => {
        const keys: string[] = []
        for await (const r of this.#records.list(CONDEMNED_RECORD_KIND, '', { signal })) keys.push(r.key)
        return keys
      },
      read: async (key, signal) => checkCondemnedRecord(key, (await this.#records.read<CondemnedRecord>(CONDEMNED_RECORD_KIND, key, { signal })).value),
      setCondemned: (packs) => this.#index.setCondemned(packs),
      mayReference: (packs) => this.#blobs.mayReference(packs),
    })
    this.#contribution = {
      acknowledged: () => (this.#closed ? undefined : this.#holds > 0 ? [] : this.#watch.acknowledged()),
      beforeRefresh: (signal) => this.#watch.poll(signal),
    }
  }

  /**
   * A second handle on this repository for another stream of writes in the same operation (a backup's WAL beside
   * its files): its own packs and flushes, so that frequent WAL flushes do not cut file packs short, but the same
   * index, keys and locks. Closing it does not close this one. It joins this instance's locks as writeUnder does
   * (it reads garbage collection's condemnation records and acknowledges them for its own references), so it
   * resolves once it may store and reference blobs.
   */
  async twin(o: { signal?: AbortSignal } = {}): Promise<Repository> {
    this.#assertWritable()
    const twin = new Repository({ ...this.#parts, index: this.#index })
    for (const lock of this.#writeLocks) await twin.writeUnder(lock, o)
    return twin
  }

  /** A printable name of the repository's location. */
  get location(): string {
    return this.storage.name
  }

  get encrypted(): boolean {
    return this.#unlocked !== undefined
  }

  /**
   * True while the location still holds this repository: its config object (immutable, and carrying the
   * repository's random id) is the one this instance opened. A repository removed and created again at the same
   * location has another config; a process that keeps a repository open for long (the `wal get` prefetch daemon)
   * asks this before it serves anything, so it never answers for the new repository from the old one's state.
   */
  async isStillAtLocation(o: { signal?: AbortSignal } = {}): Promise<boolean> {
    try {
      return (await readObject(this.storage, CONFIG_KEY, { signal: o.signal })).equals(this.#configBytes)
    } catch (err) {
      if (isNotFound(err)) return false
      throw err
    }
  }

  /** @internal keys for verify in this package */
  get keys(): RepoKeys | undefined {
    return this.#unlocked?.keys
  }

  /** Index objects that could not be read at open (or at the last refresh) and are not superseded. */
  get damagedIndexObjects(): readonly DamagedObject[] {
    return this.#index.damaged
  }

  /** Counts of the loaded index: distinct blobs, packs referenced, and duplicate copies. */
  get indexStats(): { blobs: number; packs: number; duplicates: number; indexObjects: number } {
    return this.#index.stats
  }

  /** What this session has written. */
  get sessionStats(): Readonly<SessionStats> {
    return this.#blobs.stats
  }

  /** The blob id `bytes` would get in this repository, without storing anything. */
  blobIdOf(bytes: Uint8Array): BlobId {
    return this.#codec.idOf(bytes).toString('hex')
  }

  /**
   * True when the blob was put in this session (possibly not yet durable: see `flush`) or is indexed in a pack that
   * garbage collection has not condemned: a new reference to it may be written. The reference counts as taken
   * (docs/repository-format.md §10a) until a record this instance writes lists the blob in its `blobRefs`, or, for
   * blobs not listed there, until this instance is closed; take it only to use it.
   */
  hasBlob(id: BlobId): boolean {
    return this.#blobs.has(id)
  }

  /** True when the blob is indexed (condemned packs included) or was put in this session. Takes no reference. */
  isBlobKnown(id: BlobId): boolean {
    return this.#blobs.isKnown(id)
  }

  /** True when this instance loaded only part of the index (`openRepository({ index: 'meta' })`). */
  get partialIndex(): boolean {
    return this.#index.partial
  }

  /**
   * Where blob `id` is stored, or undefined when it is not indexed (blobs not yet flushed are not located).
   * Restore uses it to read blobs grouped by pack.
   */
  locateBlob(id: BlobId): BlobLocation | undefined {
    return this.#blobs.locate(id)
  }

  /**
   * Stores `bytes` as a blob of `type` unless a blob with the same id exists or was put in this session. The
   * bytes are copied before this returns, so the caller may reuse its buffer. Waits when the upload pipeline is
   * full (backpressure). The blob is durable once a later `flush()` resolves.
   */
  putBlob(type: BlobType, bytes: Uint8Array, o: { signal?: AbortSignal; compress?: boolean } = {}): Promise<PutBlobResult> {
    this.#assertWritable()
    this.#assertFullIndex()
    return this.#blobs.put(type, bytes, o)
  }

  /**
   * Stores a blob whose id and stored bytes were computed elsewhere with this repository's codec (a window
   * store's workers), unless a blob with the same id exists or was put in this session. `stored` is copied before
   * this returns, so the caller may reuse its buffer. The id cannot be checked here without the plain bytes; every
   * read re-hashes what it decodes (invariant 3), so a wrong id is an integrity error at the first read, never
   * wrong bytes.
   */
  putEncodedBlob(type: BlobType, id: BlobId, stored: Buffer, flags: number, plainLength: number, o: { signal?: AbortSignal } = {}): Promise<PutBlobResult> {
    this.#assertWritable()
    this.#assertFullIndex()
    return this.#blobs.putEncoded(type, id, stored, flags, plainLength, o)
  }

  /**
   * Returns the plain bytes of blob `id`, verified: decrypted, decompressed and re-hashed against the id. A
   * damaged or missing pack is an IntegrityError naming the blob and the pack; an unknown id is a NotFoundError
   * (an IntegrityError naming the damaged index objects when some could not be read).
   */
  readBlob(id: BlobId, o: { signal?: AbortSignal } = {}): Promise<Buffer> {
    return this.#blobs.read(id, o)
  }

  /** @internal the verified bytes of blob `id` read at `loc` (garbage collection, for blobs its index lacks) */
  readBlobAt(id: BlobId, loc: BlobLocation, o: { signal?: AbortSignal } = {}): Promise<Buffer> {
    return this.#blobs.readAt(id, loc, o)
  }

  /**
   * Makes everything put so far durable: seals open packs, waits for every upload, and writes an index object
   * covering them. Calls are serialised; a flush with nothing pending writes nothing.
   */
  flush(o: { signal?: AbortSignal } = {}): Promise<void> {
    return this.#blobs.flush(o)
  }

  /**
   * The blobs indexed now, numbered densely from 0 (`size` of them): for maintenance passes that keep a few bytes
   * per blob in typed arrays rather than sets of ids (what each backup holds alone, GC). Numbers stay valid while
   * no index is rebuilt; blobs loaded by a later refresh get higher numbers than `size`.
   */
  blobNumbering(): BlobNumbering {
    const index = this.#index.current
    const size = index.size
    return {
      size,
      numberOf: (id) => {
        const n = /^[0-9a-f]{64}$/.test(id) ? index.numberOf(Buffer.from(id, 'hex')) : -1
        return n < 0 || n >= size ? undefined : n
      },
      idOf: (n) => index.idOf(n).toString('hex'),
      storedBytesOf: (n) => index.storedLengthOf(n),
    }
  }

  /**
   * Reads garbage collection's condemnation records, then loads index objects written since the last load (by other
   * processes), so their blobs dedup and read. Long-running writers (WAL streaming) call this now and then.
   */
  async refreshIndex(o: { signal?: AbortSignal } = {}): Promise<void> {
    // Condemned packs first: a copy of a blob in an index object loaded next then wins over one in them.
    await this.#watch.poll(o.signal)
    await this.#index.refresh(o.signal)
  }

  /**
   * Rebuilds the index from the packs' headers (loaded-index.ts), after flushing. Safe beside concurrent writers;
   * run it under an exclusive lock anyway so readers do not see the swap.
   */
  async rebuildIndex(o: { signal?: AbortSignal } = {}): Promise<RebuildIndexResult> {
    this.#assertWritable()
    await this.flush(o)
    return this.#index.rebuild((write, signal) => this.#underLock(write, signal), o.signal)
  }

  /**
   * Stores an immutable record under `kind`/`key` (never overwritten: AlreadyExistsError if it exists). First
   * flushes, so every blob put before (and every blob in `blobRefs`) is durable before the record appears.
   * Under a lock (`acquireLock`, `writeUnder`) the record is written only while that lock is held: the write waits
   * while it is at risk, throws its LockedError once it is lost, and is aborted if it would outlive it.
   */
  writeRecord<T>(kind: string, key: string, value: T, o: { blobRefs?: readonly BlobId[]; signal?: AbortSignal } = {}): Promise<void> {
    this.#assertWritable()
    return this.#records.write(kind, key, value, o)
  }

  /** Reads and verifies a record. NotFoundError when it does not exist; IntegrityError when it is damaged. */
  readRecord<T = unknown>(kind: string, key: string, o: { signal?: AbortSignal } = {}): Promise<RepoRecord<T>> {
    return this.#records.read<T>(kind, key, o)
  }

  /** Lists the records of `kind` whose key starts with `keyPrefix`, in unspecified order. */
  listRecords(kind: string, keyPrefix = '', o: { signal?: AbortSignal } = {}): AsyncIterable<RecordInfo> {
    return this.#records.list(kind, keyPrefix, o)
  }

  /** Removes a record (for expire). Removing a missing record is not an error. Under a lock as `writeRecord`. */
  removeRecord(kind: string, key: string, o: { signal?: AbortSignal } = {}): Promise<void> {
    this.#assertWritable()
    return this.#records.remove(kind, key, o)
  }

  /**
   * A store for a backup's file content, window by window (window-store.ts). `workers` worker threads do the
   * per-byte work beside the calling thread, which takes a window itself while they are all busy (default: the
   * cores beyond one, at most 4; 0: the calling thread alone). `maxInFlight`: windows at the workers at once
   * (default 2 per worker and 2 more). Measured on two cores (bench data, full backup, 3 alternating runs): one
   * worker with 2, 3, 4 windows in flight 6.7-7.8, 5.7-7.1, 5.8-6.4 s, peaks 160-167, 166-169, 173-174 MB; no
   * worker 8.6-9.5 s, 157-166 MB; with 4 in flight the calling thread still took 3.1-3.6 user CPU-s, the worker
   * about 3.4-4.0. More in flight (8) once gained 5-8%, but only while each pack's write held the backup up: with
   * two packs written at once (open.ts), 4, 6 and 8 took 5.66-5.69, 5.43-5.61 and 5.76-5.86 s, peaks 182-185,
   * 188-192 and 188-198 MB. With `checkPacks`, a blob counts as present only when its pack is in storage now: an
   * incremental must not reference a parent's blob whose pack is gone, and the index alone can be stale. Close it
   * when done.
   */
  async openWindowStore(o: { workers?: number; maxInFlight?: number; checkPacks?: boolean; signal?: AbortSignal } = {}): Promise<WindowStore> {
    this.#assertWritable()
    this.#assertFullIndex()
    const present = o.checkPacks ? await this.#presentForReference(o.signal) : (id: BlobId) => this.hasBlob(id)
    const target = {
      codec: this.#codec,
      hasBlob: present,
      putEncoded: (id: BlobId, stored: Buffer, flags: number, plainLength: number, signal?: AbortSignal) =>
        this.#blobs.putEncoded('data', id, stored, flags, plainLength, { signal }),
    }
    const workers = o.workers ?? defaultWorkers(1, 4)
    return new WindowStore(target, this.#codecPool(workers, 'encode', o.maxInFlight ?? 2 * workers + 2), o.signal)
  }

  /**
   * A reader of blobs in runs, decoding on `workers` worker threads (default: the cores beyond two, at most 8; 0: the
   * calling thread), for restores. On two cores a worker cost a restore CPU (posting and transferring every blob)
   * without saving wall time: the calling thread and the kernel's writes take both cores (700 MB restored, 3
   * alternating runs: 3.0-3.3 CPU-s without a worker, 3.6-3.9 with one; wall 2.90-3.18 s against 2.98-3.24 s; peak
   * RSS 20 MB lower). Close it when done.
   */
  openBlobReader(o: BlobReaderOptions & { workers?: number } = {}): BlobReader {
    const source = {
      storage: this.storage,
      keys: this.#unlocked?.keys,
      locateBlob: (id: BlobId) => this.locateBlob(id),
      readBlob: (id: BlobId, r: { signal?: AbortSignal }) => this.readBlob(id, r),
    }
    return new BlobReader(source, this.#codecPool(o.workers ?? defaultWorkers(2, 8), 'decode'), o)
  }

  /**
   * A test of whether a blob is present now: put in this session, or indexed with its pack in storage (packs are
   * listed once, when this is called; packs this session writes later count too). A check (verify); it takes no
   * reference, and counts blobs in condemned packs.
   */
  async presentBlobs(o: { signal?: AbortSignal } = {}): Promise<(id: BlobId) => boolean> {
    const packs = await this.#listPacks(o.signal)
    return (id) => {
      // A blob not located yet was put in this session (not flushed): it is there.
      const loc = this.locateBlob(id)
      return loc === undefined ? this.isBlobKnown(id) : packs.has(loc.packId) || this.#blobs.wrotePack(loc.packId)
    }
  }

  /** As presentBlobs, for blobs about to be referenced: through hasBlob (no condemned packs; the reference is taken). */
  async #presentForReference(signal: AbortSignal | undefined): Promise<(id: BlobId) => boolean> {
    const packs = await this.#listPacks(signal)
    return (id) => {
      if (!this.hasBlob(id)) return false
      const loc = this.locateBlob(id)
      // Packs this session wrote were not listed: its own blobs count once their pack is indexed too.
      return loc === undefined || packs.has(loc.packId) || this.#blobs.wrotePack(loc.packId)
    }
  }

  async #listPacks(signal: AbortSignal | undefined): Promise<Set<string>> {
    const packs = new Set<string>()
    for await (const obj of this.storage.list(PACKS_PREFIX, { signal })) {
      const packId = packIdOfKey(obj.key)
      if (packId !== undefined) packs.add(packId)
    }
    return packs
  }

  /** A pool of `workers` threads with this repository's codec, or undefined for none (or no compiled worker). */
  #codecPool(workers: number, use: 'encode' | 'decode', maxInFlight?: number): CodecPool | undefined {
    if (!Number.isSafeInteger(workers) || workers < 0) throw new UsageError(`invalid number of worker threads ${String(workers)}`, { hint: 'use 0 or more' })
    if (workers === 0 || !workerModuleUrl()) return undefined
    const level = use === 'encode' && this.config.compression.algorithm === 'zstd' ? this.config.compression.level : undefined
    return new CodecPool({ keys: this.#unlocked?.keys, compressionLevel: level, workers, maxInFlight })
  }

  /**
   * Takes a shared or exclusive lock (see lock.ts); it is released by `release()` or by `close()`. From then on
   * this repository writes index objects and records only while the lock is held (see `writeUnder`), and reads
   * garbage collection's condemnation records before each refresh of the lock (docs/repository-format.md §10a).
   * A writer takes its lock before it stores or references anything.
   */
  async acquireLock(kind: LockKind, o: AcquireLockOptions): Promise<RepoLock> {
    this.#assertWritable()
    const lock = await acquireLock(this.storage, kind, o, (released) => this.#locks.delete(released))
    this.#locks.add(lock)
    try {
      await this.writeUnder(lock, { signal: o.signal })
    } catch (err) {
      await lock.release().catch(() => {})
      throw err
    }
    return lock
  }

  /**
   * Takes a shared lock for a reader (restore, verify); resolves undefined when the storage refuses the write for
   * lack of permission (read-only access): the reader then goes on without a lock and should say so once.
   */
  async acquireReaderLock(o: AcquireLockOptions): Promise<RepoLock | undefined> {
    this.#assertWritable()
    const lock = await acquireReaderLock(this.storage, o, (released) => this.#locks.delete(released))
    if (lock) {
      this.#locks.add(lock)
      try {
        await this.#join(lock, o.signal)
      } catch (err) {
        await lock.release().catch(() => {})
        throw err
      }
    }
    return lock
  }

  /**
   * Makes `lock` (taken through another instance on the same storage) guard this instance's writes too: index
   * objects and records are written only while it is held, and not at all once it is lost. The newest lock not
   * released guards; without one, writes are not guarded. Packs need no guard: unlisted until indexed. Resolves
   * once this instance has read garbage collection's condemnation records after the lock existed (so that
   * whatever it references from then on is either covered by this lock or avoided); call it before storing or
   * referencing anything through this instance.
   */
  async writeUnder(lock: RepoLock, o: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#join(lock, o.signal)
    if (!this.#writeLocks.includes(lock)) this.#writeLocks.push(lock)
  }

  /**
   * Reads the condemnation records now that `lock` exists, and adds this instance's acknowledgements to it. When
   * some exist, refreshes the lock at once so that garbage collection need not wait a refresh interval for them.
   */
  async #join(lock: RepoLock, signal: AbortSignal | undefined): Promise<void> {
    await this.#watch.poll(signal)
    lock.addContributor(this.#contribution)
    if (this.#watch.keys.length > 0) await lock.refresh().catch(() => {})
  }

  /** Runs a write that makes something visible (index object, record) under the guarding lock, if any. */
  #underLock<T>(write: (signal: AbortSignal | undefined) => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
    for (let i = this.#writeLocks.length - 1; i >= 0; i--) if (this.#writeLocks[i]!.state === 'released') this.#writeLocks.splice(i, 1)
    const lock = this.#writeLocks.at(-1)
    return lock ? lock.runHeld(write, { signal }) : write(signal)
  }

  /**
   * Until the returned function is called, this instance acknowledges no condemned pack, so garbage collection
   * deletes no pack while it works under its lock: for a reader that lists packs and reads them later (verify).
   * Call it before taking the lock: an acknowledgement already written stands until the next refresh.
   */
  holdPacks(): () => void {
    this.#holds++
    let released = false
    return () => {
      if (!released) this.#holds--
      released = true
    }
  }

  /** Every lock object with its state (live, expired, dead, unreadable). */
  listLocks(o: { signal?: AbortSignal } = {}): Promise<LockStatus[]> {
    return listLocks(this.storage, o)
  }

  /** Live locks that other sessions than `except`'s hold for `purpose` (e.g. 'backup', 'expire'). */
  liveLocksFor(purpose: string, o: { except?: RepoLock; signal?: AbortSignal } = {}): Promise<LockStatus[]> {
    return liveLocksFor(this.storage, purpose, o.except?.session, o)
  }

  /**
   * Waits while another session than `except`'s holds a live lock for `purpose`, for at most `maxWaitMs` (then a
   * LockedError); `onWait` hears once what it waits for.
   */
  waitWhileLocked(purpose: string, o: { except?: RepoLock; maxWaitMs: number; signal?: AbortSignal; onWait?: (lock: LockStatus) => void }): Promise<void> {
    return waitWhileLocked(this.storage, purpose, { ...o, exceptSession: o.except?.session })
  }

  /** Removes expired, dead and unreadable locks (what `unlock --remove-stale` does); live locks stay. */
  removeStaleLocks(o: { signal?: AbortSignal } = {}): Promise<LockStatus[]> {
    return removeStaleLocks(this.storage, o)
  }

  /**
   * Replaces the passphrase: writes a new key object wrapping the same master key, then removes the key object
   * this session was opened with. No data is touched. A crash in between leaves both passphrases working.
   */
  changePassphrase(newPassphrase: string, o: { signal?: AbortSignal; scrypt?: ScryptParams } = {}): Promise<{ keyId: string; removedKeyId: string }> {
    this.#assertWritable()
    return changePassphrase(this.storage, this.config, this.#configBytes, this.#unlocked, newPassphrase, o)
  }

  /**
   * Every key object (passphrase) of an encrypted repository with its id, creation time and scrypt cost, and which
   * one this session opened with; damaged ones with their problem. Empty for a plain repository. Reads only.
   */
  listKeys(o: { signal?: AbortSignal } = {}): Promise<KeyInfo[]> {
    return listKeyObjects(this.storage, this.#unlocked, o.signal)
  }

  /** Adds a passphrase: a new key object wrapping the same master key. No data is touched; every other key still opens. */
  addKey(newPassphrase: string, o: { signal?: AbortSignal; scrypt?: ScryptParams } = {}): Promise<{ keyId: string }> {
    this.#assertWritable()
    return addKey(this.storage, this.config, this.#configBytes, this.#unlocked, newPassphrase, o)
  }

  /**
   * Removes a key object, so its passphrase no longer opens the repository (no data is touched). Never removes the
   * last readable key; the key this session opened with only with `force` (see key-ring.ts removeKey).
   * @param keyId the whole id or a unique prefix of at least 8 hex digits
   */
  removeKey(keyId: string, o: { force?: boolean; signal?: AbortSignal } = {}): Promise<{ removedKeyId: string }> {
    this.#assertWritable()
    return removeKey(this.storage, this.#unlocked, keyId, o)
  }

  /**
   * Flushes and releases the locks taken through this repository. The storage stays open: whoever opened it
   * closes it (several repositories may share one).
   */
  async close(o: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.#closed) return
    try {
      await this.flush(o)
    } finally {
      this.#closed = true
      for (const lock of [...this.#locks]) await lock.release().catch(() => {})
    }
  }

  #assertWritable(): void {
    if (this.#closed) throw new AssertionError(`repository '${this.location}' is closed`)
  }

  #assertFullIndex(): void {
    if (this.#index.partial) {
      throw new UsageError(`repository '${this.location}' was opened with part of its index: it cannot store blobs`, {
        hint: 'open it without the index option to write to it (this is a bug in the caller)',
      })
    }
  }
}
