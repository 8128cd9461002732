// The in-memory blob index: blob id → pack, offset, lengths, type, flags. An open-addressing hash table over typed
// arrays (about 60–110 bytes per blob, no per-entry JS objects), because a 1 TB repository holds a million blobs
// and a Map of hex strings to objects costs ~3x that and burdens the GC (measurements in docs/repository-format.md §8).

import type { BlobType } from './blob.js'
import { BLOB_TYPE_CODE, blobTypeOfCode } from './blob.js'
import type { PackEntry } from './pack-format.js'

/** Where one blob is stored. */
export interface BlobLocation {
  readonly packId: string
  readonly type: BlobType
  readonly flags: number
  readonly offset: number
  readonly storedLength: number
  readonly plainLength: number
}

/** Entries room is first made for, by default. */
const INITIAL_CAPACITY = 1024

/**
 * A set of blob locations keyed by 32-byte id. Adding an id twice (two writers stored the same blob, or an index was
 * rebuilt beside an old one, or gc repacked it) keeps exactly one location, chosen independently of the order of
 * adds: a copy in a pack that is not condemned (garbage collection is about to delete it) before one that is, then
 * the one in the smallest pack id, then the smallest offset. `duplicates` counts the others.
 *
 * Packs can be marked condemned (`setCondemned`): lookups for a new reference (`getLive`) then skip blobs located
 * there, while plain lookups (`get`, for reading) still find them. Packs can be marked used: this session referenced
 * a blob there (docs/repository-format.md §10a).
 */
export class BlobIndex {
  #count = 0
  #capacity = 0
  #ids = new Uint8Array(0)
  #pack = new Uint32Array(0)
  #offset = new Uint32Array(0)
  #stored = new Uint32Array(0)
  #plain = new Uint32Array(0)
  /** type code in the high nibble, flags in the low nibble */
  #meta = new Uint8Array(0)
  /** slot → entry number + 1 (0 = empty); length is a power of two at most half full */
  #table = new Uint32Array(0)
  readonly #packIds: string[] = []
  readonly #packNumbers = new Map<string, number>()
  #duplicates = 0
  /** Per pack number: 1 when the pack is condemned. */
  #condemned = new Uint8Array(64)
  #condemnedIds: ReadonlySet<string> = new Set()
  /** Per pack number: 1 when this session took a reference to a blob located there. */
  #used = new Uint8Array(64)
  readonly #initialCapacity: number

  /**
   * `initialCapacity`: entries room is first made for, then grown by half as needed (rounded up to a power of two:
   * the slot table's size is one).
   */
  constructor(initialCapacity = INITIAL_CAPACITY) {
    this.#initialCapacity = 2 ** Math.ceil(Math.log2(Math.max(1, initialCapacity)))
  }

  /** Number of distinct blob ids. */
  get size(): number {
    return this.#count
  }

  /** Number of adds that named an id already present (extra copies in the repository). */
  get duplicates(): number {
    return this.#duplicates
  }

  /** Number of distinct packs referenced by added entries (including packs whose entries all lost to duplicates). */
  get packCount(): number {
    return this.#packIds.length
  }

