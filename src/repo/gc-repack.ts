// Repacking: the live blobs of packs that hold mostly garbage are copied, stored bytes unchanged (same keys, same
// compression) after a full check, into new packs; an index object for the new packs is written before anything
// else happens, so that the old packs can then be condemned like dead ones (docs/repository-format.md §10a).

import type { Storage } from '../storage/storage.js'
import { BlobCodec, type BlobType } from './blob.js'
import type { RepoKeys } from './crypto.js'
import { encodeIndex, type IndexPack, MAX_INDEX_ENTRIES } from './index-file.js'
import { indexKey, packKey } from './layout.js'
import type { PackEntry } from './pack-format.js'
import { readPackBytes } from './pack-reader.js'
import { PackBuilder, resealWithFiller, type SealedPack } from './pack-writer.js'
import { isAlreadyExists } from './storage-io.js'

/** Runs a write that makes something visible under gc's lock (RepoLock.runHeld). */
export type HeldWrite = <T>(write: (signal: AbortSignal) => Promise<T>) => Promise<T>

export interface RepackerOptions {
  storage: Storage
  keys: RepoKeys | undefined
  packTargetBytes: number
  held: HeldWrite
  /** True for pack ids that exist already: a new pack must not coincide with one (it may be condemned). */
  exists(packId: string): boolean
  signal?: AbortSignal
}

/** What repacking wrote. */
export interface RepackResult {
  readonly packsWritten: number
  readonly bytesWritten: number
  readonly blobsCopied: number
  readonly indexObjects: readonly string[]
  readonly indexBytes: number
  /** Ids of the packs written. */
  readonly packIds: readonly string[]
}

/** Copies blobs into new packs; `finish` uploads the last ones and indexes them all. */
export class Repacker {
  readonly #o: RepackerOptions
  readonly #codec: BlobCodec
  readonly #builders: Record<BlobType, PackBuilder | undefined> = { data: undefined, meta: undefined }
  readonly #written: IndexPack[] = []
  #bytesWritten = 0
  #blobsCopied = 0

  constructor(o: RepackerOptions) {
    this.#o = o
    this.#codec = new BlobCodec(o.keys, undefined)
  }

  /**
   * Copies `entries` (blobs of pack `packId`) into the packs being built. Every blob is decoded and checked
   * against its id first; if one fails (or the pack is missing), nothing of the pack is copied and the reason is
   * returned: the pack then stays as it is.
   */
  async copy(packId: string, entries: readonly PackEntry[]): Promise<string | undefined> {
    let bytes: Buffer
    try {
      bytes = await readPackBytes(this.#o.storage, packId, { signal: this.#o.signal })
    } catch (err) {
      if (this.#o.signal?.aborted) throw err
      return (err as Error).message
    }
    const name = packKey(packId)
    const checked: { e: PackEntry; stored: Buffer }[] = []
    for (const e of entries) {
      const stored = bytes.subarray(e.offset, e.offset + e.storedLength)
      try {
        if (stored.length !== e.storedLength) throw new Error(`blob '${e.id.toString('hex')}' is cut short`)
        this.#codec.decode(stored, e.flags, e.plainLength, e.id, `blob '${e.id.toString('hex')}' in pack '${name}'`)
      } catch (err) {
        return (err as Error).message
      }
      checked.push({ e, stored })
    }
    for (const { e, stored } of checked) {
      let builder = this.#builders[e.type]
      if (!builder) builder = this.#builders[e.type] = new PackBuilder(e.type, this.#o.packTargetBytes)
      // The builder copies the bytes, so the pack read here is freed once this pack is done.
      builder.add(e.id, e.flags, stored, e.plainLength)
      this.#blobsCopied++
      if (builder.sizeBytes >= this.#o.packTargetBytes) await this.#seal(e.type)
    }
    return undefined
  }

  /** Uploads what remains and writes index objects for every pack written; resolves with what was written. */
  async finish(): Promise<RepackResult> {
    await this.#seal('data')
    await this.#seal('meta')
    const indexObjects: string[] = []
    let indexBytes = 0
    for (let i = 0; i < this.#written.length; ) {
      const batch: IndexPack[] = []
      let n = 0
      while (i < this.#written.length && (batch.length === 0 || n + this.#written[i]!.entries.length <= MAX_INDEX_ENTRIES)) {
        n += this.#written[i]!.entries.length
        batch.push(this.#written[i++]!)
      }
      const { id, bytes } = encodeIndex({ supersedes: [], packs: batch }, this.#o.keys)
      await this.#o.held(async (signal) => {
        try {
          await this.#o.storage.write(indexKey(id), bytes, { ifAbsent: true, collisionFree: true, signal })
        } catch (err) {
          if (!isAlreadyExists(err)) throw err
        }
      })
      indexObjects.push(id)
      indexBytes += bytes.length
    }
    return {
      packsWritten: this.#written.length,
      bytesWritten: this.#bytesWritten,
      blobsCopied: this.#blobsCopied,
      indexObjects,
      indexBytes,
      packIds: this.#written.map((p) => p.packId),
    }
  }

  async #seal(type: BlobType): Promise<void> {
    const builder = this.#builders[type]
    if (!builder || builder.count === 0) return
    this.#builders[type] = undefined
    let pack: SealedPack = builder.seal(this.#o.keys)
    while (this.#o.exists(pack.packId)) pack = resealWithFiller(pack, type, this.#codec, this.#o.keys)
    try {
      await this.#o.storage.write(packKey(pack.packId), pack.bytes, { ifAbsent: true, collisionFree: true, signal: this.#o.signal })
    } catch (err) {
      if (!isAlreadyExists(err)) throw err
    }
    this.#written.push({ packId: pack.packId, entries: pack.entries })
    this.#bytesWritten += pack.bytes.length
  }
}
