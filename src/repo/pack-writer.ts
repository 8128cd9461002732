// Building packs and uploading them: a PackBuilder collects stored blobs up to the target size and seals them with
// their trailing header; a PackUploader writes sealed packs with at most `maxUploads` in flight and a bounded queue,
// so producers wait (backpressure) instead of piling packs up in memory.

import { randomBytes } from 'node:crypto'
import type { Storage } from '../storage/storage.js'
import type { BlobCodec, BlobType } from './blob.js'
import { sha256Hex, type RepoKeys } from './crypto.js'
import { packKey } from './layout.js'
import { encodePackHeader, encodePackTrailer, type PackEntry, packTailBytes } from './pack-format.js'
import { isAlreadyExists } from './storage-io.js'

/** A pack ready to upload: its id is the SHA-256 of `bytes`. */
export interface SealedPack {
  readonly packId: string
  /** A view over the start of the builder's buffer (see PackBuilder: the buffer may be handed to the next pack). */
  readonly bytes: Buffer
  readonly entries: readonly PackEntry[]
}

/** Room a new pack buffer has beyond the pack target: the blob that crosses the target, and the header. */
const PACK_BUFFER_SLACK_BYTES = 2 * 1024 * 1024
/** A new pack buffer is at most this large at first (a larger target grows it as blobs come). */
const MAX_INITIAL_PACK_BUFFER_BYTES = 64 * 1024 * 1024

/**
 * Collects the stored bytes of blobs of one type, in order, until sealed. Blobs are copied into one buffer as they
 * come and the header and trailer are appended to it, so sealing copies nothing: joining a 16 MiB pack's pieces into
 * fresh memory was a tenth of a full backup's CPU (page faults of the new memory, then the copy).
 */
export class PackBuilder {
  readonly type: BlobType
  /** When the first blob was added (Date.now()), or 0 while empty. */
  startedAt = 0
  readonly #entries: PackEntry[] = []
  #buffer: Buffer
  #sizeBytes = 0

  /**
   * `targetBytes`: the size at which the owner seals the pack (sizes the buffer). `spare`: a buffer of an earlier
   * pack that is no longer used anywhere (its upload ended), reused when large enough: memory already touched.
   */
  constructor(type: BlobType, targetBytes: number, spare?: Buffer) {
    this.type = type
    const wanted = Math.min(targetBytes, MAX_INITIAL_PACK_BUFFER_BYTES) + PACK_BUFFER_SLACK_BYTES
    this.#buffer = spare && spare.length >= wanted ? spare : Buffer.allocUnsafeSlow(wanted)
  }

  /** Bytes of blob data collected so far. */
  get sizeBytes(): number {
    return this.#sizeBytes
  }

  get count(): number {
    return this.#entries.length
  }

  /**
   * Whether a blob of `storedLength` bytes, and then the header and trailer, fit in the buffer as it is. The owner
   * seals a pack before a blob that does not fit: growing the buffer copies the pack into a larger one, and the old
   * one stays alive with it until the upload (blobs pending in it are read from it), which at the end of a backup of
   * 40,000 tables held 10 MiB and 20 MiB buffers for one pack of file list chunks and manifest pieces.
   */
  fits(storedLength: number): boolean {
    return this.#sizeBytes + storedLength + packTailBytes(this.#entries.length + 1) <= this.#buffer.length
  }

