// The repository: opens and creates repositories, stores and reads verified blobs (dedup, packs, index), keeps
// small records for the layers above, and hands out locks. Write order is packs → index → records, so a crash at
// any moment leaves at worst unreferenced packs (docs/repository-format.md §10).

import { randomBytes } from 'node:crypto'
import {
  AlreadyExistsError,
  AssertionError,
  IntegrityError,
  NotFoundError,
  PassphraseError,
  RepoFormatError,
  UsageError,
} from '../errors.js'
import { probeConditionalWriteOf, withCheckedIfAbsent } from '../storage/if-absent.js'
import type { ConditionalWriteSupport, Storage } from '../storage/storage.js'
import {
  assertBlobId,
  assertBlobType,
  BlobCodec,
  BlobFlags,
  KNOWN_BLOB_FLAGS,
  MAX_BLOB_BYTES,
  type BlobId,
  type BlobType,
} from './blob.js'
import { BlobIndex, type BlobLocation } from './blob-index.js'
import { conditionalWriteOf, decodeConfig, encodeConfig, newConfig, notARepository, type RepoConfig } from './config.js'
import {
  createKeyFile,
  deriveRepoKeys,
  newMasterKey,
  parseKeyFile,
  SEAL_OVERHEAD_BYTES,
  sha256,
  sha256Hex,
  unwrapKeyFile,
  type KeyFile,
  type RepoKeys,
  type ScryptParams,
} from './crypto.js'
import { decodeIndex, encodeIndex, MAX_INDEX_ENTRIES, type IndexPack } from './index-file.js'
import {
  CONFIG_KEY,
  INDEX_PREFIX,
  indexIdOfKey,
  indexKey,
  keyFileKey,
  KEYS_PREFIX,
  packIdOfKey,
  packKey,
  PACKS_PREFIX,
  probeKey,
  RECORDS_PREFIX,
  recordKey,
  recordPrefix,
} from './layout.js'
import { acquireLock, acquireReaderLock, listLocks, removeStaleLocks, type AcquireLockOptions, type LockKind, type LockStatus, type RepoLock } from './lock.js'
import { readPackHeader } from './pack-reader.js'
import type { PackEntry } from './pack-format.js'
import { PackBuilder, PackUploader, type SealedPack } from './pack-writer.js'
import { decodeRecord, encodeRecord, type RepoRecord } from './record-format.js'
import { forEachConcurrent, isAlreadyExists, isNotFound, readObject } from './storage-io.js'

const PASSPHRASE_HINT = 'check PGKEEP_PASSPHRASE or --passphrase-file'
const DEFAULT_MAX_PACK_UPLOADS = 2
const LOAD_CONCURRENCY = 4
/** Longest time uploaded packs stay unindexed while a session keeps writing. */
const INDEX_COMMIT_INTERVAL_MS = 5_000
/** Longest time a pack collects blobs before it is sealed and uploaded, full or not. */
const PACK_SEAL_INTERVAL_MS = 5_000

export interface InitRepositoryOptions {
  /** Encrypt the repository; the passphrase wraps its master key. */
  encrypt?: { passphrase: string; scrypt?: ScryptParams }
  /** Pack target size in bytes (default 16 MiB). */
  packTargetBytes?: number
  /** zstd level for blobs and records (default level 3), or 'none'. */
  compression?: { level: number } | 'none'
  signal?: AbortSignal
  /**
   * Things the user should read, said once: a store that does not enforce conditional writes (init found out and
   * recorded it in the config; every writer then uses the check-and-read-back protocol).
   */
  onMessage?: (m: { level: 'info' | 'warning'; text: string }) => void
}

export interface OpenRepositoryOptions {
  /** Required when the repository is encrypted. */
  passphrase?: string
  signal?: AbortSignal
  /** Packs queued or uploading at once before `putBlob` waits (default 2); memory is about (this + 2) × pack size. */
  maxPackUploads?: number
}

/** A blob that is damaged or missing in an index object read at open. */
export interface DamagedObject {
  readonly object: string
  readonly message: string
}

/** Result of `putBlob`. */
export interface PutBlobResult {
  readonly id: BlobId
  /** False when the blob was already in the repository (or already put in this session). */
  readonly stored: boolean
}

/** What this session wrote so far. */
export interface SessionStats {
  blobsPut: number
  blobsStored: number
  plainBytesStored: number
  storedBytes: number
  packsWritten: number
  indexObjectsWritten: number
}

/** A record listed by `listRecords`. */
export interface RecordInfo {
  readonly key: string
  readonly sizeBytes: number
  readonly modifiedAt: Date
}

/** Result of `rebuildIndex`. */
export interface RebuildIndexResult {
  readonly packs: number
  readonly blobs: number
  readonly indexObjectsWritten: readonly string[]
  readonly indexObjectsRemoved: readonly string[]
  /** Packs whose header could not be read: their blobs are not indexed. */
  readonly problems: readonly DamagedObject[]
}

