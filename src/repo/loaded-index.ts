// The blob index as this process knows it: the entries of every index object loaded, which index objects are
// damaged (and not superseded), loading what other processes wrote since, and rebuilding the whole index from
// the packs' own headers (docs/repository-format.md §7).

import { IntegrityError, NotFoundError } from '../errors.js'
import type { Storage } from '../storage/storage.js'
import type { BlobType } from './blob.js'
import { BlobIndex, type BlobLocation } from './blob-index.js'
import type { RepoKeys } from './crypto.js'
import { decodeIndex, encodeIndex, MAX_INDEX_ENTRIES, type IndexPack } from './index-file.js'
import { INDEX_PREFIX, indexIdOfKey, indexKey, packIdOfKey, packKey, PACKS_PREFIX } from './layout.js'
import { readPackHeader } from './pack-reader.js'
import type { PackEntry } from './pack-format.js'
import { forEachConcurrent, isAlreadyExists, isNotFound, readObject } from './storage-io.js'

const LOAD_CONCURRENCY = 4
/** Listings repeated when index objects vanished between listing and reading (replaced by compaction meanwhile). */
const MAX_RELISTS = 5

/** An object (index object, pack) that is damaged or missing. */
export interface DamagedObject {
  readonly object: string
  readonly message: string
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

/** Runs a write that makes something visible under the repository's guarding lock (see Repository.writeUnder). */
export type GuardedWrite = <T>(write: (signal: AbortSignal | undefined) => Promise<T>, signal: AbortSignal | undefined) => Promise<T>

export class LoadedIndex {
  #index: BlobIndex
  #loadedIds = new Set<string>()
  #damaged: DamagedObject[] = []
  /** Ids of index objects named in `supersedes` of a loaded one: their damage no longer matters. */
  readonly #superseded = new Set<string>()
  /** Packs garbage collection condemned (docs/repository-format.md §10a), as the session last read them. */
  #condemned: ReadonlySet<string> = new Set()
  /** Packs a read found missing: deleted by garbage collection; a reload prefers any other copy. */
  readonly #gone = new Set<string>()
  #reloading: Promise<void> | undefined
  /** While a reload runs: what this process committed meanwhile, replayed into the reloaded index. */
  #commitsDuringReload: { indexId: string; packs: readonly IndexPack[] }[] | undefined

  /**
   * @param types load only entries of these blob types (garbage collection loads `meta` alone and streams the
   *   rest); undefined loads everything
   */
  constructor(
    private readonly storage: Storage,
    private readonly keys: RepoKeys | undefined,
    private readonly types?: ReadonlySet<BlobType>,
  ) {
    this.#index = this.#newIndex()
  }

  /** True when only some blob types are loaded (see the constructor): the index cannot be used to deduplicate. */
  get partial(): boolean {
    return this.types !== undefined
  }

  has(id: Buffer): boolean {
    return this.#index.has(id)
  }

  get(id: Buffer): BlobLocation | undefined {
    return this.#index.get(id)
  }

  /** Where blob `id` is for a new reference: not in a condemned pack; marks the pack used. */
  getLive(id: Buffer): BlobLocation | undefined {
    return this.#index.getLive(id)
  }

  /** Marks a pack this session wrote, or took a reference into, as used. */
  markUsed(packId: string): void {
    this.#index.markUsed(packId)
  }

  isUsed(packId: string): boolean {
    return this.#index.isUsed(packId)
  }

  /** True when garbage collection condemned pack `packId` (as this session last read it), or a read found it gone. */
  isCondemned(packId: string): boolean {
    return this.#condemned.has(packId) || this.#gone.has(packId)
  }

  /** Replaces the set of condemned packs (see BlobIndex.setCondemned). */
  setCondemned(packIds: ReadonlySet<string>): void {
    this.#condemned = packIds
    this.#index.setCondemned(this.#avoided())
  }

  /** The index as loaded now, for passes over blob numbers (see BlobIndex.numberOf); a rebuild replaces it. */
  get current(): BlobIndex {
    return this.#index
  }

  /** Index objects that could not be read at the last load and are not superseded. */
  get damaged(): readonly DamagedObject[] {
    return this.#damaged
  }

  get stats(): { blobs: number; packs: number; duplicates: number; indexObjects: number } {
    return { blobs: this.#index.size, packs: this.#index.packCount, duplicates: this.#index.duplicates, indexObjects: this.#loadedIds.size }
  }

  /** Adds what an index object this process wrote lists. */
  committed(indexId: string, packs: readonly IndexPack[]): void {
    this.#commitsDuringReload?.push({ indexId, packs })
    this.#commitTo(this.#index, this.#loadedIds, indexId, packs)
  }

  #commitTo(index: BlobIndex, loaded: Set<string>, indexId: string, packs: readonly IndexPack[]): void {
    loaded.add(indexId)
    for (const p of packs) for (const e of p.entries) if (!this.types || this.types.has(e.type)) index.add(p.packId, e)
  }

  #newIndex(): BlobIndex {
    const index = new BlobIndex()
    index.setCondemned(this.#avoided())
    return index
  }

  #avoided(): ReadonlySet<string> {
    return this.#gone.size === 0 ? this.#condemned : new Set([...this.#condemned, ...this.#gone])
  }