  /**
   * Appends a copy of `stored` (the caller keeps its buffer). Returns the entry and the buffer the copy lies in at
   * the entry's offset, valid as long as the pack is pending (the owner re-points it at the sealed bytes).
   */
  add(id: Buffer, flags: number, stored: Uint8Array, plainLength: number): { entry: PackEntry; buffer: Buffer } {
    const entry: PackEntry = { id, type: this.type, flags, offset: this.#sizeBytes, storedLength: stored.length, plainLength }
    this.#append(stored)
    this.#entries.push(entry)
    return { entry, buffer: this.#buffer }
  }

  /** Appends header and trailer and names the pack by the SHA-256 of its bytes. The builder is done after this. */
  seal(keys: RepoKeys | undefined): SealedPack {
    const header = encodePackHeader(this.#entries, keys)
    this.#append(header)
    this.#append(encodePackTrailer(header.length))
    const bytes = this.#buffer.subarray(0, this.#sizeBytes)
    return { packId: sha256Hex(bytes), bytes, entries: this.#entries }
  }

  #append(piece: Uint8Array): void {
    const end = this.#sizeBytes + piece.length
    if (end > this.#buffer.length) {
      // Rare (a pack target above the initial size, or a pack of many tiny blobs with a long header). Buffers handed
      // out before stay valid, holding the same bytes at the same offsets: the old one is never written again.
      const grown = Buffer.allocUnsafeSlow(Math.max(end, this.#buffer.length * 2))
      this.#buffer.copy(grown, 0, 0, this.#sizeBytes)
      this.#buffer = grown
    }
    this.#buffer.set(piece, this.#sizeBytes)
    this.#sizeBytes = end
  }
}

/**
 * The same blobs as `pack` plus one filler blob of random bytes, sealed anew: a pack with another id. In a plain
 * repository a pack's bytes, and so its id, follow from its blobs alone; a writer that stores again exactly the
 * blobs of a pack garbage collection has condemned must not write that very pack (it is about to be deleted), so
 * it writes this one instead. The filler is referenced by nothing: the next gc removes it with the rest.
 */
export function resealWithFiller(pack: SealedPack, type: BlobType, codec: BlobCodec, keys: RepoKeys | undefined): SealedPack {
  const builder = new PackBuilder(type, pack.bytes.length)
  for (const e of pack.entries) builder.add(e.id, e.flags, pack.bytes.subarray(e.offset, e.offset + e.storedLength), e.plainLength)
  const filler = randomBytes(32)
  const { stored, flags } = codec.encode(filler, false)
  builder.add(codec.idOf(filler), flags, stored, filler.length)
  return builder.seal(keys)
}

/**
 * Uploads sealed packs in the background, at most `maxUploads` at once. `waitForRoom` resolves once fewer than
 * `maxUploads` packs are queued or uploading. The first failure is kept and rethrown by every later call: after it,
 * this session of the repository cannot write any more (its pending blobs are lost; the repository stays sound).
 */
export class PackUploader {
  readonly #storage: Storage
  readonly #maxUploads: number
  readonly #onUploaded: (pack: SealedPack) => void
  readonly #queue: SealedPack[] = []
  #uploading = 0
  #failure: { error: unknown } | undefined
  #waiters: (() => void)[] = []

  constructor(storage: Storage, maxUploads: number, onUploaded: (pack: SealedPack) => void) {
    this.#storage = storage
    this.#maxUploads = Math.max(1, maxUploads)
    this.#onUploaded = onUploaded
  }

  /** Throws the first upload failure, if any. */
  throwIfFailed(): void {
    if (this.#failure) throw this.#failure.error
  }

  /** Number of packs queued or uploading. */
  get pendingCount(): number {
    return this.#queue.length + this.#uploading
  }

  /** Queues a pack for upload; never waits (call `waitForRoom` for backpressure). */
  submit(pack: SealedPack): void {
    this.throwIfFailed()
    this.#queue.push(pack)
    this.#pump()
  }

  /**
   * Resolves when fewer than `maxUploads` packs are queued or uploading, so the next pack can be sealed without
   * exceeding them (each holds its pack's buffer); rejects on failure or abort.
   */
  async waitForRoom(signal?: AbortSignal): Promise<void> {
    while (this.pendingCount >= this.#maxUploads) await this.#changed(signal)
    this.throwIfFailed()
  }

  /** Resolves when every submitted pack is durable; rejects with the first failure. */
  async drain(signal?: AbortSignal): Promise<void> {
    while (this.pendingCount > 0 && !this.#failure) await this.#changed(signal)
    this.throwIfFailed()
  }

  #pump(): void {
    while (this.#uploading < this.#maxUploads && this.#queue.length > 0 && !this.#failure) {
      const pack = this.#queue.shift()!
      this.#uploading++
      this.#upload(pack).then(
        () => {
          this.#uploading--
          this.#onUploaded(pack)
          this.#notify()
        },
        (error: unknown) => {
          this.#uploading--
          this.#failure ??= { error }
          this.#queue.length = 0
          this.#notify()
        },
      )
    }
  }

  async #upload(pack: SealedPack): Promise<void> {
    try {
      // No signal: a pack is shared by every caller that put a blob in it; aborting one caller must not lose it.
      await this.#storage.write(packKey(pack.packId), pack.bytes, { ifAbsent: true, collisionFree: true })
    } catch (err) {
      // The name is the content hash: an existing object with this name holds these very bytes.
      if (!isAlreadyExists(err)) throw err
    }
  }

  #notify(): void {
    this.#pump()
    const waiters = this.#waiters
    this.#waiters = []
    for (const w of waiters) w()
  }

  #changed(signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason)
      const onAbort = () => reject(signal!.reason)
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#waiters.push(() => {
        signal?.removeEventListener('abort', onAbort)
        resolve()
      })
    })
  }
}