interface PendingBlob {
  readonly entry: PackEntry
  /** The stored bytes while the pack is being built or uploaded (so the blob can be read before it is durable). */
  stored: Buffer | undefined
  /** Set once the pack is durable. */
  packId: string | undefined
}

interface Unlocked {
  keys: RepoKeys
  masterKey: Buffer
  keyId: string
}

/**
 * What a user should know about a store that does not enforce conditional writes (`support` is what its probe
 * found), in one sentence.
 */
export function conditionalWriteNotice(location: string, support: Exclude<ConditionalWriteSupport, 'enforced'>): string {
  const how = support === 'unsupported' ? 'answers 501 NotImplemented to' : 'ignores'
  return (
    `'${location}' does not enforce conditional writes (it ${how} If-None-Match: *): pgkeep checks before and reads ` +
    'back after writing the config and each record, which keeps two writers of one record apart unless one of them ' +
    'stalls for a second or more between its check and its write (docs/storage.md, "Stores without conditional writes")'
  )
}

/** `storage` as the repository's writers must use it, given what the store does with conditional writes. */
function storageFor(storage: Storage, support: ConditionalWriteSupport): Storage {
  return support === 'enforced' ? storage : withCheckedIfAbsent(storage)
}

/**
 * Creates a repository in an empty location: finds out whether the store enforces conditional writes (a probe
 * object written and removed), writes the key object (encrypted repositories) and then `config`, the object whose
 * existence makes the location a repository. Throws AlreadyExistsError when `config` exists.
 */
export async function initRepository(storage: Storage, o: InitRepositoryOptions = {}): Promise<Repository> {
  const signal = o.signal
  if (await storage.stat(CONFIG_KEY, { signal })) {
    throw new AlreadyExistsError(`'${storage.name}' already holds a pgkeep repository`, {
      hint: 'use it as it is, or choose another --repo location',
    })
  }
  // Key objects without a config are left by an interrupted init: harmless (bound to another repository id),
  // so they do not stop a new init. Anything else means a damaged repository that must not be overwritten.
  for (const prefix of [PACKS_PREFIX, INDEX_PREFIX, RECORDS_PREFIX]) {
    for await (const obj of storage.list(prefix, { signal })) {
      throw new RepoFormatError(`'${storage.name}' holds repository objects ('${obj.key}') but no config`, {
        hint: 'this looks like a damaged repository; do not initialise over it, choose another --repo location',
      })
    }
  }
  const conditionalWrite = await probeConditionalWriteOf(storage, probeKey(randomBytes(16).toString('hex')), { signal })
  if (conditionalWrite !== 'enforced') {
    o.onMessage?.({ level: 'warning', text: conditionalWriteNotice(storage.name, conditionalWrite) })
    storage = storageFor(storage, conditionalWrite)
  }
  const id = randomBytes(32).toString('hex')
  const config = newConfig({
    id,
    packTargetBytes: o.packTargetBytes,
    compression: o.compression,
    encrypted: o.encrypt !== undefined,
    scrypt: o.encrypt?.scrypt,
    conditionalWrite,
  })
  const configBytes = encodeConfig(config)
  let unlocked: Unlocked | undefined
  if (o.encrypt) {
    if (typeof o.encrypt.passphrase !== 'string' || o.encrypt.passphrase.length === 0) {
      throw new PassphraseError('an encrypted repository needs a non-empty passphrase', { hint: PASSPHRASE_HINT })
    }
    const masterKey = newMasterKey()
    const keyBytes = await createKeyFile(masterKey, configBytes, id, o.encrypt.passphrase, o.encrypt.scrypt)
    const keyId = sha256Hex(keyBytes)
    await storage.write(keyFileKey(keyId), keyBytes, { ifAbsent: true, collisionFree: true, signal })
    unlocked = { keys: deriveRepoKeys(masterKey), masterKey, keyId }
  }
  try {
    await storage.write(CONFIG_KEY, configBytes, { ifAbsent: true, signal })
  } catch (err) {
    if (unlocked) await storage.remove(keyFileKey(unlocked.keyId)).catch(() => {})
    if (isAlreadyExists(err)) {
      throw new AlreadyExistsError(`'${storage.name}' already holds a pgkeep repository`, {
        cause: err,
        hint: 'another process initialised it at the same moment; use it as it is',
      })
    }
    throw err
  }
  return new Repository(storage, config, configBytes, unlocked, DEFAULT_MAX_PACK_UPLOADS)
}

/**
 * Opens an existing repository: reads `config`, unlocks the master key with the passphrase when encrypted, and
 * loads every index object. Damaged index objects do not stop the open (verify must be able to report them);
 * they are listed in `damagedIndexObjects` and named by any `readBlob` that misses.
 */
