// Blobs in and out of the repository: the dedup check, packs built per blob type and uploaded with backpressure,
// index objects committed as packs become durable (at least every few seconds, so a killed writer's uploads are
// found again), and verified reads. Write order is packs → index, so a crash leaves at worst unindexed packs
// (docs/repository-format.md §10).
// Longer than 400 lines on purpose: storing, deduplication and the tracking of references that garbage collection
// relies on (§10a) are one set of invariants.

import { IntegrityError, NotFoundError, UsageError } from '../errors.js'
import type { Storage } from '../storage/storage.js'
import { assertBlobId, assertBlobType, type BlobCodec, BlobFlags, type BlobId, type BlobType, KNOWN_BLOB_FLAGS, MAX_BLOB_BYTES } from './blob.js'
import type { BlobLocation } from './blob-index.js'
import { type RepoKeys, SEAL_OVERHEAD_BYTES } from './crypto.js'
import { encodeIndex, type IndexPack, MAX_INDEX_ENTRIES } from './index-file.js'
import { indexKey, packKey } from './layout.js'
import type { GuardedWrite, LoadedIndex } from './loaded-index.js'
import { PackBuilder, PackUploader, resealWithFiller, type SealedPack } from './pack-writer.js'
import { type PendingPack, PendingBlobs } from './pending-blobs.js'
import { isAlreadyExists, isNotFound, readObject } from './storage-io.js'

/** Longest time uploaded packs stay unindexed while a session keeps writing. */
const INDEX_COMMIT_INTERVAL_MS = 5_000
/**
 * Uploaded blobs waiting for an index object that make one be written at once. Every blob put stays in memory
 * (its pack entry, about 150 bytes of JS heap, and 60 in typed arrays) until its pack is indexed: a backup of 40,000
 * small tables puts thousands of blobs a second, so waiting out the interval held tens of thousands of them.
 */
const INDEX_COMMIT_ENTRIES = 8192
/** Longest time a pack collects blobs before it is sealed and uploaded, full or not. */
const PACK_SEAL_INTERVAL_MS = 5_000
/**
 * Blobs in one pack, at most: each stays in memory (about 200 bytes) until its pack is indexed, and a pack of the
 * small pages of many small tables (100-300 bytes stored) held 30,000-40,000 of them before its bytes or its time
 * sealed it: at the end of a backup of 20,000 tables, 70,000 pending blobs.
 */
const MAX_PACK_ENTRIES = 8192
/**
 * Blob references a session tracks one by one until a record it writes lists them in `blobRefs`; past this many it
 * only remembers which packs it used (a backup, whose record lists few of its blobs, gets there quickly).
 */
const MAX_TRACKED_REFERENCES = 10_000

/** Result of putting a blob. */
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

export interface BlobStoreOptions {
  storage: Storage
  codec: BlobCodec
  keys: RepoKeys | undefined
  index: LoadedIndex
  /** Index objects are written through it (under the repository's lock). */
  guard: GuardedWrite
  packTargetBytes: number
  /** Packs queued or uploading at once before a put waits. */
  maxPackUploads: number
}

export class BlobStore {
  readonly #storage: Storage
  readonly #codec: BlobCodec
  readonly #keys: RepoKeys | undefined
  readonly #index: LoadedIndex
  readonly #guard: GuardedWrite
  readonly #packTargetBytes: number
  readonly #uploader: PackUploader
  readonly #pending = new PendingBlobs()
  /** The open pack of each type, and its blobs in #pending. */
  readonly #builders: Record<BlobType, { builder: PackBuilder; pending: PendingPack } | undefined> = { data: undefined, meta: undefined }
  /**
   * The buffer of a pack whose upload ended, for the next pack builder (memory already touched: no page faults).
   * Only on local storage: an object store's client could still be sending bytes of an abandoned attempt.
   */
  #spareBuffer: Buffer | undefined
  readonly #awaitingIndex: IndexPack[] = []
  #awaitingIndexEntries = 0
  #indexWriting: Promise<void> = Promise.resolve()
  #lastIndexCommit = Date.now()
  #flushing: Promise<void> = Promise.resolve()
  /** Packs this session wrote (durable): a blob located in one is present though its pack was listed before. */
  readonly #packsWritten = new Set<string>()
  readonly #stats: SessionStats = { blobsPut: 0, blobsStored: 0, plainBytesStored: 0, storedBytes: 0, packsWritten: 0, indexObjectsWritten: 0 }
  /** Packs sealed by this session and not yet listed in an index object it wrote (uploading or uploaded). */
  readonly #unindexedPacks = new Set<string>()
  /**
   * Blob ids this session took a reference to (put, found by a dedup lookup, or checked with `has`) that no record it
   * wrote lists yet: it may still write them into a record (docs/repository-format.md §10a). Undefined once more
   * than MAX_TRACKED_REFERENCES were open at once: from then on every pack the session used counts.
   */
  #openReferences: Set<string> | undefined = new Set()

