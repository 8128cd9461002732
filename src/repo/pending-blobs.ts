// Blobs a session put whose pack no index object lists yet: the blob store's answer to "was this put already?"
// before the index knows, and where such a blob's bytes are until its pack is uploaded. Kept per pack, each pack's
// blobs in a BlobIndex (typed arrays), because every blob put stays here for seconds: a Map of hex ids to objects
// cost about 160 bytes of JS heap per blob, all of it old enough to be promoted, and a backup of 40,000 small tables
// promoted 50-60 MB that way (bench/results/limits.md). A pack's blobs leave together when its index object is
// written.

import { BlobIndex, type BlobLocation } from './blob-index.js'
import type { PackEntry } from './pack-format.js'

/** A pack whose blobs are pending: being built, uploading, or uploaded and not indexed yet. */
export interface PendingPack {
  readonly blobs: BlobIndex
  /**
   * While the pack is being built or uploaded, the buffer holding it (the blobs' stored bytes lie at their entries'
   * offsets, so a blob can be read before it is durable); undefined once it is durable.
   */
  bytes: Buffer | undefined
  /** Set once the pack is sealed. */
  packId: string | undefined
}

/** A pending blob: where it lies in its pack, and the pack's bytes while it is not durable (else its id is set). */
export interface PendingLocation {
  readonly entry: BlobLocation
  readonly bytes: Buffer | undefined
}

/** The pack id a pending pack's entries carry in its BlobIndex until the real one is known (never read). */
const UNSEALED = ''
/**
 * Entries a pending pack's index makes room for at first: a pack of compressed 1 MiB windows holds a few dozen, and
 * up to 5 s of packs can await their index object, dozens of them on fast storage (BlobIndex's default, 1,024
 * entries, is 57 KB each).
 */
const FIRST_ENTRIES = 64

export class PendingBlobs {
  /**
   * The open pack of each blob type, the packs uploading (two at most, by default), and the uploaded ones awaiting
   * an index object: a handful for small blobs (8,192 to a pack, and as many awaiting start an index object), up to
   * 5 s of packs for large ones. A lookup asks each in turn.
   */
  readonly #packs: PendingPack[] = []

  /** Starts tracking a pack being built (its blobs are added as they come). */
  start(): PendingPack {
    const pack: PendingPack = { blobs: new BlobIndex(FIRST_ENTRIES), bytes: undefined, packId: undefined }
    this.#packs.push(pack)
    return pack
  }

  /**
   * Adds a blob of `pack` whose stored bytes lie at `entry.offset` of `bytes` (the builder's buffer, which may have
   * grown since the pack started). Its id must not be pending already (the store's dedup check comes first).
   */
  add(pack: PendingPack, entry: PackEntry, bytes: Buffer): void {
    pack.blobs.add(UNSEALED, entry)
    pack.bytes = bytes
  }

  /** The pack was sealed as `packId`, its bytes now in `bytes`. */
  sealed(pack: PendingPack, packId: string, bytes: Buffer): void {
    pack.packId = packId
    pack.bytes = bytes
  }

  /** Pack `packId` is durable: its blobs are read from storage from now on. */
  durable(packId: string): void {
    const pack = this.#find(packId)
    if (pack) pack.bytes = undefined
  }

  /** Pack `packId` is listed in a committed index object: its blobs are no longer pending. */
  indexed(packId: string): void {
    const i = this.#packs.findIndex((p) => p.packId === packId)
    if (i >= 0) this.#packs.splice(i, 1)
  }

  has(id: Uint8Array): boolean {
    for (const p of this.#packs) if (p.blobs.has(id)) return true
    return false
  }

  /** Where pending blob `id` is, or undefined when it is not pending. */
  get(id: Uint8Array): PendingLocation | undefined {
    for (const p of this.#packs) {
      const loc = p.blobs.get(id)
      if (!loc) continue
      return { entry: { ...loc, packId: p.packId ?? UNSEALED }, bytes: p.bytes }
    }
    return undefined
  }

  #find(packId: string): PendingPack | undefined {
    return this.#packs.find((p) => p.packId === packId)
  }
}