export async function openRepository(storage: Storage, o: OpenRepositoryOptions = {}): Promise<Repository> {
  const signal = o.signal
  let configBytes: Buffer
  try {
    configBytes = await readObject(storage, CONFIG_KEY, { signal })
  } catch (err) {
    if (isNotFound(err)) throw notARepository(storage.name, 'it has no config object', err)
    throw err
  }
  const config = decodeConfig(configBytes, storage.name)
  storage = storageFor(storage, conditionalWriteOf(config))
  let unlocked: Unlocked | undefined
  if (config.encryption) {
    unlocked = await unlock(storage, config, configBytes, o.passphrase, signal)
  } else {
    for await (const obj of storage.list(KEYS_PREFIX, { signal })) {
      throw new RepoFormatError(`repository '${storage.name}' is plain by its config but holds key object '${obj.key}'`, {
        hint: 'its config object may have been altered; do not write to it',
      })
    }
  }
  const repo = new Repository(storage, config, configBytes, unlocked, o.maxPackUploads ?? DEFAULT_MAX_PACK_UPLOADS)
  await repo.refreshIndex({ signal })
  return repo
}

async function unlock(
  storage: Storage,
  config: RepoConfig,
  configBytes: Buffer,
  passphrase: string | undefined,
  signal: AbortSignal | undefined,
): Promise<Unlocked> {
  if (passphrase === undefined || passphrase === '') {
    throw new PassphraseError(`repository '${storage.name}' is encrypted and no passphrase was given`, { hint: PASSPHRASE_HINT })
  }
  let tried = 0
  for await (const obj of storage.list(KEYS_PREFIX, { signal })) {
    const keyId = obj.key.slice(KEYS_PREFIX.length)
    let bytes: Buffer
    try {
      bytes = await readObject(storage, obj.key, { signal })
    } catch (err) {
      if (isNotFound(err)) continue // removed by a passphrase change meanwhile
      throw err
    }
    if (sha256Hex(bytes) !== keyId) continue // damaged: verify reports it; another key may still open
    let file: KeyFile
    try {
      file = parseKeyFile(bytes, obj.key)
    } catch {
      continue // unknown or damaged: verify reports it; another key may still open
    }
    tried++
    const result = await unwrapKeyFile(file, config.id, passphrase)
    if (!result.ok) continue
    if (!result.configHash.equals(sha256(configBytes))) {
      throw new RepoFormatError(`the config object of repository '${storage.name}' does not match its key '${obj.key}'`, {
        hint: 'the config object was altered or replaced; do not write to this repository',
      })
    }
    return { keys: deriveRepoKeys(result.masterKey), masterKey: result.masterKey, keyId }
  }
  if (tried === 0) {
    throw new RepoFormatError(`repository '${storage.name}' is encrypted but has no readable key object`, {
      hint: 'its keys/ objects are missing or damaged; the data cannot be decrypted without one',
    })
  }
  throw new PassphraseError(`wrong passphrase for repository '${storage.name}'`, { hint: PASSPHRASE_HINT })
}

/**
 * An open repository. Not safe for use from several threads; many concurrent async calls are fine.
 * Blobs put are durable only after `flush()` resolves (records flush first on their own).
 */
export class Repository {
  readonly storage: Storage
  readonly config: RepoConfig
  readonly #configBytes: Buffer
  readonly #unlocked: Unlocked | undefined
  readonly #codec: BlobCodec
  readonly #uploader: PackUploader
  #index = new BlobIndex()
  readonly #loadedIndexIds = new Set<string>()
  #damagedIndexes: DamagedObject[] = []
  /** Ids of index objects named in `supersedes` of a loaded one: their damage no longer matters. */
  readonly #superseded = new Set<string>()
  readonly #pending = new Map<string, PendingBlob>()
  readonly #builders: Record<BlobType, PackBuilder | undefined> = { data: undefined, meta: undefined }
  readonly #awaitingIndex: IndexPack[] = []
  #awaitingIndexEntries = 0
  #indexWriting: Promise<void> = Promise.resolve()
  #lastIndexCommit = Date.now()
  #flushing: Promise<void> = Promise.resolve()
  readonly #locks = new Set<RepoLock>()
  /** Locks that index objects and records are written under (the newest one not released), see `writeUnder`. */
  readonly #writeLocks: RepoLock[] = []
  readonly #stats: SessionStats = { blobsPut: 0, blobsStored: 0, plainBytesStored: 0, storedBytes: 0, packsWritten: 0, indexObjectsWritten: 0 }
  #closed = false