  /** Loads index objects written since the last load (by other processes), so their blobs dedup and read. */
  async refresh(signal?: AbortSignal): Promise<void> {
    await this.#loadNew(this.#index, this.#loadedIds, signal)
  }

  /**
   * After a read found pack `packId` missing: marks it gone and loads the whole index again (one reload at a time),
   * so that blobs of that pack resolve to the copies garbage collection made before deleting it.
   */
  async reloadWithout(packId: string, signal?: AbortSignal): Promise<void> {
    if (!this.#gone.has(packId)) {
      this.#gone.add(packId)
      this.#reloading = undefined
    }
    this.#reloading ??= (async () => {
      const fresh = this.#newIndex()
      const loaded = new Set<string>()
      this.#commitsDuringReload = []
      await this.#loadNew(fresh, loaded, signal)
      // Synchronous from here to the swap: nothing can be committed to the old index in between.
      for (const c of this.#commitsDuringReload) this.#commitTo(fresh, loaded, c.indexId, c.packs)
      for (const p of this.#index.usedPacks()) fresh.markUsed(p)
      this.#index = fresh
      this.#loadedIds = loaded
    })().finally(() => {
      this.#commitsDuringReload = undefined
      this.#reloading = undefined
    })
    await this.#reloading
  }

  /** Lists index objects and loads those not loaded yet into `index`; lists again when some vanished meanwhile. */
  async #loadNew(index: BlobIndex, loaded: Set<string>, signal: AbortSignal | undefined): Promise<void> {
    for (let listing = 0; ; listing++) {
      const fresh: string[] = []
      for await (const obj of this.storage.list(INDEX_PREFIX, { signal })) {
        const id = indexIdOfKey(obj.key)
        if (id !== undefined && !loaded.has(id)) fresh.push(id)
      }
      const damaged = this.#damaged.filter((d) => !fresh.includes(d.object.slice(INDEX_PREFIX.length)))
      let vanished = false
      await forEachConcurrent(fresh, LOAD_CONCURRENCY, async (id) => {
        const name = indexKey(id)
        let bytes: Buffer
        try {
          bytes = await readObject(this.storage, name, { signal })
        } catch (err) {
          // Superseded and removed by a compaction or rebuild meanwhile: its replacement was written before, and
          // the next listing finds it.
          if (!isNotFound(err)) throw err
          vanished = true
          return
        }
        let content
        try {
          content = decodeIndex(bytes, id, name, this.keys)
        } catch (err) {
          if (!(err instanceof IntegrityError)) throw err
          damaged.push({ object: name, message: err.message })
          return
        }
        for (const s of content.supersedes) this.#superseded.add(s)
        this.#commitTo(index, loaded, id, content.packs)
      })
      this.#damaged = damaged.filter((d) => !this.#superseded.has(d.object.slice(INDEX_PREFIX.length)))
      if (!vanished || listing >= MAX_RELISTS) return
    }
  }

  /**
   * Reads the header of every pack and writes a fresh set of index objects covering all of them, then removes the
   * index objects that existed before (listed in the new ones' `supersedes`). Damaged packs are reported and left
   * out. Safe beside concurrent writers (their new index objects are not removed).
   */
  async rebuild(guard: GuardedWrite, signal?: AbortSignal): Promise<RebuildIndexResult> {
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
    const fresh = this.#newIndex()
    let batch: IndexPack[] = []
    let batchEntries = 0
    const writeBatch = async () => {
      if (batch.length === 0) return
      const { id, bytes } = encodeIndex({ supersedes: old, packs: batch }, this.keys)
      batch = []
      batchEntries = 0
      try {
        await guard((s) => this.storage.write(indexKey(id), bytes, { ifAbsent: true, collisionFree: true, signal: s }), signal)
      } catch (err) {
        if (!isAlreadyExists(err)) throw err
      }
      written.push(id)
    }
    let blobs = 0
    await forEachConcurrent(packs, LOAD_CONCURRENCY, async ({ packId, sizeBytes }) => {
      let entries: PackEntry[]
      try {
        entries = await readPackHeader(this.storage, packId, this.keys, { sizeBytes, signal })
      } catch (err) {
        if (!(err instanceof IntegrityError) && !(err instanceof NotFoundError)) throw err
        problems.push({ object: packKey(packId), message: err.message })
        return
      }
      blobs += entries.length
      for (const e of entries) if (!this.types || this.types.has(e.type)) fresh.add(packId, e)
      batch.push({ packId, entries })
      batchEntries += entries.length
      if (batchEntries >= MAX_INDEX_ENTRIES) await writeBatch()
    })
    await writeBatch()
    const removed = old.filter((id) => !written.includes(id))
    for (const id of removed) await guard((s) => this.storage.remove(indexKey(id), { signal: s }), signal)
    this.#index = fresh
    this.#loadedIds.clear()
    for (const id of written) this.#loadedIds.add(id)
    this.#damaged = []
    for (const id of old) this.#superseded.add(id)
    await this.refresh(signal) // index objects other writers added meanwhile
    return { packs: packs.length - problems.length, blobs, indexObjectsWritten: written, indexObjectsRemoved: removed, problems }
  }
}