  /** Adds one entry of pack `packId`. */
  add(packId: string, e: PackEntry): void {
    const packNo = this.#packNumber(packId)
    const found = this.#find(e.id)
    if (found >= 0) {
      this.#duplicates++
      const oldNo = this.#pack[found]!
      const oldPack = this.#packIds[oldNo]!
      const oldCondemned = this.#condemned[oldNo]!
      const newCondemned = this.#condemned[packNo]!
      const keepOld = oldCondemned !== newCondemned ? newCondemned === 1 : oldPack < packId || (oldPack === packId && this.#offset[found]! <= e.offset)
      if (!keepOld) this.#write(found, packNo, e)
      return
    }
    if (this.#count === this.#capacity) this.#grow()
    if ((this.#count + 1) * 2 > this.#table.length) this.#rehash(Math.max(this.#table.length * 2, this.#initialCapacity * 2))
    const n = this.#count++
    this.#ids.set(e.id.subarray(0, 32), n * 32)
    this.#write(n, packNo, e)
    this.#insertSlot(n)
  }

  /** Adds every entry of another index (used to commit a session's entries). */
  addAll(other: BlobIndex): void {
    for (const [packId, e] of other.entries()) this.add(packId, e)
  }

  has(id: Uint8Array): boolean {
    return this.#find(id) >= 0
  }

  get(id: Uint8Array): BlobLocation | undefined {
    const n = this.#find(id)
    return n < 0 ? undefined : this.#location(n)
  }

  /**
   * Where blob `id` is, for a new reference to it: undefined when it is not indexed or lies in a condemned pack.
   * A hit marks its pack used.
   */
  getLive(id: Uint8Array): BlobLocation | undefined {
    const n = this.#find(id)
    if (n < 0) return undefined
    const packNo = this.#pack[n]!
    if (this.#condemned[packNo] === 1) return undefined
    this.#used[packNo] = 1
    return this.#location(n)
  }

  /** Marks pack `packId` used by this session (it wrote the pack, or took a reference to a blob in it). */
  markUsed(packId: string): void {
    this.#used[this.#packNumber(packId)] = 1
  }

  /** True when this session wrote pack `packId` or took a reference to a blob in it. */
  isUsed(packId: string): boolean {
    const n = this.#packNumbers.get(packId)
    return n !== undefined && this.#used[n] === 1
  }

  /** Packs marked used, by id (to carry them over into a reloaded index). */
  usedPacks(): string[] {
    return this.#packIds.filter((_, n) => this.#used[n] === 1)
  }

  /**
   * Makes exactly the packs in `packIds` condemned (replacing the previous set): blobs located there are skipped by
   * `getLive`, and a copy elsewhere added later wins over them. Locations already chosen are not revisited.
   */
  setCondemned(packIds: ReadonlySet<string>): void {
    this.#condemnedIds = packIds
    for (let n = 0; n < this.#packIds.length; n++) this.#condemned[n] = packIds.has(this.#packIds[n]!) ? 1 : 0
  }

  /** True when pack `packId` is condemned. */
  isCondemned(packId: string): boolean {
    return this.#condemnedIds.has(packId)
  }

  /** True when the index lists pack `packId`. */
  hasPack(packId: string): boolean {
    return this.#packNumbers.has(packId)
  }

  /**
   * The number of entry `id`: dense from 0 to `size` − 1 in the order ids were first added, stable while this index
   * lives (a later copy of the same id keeps the number); −1 when absent. Maintenance passes keep a few bytes per
   * blob in typed arrays indexed by it instead of sets of ids.
   */
  numberOf(id: Uint8Array): number {
    return this.#find(id)
  }

  /** The id of entry number `n` (a copy). */
  idOf(n: number): Buffer {
    return Buffer.from(this.#ids.subarray(n * 32, n * 32 + 32))
  }

  /** The stored length of entry number `n`'s chosen copy. */
  storedLengthOf(n: number): number {
    return this.#stored[n]!
  }

  /** Every entry, in insertion order, as `[packId, entry]`. */
  *entries(): IterableIterator<[string, PackEntry]> {
    for (let n = 0; n < this.#count; n++) {
      const loc = this.#location(n)
      yield [loc.packId, { ...loc, id: Buffer.from(this.#ids.subarray(n * 32, n * 32 + 32)) }]
    }
  }

  /** Approximate bytes held by this index's arrays (for the measurements in the format document). */
  get retainedBytes(): number {
    return this.#ids.byteLength + this.#pack.byteLength * 4 + this.#meta.byteLength + this.#table.byteLength + this.#packIds.length * 160
  }

  #packNumber(packId: string): number {
    let packNo = this.#packNumbers.get(packId)
    if (packNo !== undefined) return packNo
    packNo = this.#packIds.length
    this.#packIds.push(packId)
    this.#packNumbers.set(packId, packNo)
    if (packNo >= this.#condemned.length) {
      const grow = (a: Uint8Array) => {
        const next = new Uint8Array(a.length * 2)
        next.set(a)
        return next
      }
      this.#condemned = grow(this.#condemned)
      this.#used = grow(this.#used)
    }
    this.#condemned[packNo] = this.#condemnedIds.has(packId) ? 1 : 0
    return packNo
  }

  #location(n: number): BlobLocation {
    const meta = this.#meta[n]!
    return {
      packId: this.#packIds[this.#pack[n]!]!,
      type: blobTypeOfCode(meta >> 4)!,
      flags: meta & 0x0f,
      offset: this.#offset[n]!,
      storedLength: this.#stored[n]!,
      plainLength: this.#plain[n]!,
    }
  }

  #write(n: number, packNo: number, e: PackEntry): void {
    this.#pack[n] = packNo
    this.#offset[n] = e.offset
    this.#stored[n] = e.storedLength
    this.#plain[n] = e.plainLength
    this.#meta[n] = (BLOB_TYPE_CODE[e.type] << 4) | (e.flags & 0x0f)
  }

  /** Ids are SHA-256 or HMAC outputs, so their first four bytes are already a uniform hash. */
  #hash(id: Uint8Array): number {
    return (id[0]! | (id[1]! << 8) | (id[2]! << 16) | (id[3]! << 24)) >>> 0
  }

  #find(id: Uint8Array): number {
    const table = this.#table
    if (table.length === 0 || id.length !== 32) return -1
    const mask = table.length - 1
    const ids = this.#ids
    for (let slot = this.#hash(id) & mask; ; slot = (slot + 1) & mask) {
      const v = table[slot]!
      if (v === 0) return -1
      const n = v - 1
      const base = n * 32
      let i = 0
      while (i < 32 && ids[base + i] === id[i]) i++
      if (i === 32) return n
    }
  }

  #insertSlot(n: number): void {
    const table = this.#table
    const mask = table.length - 1
    let slot = this.#hash(this.#ids.subarray(n * 32, n * 32 + 4)) & mask
    while (table[slot] !== 0) slot = (slot + 1) & mask
    table[slot] = n + 1
  }

  #rehash(size: number): void {
    this.#table = new Uint32Array(size)
    for (let n = 0; n < this.#count; n++) this.#insertSlot(n)
  }

  #grow(): void {
    // Grow by half, not double: the arrays of a million-blob index are ~50 MB and are copied on growth.
    const cap = Math.max(this.#initialCapacity, Math.ceil(this.#capacity * 1.5))
    const grow = <T extends Uint8Array | Uint32Array>(old: T, make: (n: number) => T, per = 1): T => {
      const next = make(cap * per)
      next.set(old)
      return next
    }
    this.#ids = grow(this.#ids, (n) => new Uint8Array(n), 32)
    this.#pack = grow(this.#pack, (n) => new Uint32Array(n))
    this.#offset = grow(this.#offset, (n) => new Uint32Array(n))
    this.#stored = grow(this.#stored, (n) => new Uint32Array(n))
    this.#plain = grow(this.#plain, (n) => new Uint32Array(n))
    this.#meta = grow(this.#meta, (n) => new Uint8Array(n))
    this.#capacity = cap
  }
}