  /** @internal use openRepository or initRepository */
  constructor(storage: Storage, config: RepoConfig, configBytes: Buffer, unlocked: Unlocked | undefined, maxPackUploads: number) {
    this.storage = storage
    this.config = config
    this.#configBytes = configBytes
    this.#unlocked = unlocked
    const level = config.compression.algorithm === 'zstd' ? config.compression.level : undefined
    this.#codec = new BlobCodec(unlocked?.keys, level)
    this.#uploader = new PackUploader(storage, maxPackUploads, (pack) => this.#onPackDurable(pack))
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

  /** @internal keys for verify and rebuild in this package */
  get keys(): RepoKeys | undefined {
    return this.#unlocked?.keys
  }

  /** Index objects that could not be read at open (or at the last refresh) and are not superseded. */
  get damagedIndexObjects(): readonly DamagedObject[] {
    return this.#damagedIndexes
  }

  /** Counts of the loaded index: distinct blobs, packs referenced, and duplicate copies. */
  get indexStats(): { blobs: number; packs: number; duplicates: number; indexObjects: number } {
    return {
      blobs: this.#index.size,
      packs: this.#index.packCount,
      duplicates: this.#index.duplicates,
      indexObjects: this.#loadedIndexIds.size,
    }
  }

  /** What this session has written. */
  get sessionStats(): Readonly<SessionStats> {
    return { ...this.#stats }
  }

  /** The blob id `bytes` would get in this repository, without storing anything. */
  blobIdOf(bytes: Uint8Array): BlobId {
    return this.#codec.idOf(bytes).toString('hex')
  }

  /** True when the blob is indexed or was put in this session (possibly not yet durable: see `flush`). */
  hasBlob(id: BlobId): boolean {
    assertBlobId(id)
    return this.#pending.has(id) || this.#index.has(Buffer.from(id, 'hex'))
  }

  /**
   * Where blob `id` is stored, or undefined when it is not indexed (blobs not yet flushed are not located).
   * Restore uses it to read blobs grouped by pack.
   */
  locateBlob(id: BlobId): BlobLocation | undefined {
    assertBlobId(id)
    return this.#index.get(Buffer.from(id, 'hex'))
  }

  /**
   * Stores `bytes` as a blob of `type` unless a blob with the same id exists or was put in this session. The
   * bytes are copied before this returns, so the caller may reuse its buffer. Waits when the upload pipeline is
   * full (backpressure). The blob is durable once a later `flush()` resolves.
   */
  async putBlob(type: BlobType, bytes: Uint8Array, o: { signal?: AbortSignal; compress?: boolean } = {}): Promise<PutBlobResult> {
    this.#assertWritable()
    assertBlobType(type)
    o.signal?.throwIfAborted()
    if (bytes.length > MAX_BLOB_BYTES) {
      throw new UsageError(`blob of ${bytes.length} bytes is larger than the limit of ${MAX_BLOB_BYTES}`, {
        hint: 'cut content into blobs of about 1 MiB (this is a bug in the caller)',
      })
    }
    this.#uploader.throwIfFailed()
    this.#stats.blobsPut++
    const idBytes = this.#codec.idOf(bytes)
    const id = idBytes.toString('hex')
    if (this.#pending.has(id) || this.#index.has(idBytes)) return { id, stored: false }
    // Everything from the check above to the add in #addBlob is synchronous, so concurrent puts of equal content
    // store it once.
    const { stored, flags } = this.#codec.encode(bytes, o.compress ?? true)
    return this.#addBlob(type, id, idBytes, stored, flags, bytes.length, o.signal)
  }

  /**
   * Stores a blob whose id and stored bytes were computed elsewhere (worker threads of the backup engine, with
   * this repository's keys and compression level and the same codec as `putBlob`), unless a blob with the same id
   * exists or was put in this session. `stored` becomes the repository's: the caller must not change it. Waits
   * like `putBlob` when the upload pipeline is full.
   *
   * The id cannot be checked here without the plain bytes; every read re-hashes what it decodes (invariant 3),
   * so a wrong id is an integrity error at the first read, never wrong bytes.
   */
  async putEncodedBlob(
    type: BlobType,
    id: BlobId,
    stored: Buffer,
    flags: number,
    plainLength: number,
    o: { signal?: AbortSignal } = {},
  ): Promise<PutBlobResult> {
    this.#assertWritable()
    assertBlobType(type)
    assertBlobId(id)
    o.signal?.throwIfAborted()
    if (!Number.isSafeInteger(plainLength) || plainLength < 0 || plainLength > MAX_BLOB_BYTES) {
      throw new UsageError(`invalid plain length ${plainLength} of blob '${id}'`, {
        hint: `a blob holds 0 to ${MAX_BLOB_BYTES} bytes (this is a bug in the caller)`,
      })
    }
    // What decode will insist on, checked now so a caller's mistake fails here rather than at restore.
    const bodyBytes = stored.length - (this.#unlocked ? SEAL_OVERHEAD_BYTES : 0)
    if ((flags & ~KNOWN_BLOB_FLAGS) !== 0 || bodyBytes < 0 || ((flags & BlobFlags.ZSTD) === 0 && bodyBytes !== plainLength)) {
      throw new UsageError(`encoded blob '${id}' has flags ${flags} and ${stored.length} stored bytes for ${plainLength} plain bytes`, {
        hint: "encode blobs with this repository's codec (this is a bug in the caller)",
      })
    }
    this.#uploader.throwIfFailed()
    this.#stats.blobsPut++
    const idBytes = Buffer.from(id, 'hex')
    if (this.#pending.has(id) || this.#index.has(idBytes)) return { id, stored: false }
    return this.#addBlob(type, id, idBytes, stored, flags, plainLength, o.signal)
  }

  /**
   * Adds a blob known to be new to the open pack of its type (the part of putBlob and putEncodedBlob after the
   * dedup check; synchronous up to the first await, so equal content racing in is stored once), then applies the
   * upload backpressure and the periodic index commit.
   */
  async #addBlob(
    type: BlobType,
    id: BlobId,
    idBytes: Buffer,
    stored: Buffer,
    flags: number,
    plainLength: number,
    signal: AbortSignal | undefined,
  ): Promise<PutBlobResult> {
    let builder = this.#builders[type]
    if (!builder) builder = this.#builders[type] = new PackBuilder(type)
    const entry = builder.add(idBytes, flags, stored, plainLength)
    this.#pending.set(id, { entry, stored, packId: undefined })
    this.#stats.blobsStored++
    this.#stats.plainBytesStored += plainLength
    this.#stats.storedBytes += stored.length
    if (builder.startedAt === 0) builder.startedAt = Date.now()
    // Full packs are sealed; so are old ones, so that a slow writer that dies loses at most a few seconds of work.
    if (builder.sizeBytes >= this.config.packTargetBytes || Date.now() - builder.startedAt >= PACK_SEAL_INTERVAL_MS) this.#sealBuilder(type)

    await this.#uploader.waitForRoom(signal)
    // Index durable packs when an index object is full, and at least every INDEX_COMMIT_INTERVAL_MS: a writer that
    // dies (SIGKILL) then leaves its uploaded blobs findable, so running it again does not store them twice.
    if (
      this.#awaitingIndexEntries >= MAX_INDEX_ENTRIES ||
      (this.#awaitingIndexEntries > 0 && Date.now() - this.#lastIndexCommit >= INDEX_COMMIT_INTERVAL_MS)
    ) {
      this.#lastIndexCommit = Date.now()
      await this.#writeIndex(signal)
    }
    return { id, stored: true }
  }

  /**
   * Returns the plain bytes of blob `id`, verified: decrypted, decompressed and re-hashed against the id. A
   * damaged or missing pack is an IntegrityError naming the blob and the pack; an unknown id is a NotFoundError
   * (an IntegrityError naming the damaged index objects when some could not be read).
   */
  async readBlob(id: BlobId, o: { signal?: AbortSignal } = {}): Promise<Buffer> {
    assertBlobId(id)
    const idBytes = Buffer.from(id, 'hex')
    const pending = this.#pending.get(id)
    if (pending?.stored) {
      const e = pending.entry
      // A copy: the stored bytes are part of a pack still to be uploaded, and a plain, uncompressed blob would
      // otherwise come back as a view the caller could write into.
      return this.#codec.decode(Buffer.from(pending.stored), e.flags, e.plainLength, idBytes, `blob '${id}' (not yet flushed)`)
    }
    const loc = pending ? { ...pending.entry, packId: pending.packId! } : this.#index.get(idBytes)
    if (!loc) {
      if (this.#damagedIndexes.length > 0) {
        throw new IntegrityError(
          `blob '${id}' is not in the index, and index object ${this.#damagedIndexes.map((d) => `'${d.object}'`).join(', ')} is damaged`,
          { hint: "the blob may be listed in the damaged index object; run 'pgkeep verify', then rebuild the index from the packs" },
        )
      }
      throw new NotFoundError(`blob '${id}' is not in repository '${this.location}'`)
    }
    const name = packKey(loc.packId)
    let stored: Buffer
    try {
      stored = await readObject(this.storage, name, { offset: loc.offset, length: loc.storedLength, signal: o.signal })
    } catch (err) {
      if (isNotFound(err)) {
        throw new IntegrityError(`pack '${name}' holding blob '${id}' is missing`, {
          cause: err,
          hint: "run 'pgkeep verify' to list every damaged object",
        })
      }
      throw err
    }
    const where = `blob '${id}' in pack '${name}'`
    if (stored.length !== loc.storedLength) {
      throw new IntegrityError(`${where} is truncated: read ${stored.length} of ${loc.storedLength} bytes at offset ${loc.offset}`, {
        hint: "run 'pgkeep verify' to list every damaged object",
      })
    }
    return this.#codec.decode(stored, loc.flags, loc.plainLength, idBytes, where)
  }

  /**
   * Makes everything put so far durable: seals open packs, waits for every upload, and writes an index object
   * covering them. Calls are serialised; a flush with nothing pending writes nothing.
   */
  flush(o: { signal?: AbortSignal } = {}): Promise<void> {
    const run = this.#flushing.catch(() => {}).then(() => this.#flushNow(o.signal))
    this.#flushing = run
    return run
  }

  async #flushNow(signal: AbortSignal | undefined): Promise<void> {
    this.#sealBuilder('data')
    this.#sealBuilder('meta')
    await this.#uploader.drain(signal)
    await this.#writeIndex(signal)
  }

  #sealBuilder(type: BlobType): void {
    const builder = this.#builders[type]
    if (!builder || builder.count === 0) return
    this.#builders[type] = undefined
    const pack = builder.seal(this.#unlocked?.keys)
    // Point pending blobs at the sealed bytes so the builder's chunks can be freed.
    for (const e of pack.entries) {
      const p = this.#pending.get(e.id.toString('hex'))
      if (p) p.stored = pack.bytes.subarray(e.offset, e.offset + e.storedLength)
    }
    this.#uploader.submit(pack)
  }

  #onPackDurable(pack: SealedPack): void {
    this.#stats.packsWritten++
    for (const e of pack.entries) {
      const p = this.#pending.get(e.id.toString('hex'))
      if (p) {
        p.packId = pack.packId
        p.stored = undefined
      }
    }
    this.#awaitingIndex.push({ packId: pack.packId, entries: pack.entries })
    this.#awaitingIndexEntries += pack.entries.length
  }

  /** Writes one index object per MAX_INDEX_ENTRIES entries of durable packs, then commits them to the index. */
  #writeIndex(signal: AbortSignal | undefined): Promise<void> {
    const run = this.#indexWriting.catch(() => {}).then(async () => {
      while (this.#awaitingIndex.length > 0) {
        const batch: IndexPack[] = []
        let n = 0
        while (this.#awaitingIndex.length > 0 && (batch.length === 0 || n + this.#awaitingIndex[0]!.entries.length <= MAX_INDEX_ENTRIES)) {
          const p = this.#awaitingIndex.shift()!
          batch.push(p)
          n += p.entries.length
        }
        const { id, bytes } = encodeIndex({ supersedes: [], packs: batch }, this.#unlocked?.keys)
        try {
          await this.#underLock((s) => this.storage.write(indexKey(id), bytes, { ifAbsent: true, collisionFree: true, signal: s }), signal)
        } catch (err) {
          if (!isAlreadyExists(err)) {
            this.#awaitingIndex.unshift(...batch)
            throw err
          }
        }
        this.#awaitingIndexEntries -= n
        this.#loadedIndexIds.add(id)
        this.#stats.indexObjectsWritten++
        for (const p of batch) {
          for (const e of p.entries) {
            this.#index.add(p.packId, e)
            this.#pending.delete(e.id.toString('hex'))
          }
        }
      }
    })
    this.#indexWriting = run
    return run
  }

  /**
   * Loads index objects written since the last load (by other processes), so their blobs dedup and read.
   * Long-running writers (WAL streaming) call this now and then.
   */
  async refreshIndex(o: { signal?: AbortSignal } = {}): Promise<void> {
    const fresh: string[] = []
    for await (const obj of this.storage.list(INDEX_PREFIX, { signal: o.signal })) {
      const id = indexIdOfKey(obj.key)
      if (id !== undefined && !this.#loadedIndexIds.has(id)) fresh.push(id)
    }
    const damaged = this.#damagedIndexes.filter((d) => !fresh.includes(d.object.slice(INDEX_PREFIX.length)))
    await forEachConcurrent(fresh, LOAD_CONCURRENCY, async (id) => {
      const name = indexKey(id)
      let bytes: Buffer
      try {
        bytes = await readObject(this.storage, name, { signal: o.signal })
      } catch (err) {
        if (isNotFound(err)) return // superseded and removed by an index rebuild meanwhile
        throw err
      }
      let content
      try {
        content = decodeIndex(bytes, id, name, this.#unlocked?.keys)
      } catch (err) {
        if (!(err instanceof IntegrityError)) throw err
        damaged.push({ object: name, message: err.message })
        return
      }
      for (const s of content.supersedes) this.#superseded.add(s)
      for (const p of content.packs) for (const e of p.entries) this.#index.add(p.packId, e)
      this.#loadedIndexIds.add(id)
    })
    this.#damagedIndexes = damaged.filter((d) => !this.#superseded.has(d.object.slice(INDEX_PREFIX.length)))
  }

  /**
   * Reads the header of every pack and writes a fresh set of index objects covering all of them, then removes the
   * index objects that existed before (listed in the new ones' `supersedes`). Damaged packs are reported and left
   * out. Safe beside concurrent writers (their new index objects are not removed); run it under an exclusive
   * lock anyway so readers do not see the swap.
   */
  async rebuildIndex(o: { signal?: AbortSignal } = {}): Promise<RebuildIndexResult> {
    this.#assertWritable()
    const signal = o.signal
    await this.flush({ signal })
    const old: string[] = []
    for await (const obj of this.storage.list(INDEX_PREFIX, { signal })) {
      const id = indexIdOfKey(obj.key)
      if (id !== undefined) old.push(id)
    }
    const packs: { packId: string; sizeBytes: number }[] = []
    for await (const obj of this.storage.list(PACKS_PREFIX, { signal })) {
      const packId = packIdOfKey(obj.key)
      if (packId !== undefined) packs.push({ packId, sizeBytes: obj.sizeBytes })
    }
    const problems: DamagedObject[] = []
    const written: string[] = []
    const fresh = new BlobIndex()
    let batch: IndexPack[] = []
    let batchEntries = 0
    const writeBatch = async () => {
      if (batch.length === 0) return
      const { id, bytes } = encodeIndex({ supersedes: old, packs: batch }, this.#unlocked?.keys)
      batch = []
      batchEntries = 0
      try {
        await this.#underLock((s) => this.storage.write(indexKey(id), bytes, { ifAbsent: true, collisionFree: true, signal: s }), signal)
      } catch (err) {
        if (!isAlreadyExists(err)) throw err
      }
      written.push(id)
    }
    let blobs = 0
    await forEachConcurrent(packs, LOAD_CONCURRENCY, async ({ packId, sizeBytes }) => {
      let entries: PackEntry[]
      try {
        entries = await readPackHeader(this.storage, packId, this.#unlocked?.keys, { sizeBytes, signal })
      } catch (err) {
        if (!(err instanceof IntegrityError) && !(err instanceof NotFoundError)) throw err
        problems.push({ object: packKey(packId), message: err.message })
        return
      }
      blobs += entries.length
      for (const e of entries) fresh.add(packId, e)
      batch.push({ packId, entries })
      batchEntries += entries.length
      if (batchEntries >= MAX_INDEX_ENTRIES) await writeBatch()
    })
    await writeBatch()
    const removed = old.filter((id) => !written.includes(id))
    for (const id of removed) await this.#underLock((s) => this.storage.remove(indexKey(id), { signal: s }), signal)
    this.#index = fresh
    this.#loadedIndexIds.clear()
    for (const id of written) this.#loadedIndexIds.add(id)
    this.#damagedIndexes = []
    for (const id of old) this.#superseded.add(id)
    await this.refreshIndex({ signal }) // index objects other writers added meanwhile
    return { packs: packs.length - problems.length, blobs, indexObjectsWritten: written, indexObjectsRemoved: removed, problems }
  }

  /**
   * Stores an immutable record under `kind`/`key` (never overwritten: AlreadyExistsError if it exists). First
   * flushes, so every blob put before (and every blob in `blobRefs`) is durable before the record appears.
   * Records are encrypted in encrypted repositories and verified on read; keep them small (large data in blobs).
   * Under a lock (`acquireLock`, `writeUnder`) the record is written only while that lock is held: the write waits
   * while it is at risk, throws its LockedError once it is lost, and is aborted if it would outlive it.
   */
  async writeRecord<T>(kind: string, key: string, value: T, o: { blobRefs?: readonly BlobId[]; signal?: AbortSignal } = {}): Promise<void> {
    this.#assertWritable()
    const storageKey = recordKey(kind, key)
    const blobRefs = [...(o.blobRefs ?? [])]
    for (const ref of blobRefs) {
      if (!this.hasBlob(ref)) {
        throw new NotFoundError(`record '${storageKey}' references blob '${ref}', which is not in the repository`, {
          hint: 'put the blob before writing the record that references it (this is a bug in the caller)',
        })
      }
    }
    await this.flush({ signal: o.signal })
    const record: RepoRecord<T> = { kind, key, createdAt: new Date().toISOString(), blobRefs, value }
    const level = this.config.compression.algorithm === 'zstd' ? this.config.compression.level : undefined
    const bytes = encodeRecord(record, storageKey, this.#unlocked?.keys, level)
    try {
      await this.#underLock((s) => this.storage.write(storageKey, bytes, { ifAbsent: true, signal: s }), o.signal)
    } catch (err) {
      if (isAlreadyExists(err)) {
        throw new AlreadyExistsError(`record '${storageKey}' already exists`, {
          cause: err,
          hint: 'records are immutable: remove it first or use another key',
        })
      }
      throw err
    }
  }

  /** Reads and verifies a record. NotFoundError when it does not exist; IntegrityError when it is damaged. */
  async readRecord<T = unknown>(kind: string, key: string, o: { signal?: AbortSignal } = {}): Promise<RepoRecord<T>> {
    const storageKey = recordKey(kind, key)
    let bytes: Buffer
    try {
      bytes = await readObject(this.storage, storageKey, { signal: o.signal })
    } catch (err) {
      if (isNotFound(err)) throw new NotFoundError(`record '${storageKey}' does not exist in '${this.location}'`, { cause: err })
      throw err
    }
    return decodeRecord<T>(bytes, storageKey, kind, key, this.#unlocked?.keys)
  }

  /** Lists the records of `kind` whose key starts with `keyPrefix`, in unspecified order. */
  async *listRecords(kind: string, keyPrefix = '', o: { signal?: AbortSignal } = {}): AsyncIterable<RecordInfo> {
    const prefix = recordPrefix(kind, keyPrefix)
    const strip = `${RECORDS_PREFIX}${kind}/`.length
    for await (const obj of this.storage.list(prefix, { signal: o.signal })) {
      yield { key: obj.key.slice(strip), sizeBytes: obj.sizeBytes, modifiedAt: obj.modifiedAt }
    }
  }

  /** Removes a record (for expire). Removing a missing record is not an error. Under a lock as `writeRecord`. */
  async removeRecord(kind: string, key: string, o: { signal?: AbortSignal } = {}): Promise<void> {
    this.#assertWritable()
    await this.#underLock((s) => this.storage.remove(recordKey(kind, key), { signal: s }), o.signal)
  }

  /**
   * Takes a shared or exclusive lock (see lock.ts); it is released by `release()` or by `close()`. From then on
   * this repository writes index objects and records only while the lock is held (see `writeUnder`).
   */
  async acquireLock(kind: LockKind, o: AcquireLockOptions): Promise<RepoLock> {
    this.#assertWritable()
    const lock = await acquireLock(this.storage, kind, o, (released) => this.#locks.delete(released))
    this.#locks.add(lock)
    this.writeUnder(lock)
    return lock
  }

  /**
   * Takes a shared lock for a reader (restore, verify); resolves undefined when the storage refuses the write for
   * lack of permission (read-only access): the reader then goes on without a lock and should say so once.
   */
  async acquireReaderLock(o: AcquireLockOptions): Promise<RepoLock | undefined> {
    this.#assertWritable()
    const lock = await acquireReaderLock(this.storage, o, (released) => this.#locks.delete(released))
    if (lock) this.#locks.add(lock)
    return lock
  }

  /**
   * Makes `lock` (taken through another instance on the same storage) guard this instance's writes too: index
   * objects and records are written only while it is held, and not at all once it is lost. The newest lock not
   * released guards; without one, writes are not guarded. Packs need no guard: unlisted until indexed.
   */
  writeUnder(lock: RepoLock): void {
    if (!this.#writeLocks.includes(lock)) this.#writeLocks.push(lock)
  }

  /** Runs a write that makes something visible (index object, record) under the guarding lock, if any. */
  #underLock<T>(write: (signal: AbortSignal | undefined) => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
    for (let i = this.#writeLocks.length - 1; i >= 0; i--) if (this.#writeLocks[i]!.state === 'released') this.#writeLocks.splice(i, 1)
    const lock = this.#writeLocks.at(-1)
    return lock ? lock.runHeld(write, { signal }) : write(signal)
  }

  /** Every lock object with its state (live, expired, dead, unreadable). */
  listLocks(o: { signal?: AbortSignal } = {}): Promise<LockStatus[]> {
    return listLocks(this.storage, o)
  }

  /** Removes expired, dead and unreadable locks (what `unlock --remove-stale` does); live locks stay. */
  removeStaleLocks(o: { signal?: AbortSignal } = {}): Promise<LockStatus[]> {
    return removeStaleLocks(this.storage, o)
  }

  /**
   * Replaces the passphrase: writes a new key object wrapping the same master key, then removes the key object
   * this session was opened with. No data is touched. A crash in between leaves both passphrases working.
   */
  async changePassphrase(newPassphrase: string, o: { signal?: AbortSignal; scrypt?: ScryptParams } = {}): Promise<{ keyId: string; removedKeyId: string }> {
    this.#assertWritable()
    const u = this.#unlocked
    if (!u) throw new UsageError(`repository '${this.location}' is not encrypted; it has no passphrase to change`)
    if (typeof newPassphrase !== 'string' || newPassphrase.length === 0) {
      throw new PassphraseError('the new passphrase is empty', { hint: PASSPHRASE_HINT })
    }
    const scrypt = o.scrypt ?? this.config.encryption!.kdf
    const bytes = await createKeyFile(u.masterKey, this.#configBytes, this.config.id, newPassphrase, scrypt)
    const keyId = sha256Hex(bytes)
    await this.storage.write(keyFileKey(keyId), bytes, { ifAbsent: true, collisionFree: true, signal: o.signal })
    const removedKeyId = u.keyId
    await this.storage.remove(keyFileKey(removedKeyId), { signal: o.signal })
    u.keyId = keyId
    return { keyId, removedKeyId }
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
}