  constructor(o: BlobStoreOptions) {
    this.#storage = o.storage
    this.#codec = o.codec
    this.#keys = o.keys
    this.#index = o.index
    this.#guard = o.guard
    this.#packTargetBytes = o.packTargetBytes
    this.#uploader = new PackUploader(o.storage, o.maxPackUploads, (pack) => this.#onPackDurable(pack))
  }

  /** What this session has written. */
  get stats(): Readonly<SessionStats> {
    return { ...this.#stats }
  }

  /**
   * True when the blob was put in this session (possibly not yet durable: see `flush`) or is indexed in a pack that
   * garbage collection has not condemned: the caller may reference it, and this session counts the reference as
   * taken until a record it writes lists the blob.
   */
  has(id: BlobId): boolean {
    assertBlobId(id)
    const idBytes = Buffer.from(id, 'hex')
    const found = this.#pending.has(idBytes) || this.#index.getLive(idBytes) !== undefined
    if (found) this.#took(id)
    return found
  }

  /** True when the blob is indexed (condemned packs included) or was put in this session; takes no reference. */
  isKnown(id: BlobId): boolean {
    assertBlobId(id)
    const idBytes = Buffer.from(id, 'hex')
    return this.#pending.has(idBytes) || this.#index.has(idBytes)
  }

  /** A record listing these blobs was written: the references to them are recorded. */
  settle(ids: readonly BlobId[]): void {
    if (!this.#openReferences) return
    for (const id of ids) this.#openReferences.delete(id)
  }

  /**
   * True when this session may still write a record referencing a blob stored in one of `packs`: it wrote one of
   * them and has not indexed it yet, or it holds an open reference to a blob located there (or, past the tracking
   * limit, it ever used one of them). Garbage collection deletes no pack a live session may still reference.
   */
  mayReference(packs: ReadonlySet<string>): boolean {
    for (const p of this.#unindexedPacks) if (packs.has(p)) return true
    if (!this.#openReferences) {
      for (const p of packs) if (this.#index.isUsed(p)) return true
      return false
    }
    for (const id of this.#openReferences) {
      const idBytes = Buffer.from(id, 'hex')
      if (this.#pending.has(idBytes)) continue // not durable yet: its pack is unindexed (above) or still being built
      const loc = this.#index.get(idBytes)
      // Not found at all: it was found before, so the index changed under it; assume the worst.
      if (!loc || packs.has(loc.packId)) return true
    }
    return false
  }

  #took(id: BlobId): void {
    if (!this.#openReferences) return
    this.#openReferences.add(id)
    if (this.#openReferences.size > MAX_TRACKED_REFERENCES) this.#openReferences = undefined
  }

  /** True when this session wrote pack `packId` (and it is durable). */
  wrotePack(packId: string): boolean {
    return this.#packsWritten.has(packId)
  }

  /** Where blob `id` is stored, or undefined when it is not indexed (blobs not yet flushed are not located). */
  locate(id: BlobId): BlobLocation | undefined {
    assertBlobId(id)
    return this.#index.get(Buffer.from(id, 'hex'))
  }

  /**
   * Stores `bytes` as a blob of `type` unless a blob with the same id exists or was put in this session. The
   * bytes are copied before this returns, so the caller may reuse its buffer. Waits when the upload pipeline is
   * full (backpressure). The blob is durable once a later `flush()` resolves.
   */
  async put(type: BlobType, bytes: Uint8Array, o: { signal?: AbortSignal; compress?: boolean } = {}): Promise<PutBlobResult> {
    assertBlobType(type)
    o.signal?.throwIfAborted()
    if (bytes.length > MAX_BLOB_BYTES) {
      throw new UsageError(`blob of ${bytes.length} bytes is larger than the limit of ${MAX_BLOB_BYTES}`, {
        hint: 'cut content into blobs of about 1 MiB (this is a bug in the caller)',
      })
    }
    this.#uploader.throwIfFailed()
    this.#stats.blobsPut++
    // A copy from Buffer's shared pool: the hash's own buffer is a separate allocation of about 200 bytes with its
    // bookkeeping, and a new blob's id stays in memory until its pack is indexed (tens of thousands for many files).
    const idBytes = Buffer.from(this.#codec.idOf(bytes))
    const id = idBytes.toString('hex')
    this.#took(id)
    // A copy in a condemned pack does not count: garbage collection is deleting it, so the blob is stored again.
    if (this.#pending.has(idBytes) || this.#index.getLive(idBytes) !== undefined) return { id, stored: false }
    // Everything from the check above to the add in #addBlob is synchronous, so concurrent puts of equal content
    // store it once.
    const { stored, flags } = this.#codec.encode(bytes, o.compress ?? true)
    return this.#addBlob(type, id, idBytes, stored, flags, bytes.length, o.signal)
  }

  /**
   * Stores a blob whose id and stored bytes were computed elsewhere (worker threads of the backup engine, with
   * this repository's keys and compression level and the same codec as `putBlob`), unless a blob with the same id
   * exists or was put in this session. `stored` is copied before the call returns (before its first await), so the
   * caller may reuse its buffer at once. Waits like `putBlob` when the upload pipeline is full.
   *
   * The id cannot be checked here without the plain bytes; every read re-hashes what it decodes (invariant 3),
   * so a wrong id is an integrity error at the first read, never wrong bytes.
   */
  async putEncoded(type: BlobType, id: BlobId, stored: Buffer, flags: number, plainLength: number, o: { signal?: AbortSignal } = {}): Promise<PutBlobResult> {
    assertBlobType(type)
    assertBlobId(id)
    o.signal?.throwIfAborted()
    if (!Number.isSafeInteger(plainLength) || plainLength < 0 || plainLength > MAX_BLOB_BYTES) {
      throw new UsageError(`invalid plain length ${plainLength} of blob '${id}'`, {
        hint: `a blob holds 0 to ${MAX_BLOB_BYTES} bytes (this is a bug in the caller)`,
      })
    }
    // What decode will insist on, checked now so a caller's mistake fails here rather than at restore.
    const bodyBytes = stored.length - (this.#keys ? SEAL_OVERHEAD_BYTES : 0)
    if ((flags & ~KNOWN_BLOB_FLAGS) !== 0 || bodyBytes < 0 || ((flags & BlobFlags.ZSTD) === 0 && bodyBytes !== plainLength)) {
      throw new UsageError(`encoded blob '${id}' has flags ${flags} and ${stored.length} stored bytes for ${plainLength} plain bytes`, {
        hint: "encode blobs with this repository's codec (this is a bug in the caller)",
      })
    }
    this.#uploader.throwIfFailed()
    this.#stats.blobsPut++
    const idBytes = Buffer.from(id, 'hex')
    this.#took(id)
    if (this.#pending.has(idBytes) || this.#index.getLive(idBytes) !== undefined) return { id, stored: false }
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
    // A blob that would overflow the open pack's buffer starts the next pack (see PackBuilder.fits).
    if (this.#builders[type]?.builder.fits(stored.length) === false) this.#sealBuilder(type)
    let open = this.#builders[type]
    if (!open) {
      const builder = new PackBuilder(type, this.#packTargetBytes, this.#spareBuffer)
      this.#spareBuffer = undefined
      open = this.#builders[type] = { builder, pending: this.#pending.start() }
    }
    const { builder } = open
    const { entry, buffer } = builder.add(idBytes, flags, stored, plainLength)
    this.#pending.add(open.pending, entry, buffer)
    this.#stats.blobsStored++
    this.#stats.plainBytesStored += plainLength
    this.#stats.storedBytes += stored.length
    if (builder.startedAt === 0) builder.startedAt = Date.now()
    // Full packs are sealed; so are old ones, so that a slow writer that dies loses at most a few seconds of work.
    if (builder.sizeBytes >= this.#packTargetBytes || builder.count >= MAX_PACK_ENTRIES || Date.now() - builder.startedAt >= PACK_SEAL_INTERVAL_MS) {
      this.#sealBuilder(type)
    }

    await this.#uploader.waitForRoom(signal)
    // Index durable packs once INDEX_COMMIT_ENTRIES of their blobs wait, and at least every INDEX_COMMIT_INTERVAL_MS:
    // a writer that dies (SIGKILL) then leaves its uploaded blobs findable, so running it again does not store them
    // twice.
    if (
      this.#awaitingIndexEntries >= INDEX_COMMIT_ENTRIES ||
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
  async read(id: BlobId, o: { signal?: AbortSignal } = {}): Promise<Buffer> {
    assertBlobId(id)
    const idBytes = Buffer.from(id, 'hex')
    const pending = this.#pending.get(idBytes)
    if (pending?.bytes) {
      const e = pending.entry
      // A copy: the stored bytes are part of a pack still to be uploaded, and a plain, uncompressed blob would
      // otherwise come back as a view the caller could write into.
      const stored = Buffer.from(pending.bytes.subarray(e.offset, e.offset + e.storedLength))
      return this.#codec.decode(stored, e.flags, e.plainLength, idBytes, `blob '${id}' (not yet flushed)`)
    }
    const found = pending ? pending.entry : this.#index.get(idBytes)
    if (!found) {
      if (this.#index.damaged.length > 0) {
        throw new IntegrityError(
          `blob '${id}' is not in the index, and index object ${this.#index.damaged.map((d) => `'${d.object}'`).join(', ')} is damaged`,
          { hint: "the blob may be listed in the damaged index object; run 'pgkeep verify', then rebuild the index from the packs" },
        )
      }
      throw new NotFoundError(`blob '${id}' is not in repository '${this.#storage.name}'`)
    }
    let loc: BlobLocation = found
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.readAt(id, loc, o)
      } catch (err) {
        if (!isNotFound(err)) throw err
        // Garbage collection may have deleted the pack after copying the blob into another one (repacking, or a
        // duplicate removed): look for it again in the index as it is now.
        const moved: BlobLocation | undefined = attempt === 0 && !pending ? await this.#relocate(idBytes, loc.packId, o.signal) : undefined
        if (!moved) {
          throw new IntegrityError(`pack '${packKey(loc.packId)}' holding blob '${id}' is missing`, {
            cause: err,
            hint: "run 'pgkeep verify' to list every damaged object",
          })
        }
        loc = moved
      }
    }
  }

  /**
   * The plain bytes of blob `id` read from `loc`, verified. A missing pack rejects with the storage's NotFoundError;
   * a short read or bytes that do not verify with an IntegrityError naming the blob and its pack.
   */
  async readAt(id: BlobId, loc: BlobLocation, o: { signal?: AbortSignal } = {}): Promise<Buffer> {
    const name = packKey(loc.packId)
    const stored = await readObject(this.#storage, name, { offset: loc.offset, length: loc.storedLength, signal: o.signal, immutable: true })
    const where = `blob '${id}' in pack '${name}'`
    if (stored.length !== loc.storedLength) {
      throw new IntegrityError(`${where} is truncated: read ${stored.length} of ${loc.storedLength} bytes at offset ${loc.offset}`, {
        hint: "run 'pgkeep verify' to list every damaged object",
      })
    }
    return this.#codec.decode(stored, loc.flags, loc.plainLength, Buffer.from(id, 'hex'), where)
  }

  /** Reloads the index without pack `missing` and returns the blob's location if it now lies elsewhere. */
  async #relocate(idBytes: Buffer, missing: string, signal: AbortSignal | undefined): Promise<BlobLocation | undefined> {
    await this.#index.reloadWithout(missing, signal)
    const loc = this.#index.get(idBytes)
    return loc && loc.packId !== missing ? loc : undefined
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
    const open = this.#builders[type]
    if (!open || open.builder.count === 0) return
    this.#builders[type] = undefined
    let pack = open.builder.seal(this.#keys)
    // Byte for byte a pack garbage collection condemned (plain repositories only): write another one.
    while (this.#index.isCondemned(pack.packId)) pack = resealWithFiller(pack, type, this.#codec, this.#keys)
    this.#unindexedPacks.add(pack.packId)
    // Pending blobs are read from the sealed bytes (the builder's buffer, or another if it grew meanwhile).
    this.#pending.sealed(open.pending, pack.packId, pack.bytes)
    this.#uploader.submit(pack)
  }

  #onPackDurable(pack: SealedPack): void {
    this.#stats.packsWritten++
    this.#packsWritten.add(pack.packId)
    this.#pending.durable(pack.packId)
    // Nothing refers to the pack's bytes any more: the pending blobs' reference to them was just dropped.
    if (!this.#storage.features.remote) this.#spareBuffer = Buffer.from(pack.bytes.buffer)
    this.#awaitingIndex.push({ packId: pack.packId, entries: pack.entries })
    this.#awaitingIndexEntries += pack.entries.length
  }

  /** Writes one index object per MAX_INDEX_ENTRIES entries of durable packs, then commits them to the index. */
  #writeIndex(signal: AbortSignal | undefined): Promise<void> {
    const run = this.#indexWriting
      .catch(() => {})
      .then(async () => {
        while (this.#awaitingIndex.length > 0) {
          const batch: IndexPack[] = []
          let n = 0
          while (this.#awaitingIndex.length > 0 && (batch.length === 0 || n + this.#awaitingIndex[0]!.entries.length <= MAX_INDEX_ENTRIES)) {
            const p = this.#awaitingIndex.shift()!
            batch.push(p)
            n += p.entries.length
          }
          const { id, bytes } = encodeIndex({ supersedes: [], packs: batch }, this.#keys)
          try {
            await this.#guard((s) => this.#storage.write(indexKey(id), bytes, { ifAbsent: true, collisionFree: true, signal: s }), signal)
          } catch (err) {
            if (!isAlreadyExists(err)) {
              this.#awaitingIndex.unshift(...batch)
              throw err
            }
          }
          this.#awaitingIndexEntries -= n
          this.#stats.indexObjectsWritten++
          this.#index.committed(id, batch)
          for (const p of batch) {
            this.#index.markUsed(p.packId)
            this.#unindexedPacks.delete(p.packId)
            this.#pending.indexed(p.packId)
          }
        }
      })
    this.#indexWriting = run
    return run
  }
}
