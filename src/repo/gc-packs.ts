// Garbage collection's view of packs and index objects: a table with one row per pack (typed columns, no object per
// pack) filled from the storage listing and from index objects streamed one at a time, never from an in-memory index
// of every blob. A pack listed by several index objects is counted once, at its first listing.

import { IntegrityError } from '../errors.js'
import type { Storage } from '../storage/storage.js'
import type { RepoKeys } from './crypto.js'
import { Column, IdTable } from './id-table.js'
import { decodeIndex, type IndexContent } from './index-file.js'
import { INDEX_PREFIX, indexIdOfKey, indexKey, packIdOfKey, PACKS_PREFIX } from './layout.js'
import { forEachConcurrent, isNotFound, readObject } from './storage-io.js'

/** Flags of a pack row. */
export const PackFlag = {
  /** The storage listing has the pack. */
  IN_STORAGE: 1,
  /** An index object lists it. */
  LISTED: 2,
  /** A condemnation record of an earlier run names it. */
  CONDEMNED: 4,
  /** This run condemns it (dead, an orphan, or repacked). */
  CONDEMN: 8,
  /** This run copies its live blobs into new packs. */
  REPACK: 16,
  /** Condemned earlier, found live (or indexed again): its condemnation is lifted. */
  ABSOLVE: 32,
  /** Deleted by this run. */
  DELETE: 64,
} as const

/** One row per pack; `n` is the pack's number in `ids`. */
export class PackTable {
  readonly ids = new IdTable(32)
  readonly flags = new Column('u32')
  /** Size of the pack object, from the storage listing. */
  readonly objectBytes = new Column('f64')
  /** The pack object's time (ms), from the storage listing. */
  readonly modifiedAt = new Column('f64')
  /** Number + 1 of the index object that first listed the pack (0: none). */
  readonly firstListing = new Column('u32')
  readonly entries = new Column('u32')
  /** Sum of the stored lengths of its blobs. */
  readonly blobBytes = new Column('f64')
  /** Sum of the stored lengths of its live blobs (live by the mark; duplicates counted at their kept copy only). */
  readonly liveBytes = new Column('f64')
  readonly liveEntries = new Column('u32')
  /** Number + 1 of the condemnation record that names it (0: none). */
  readonly condemnedBy = new Column('u32')

  get size(): number {
    return this.ids.size
  }

  /** The row of `packId` (hex), added when new. */
  row(packId: string): number {
    return this.ids.add(Buffer.from(packId, 'hex'))
  }

  /** The row of `packId`, or -1. */
  find(packId: string): number {
    return this.ids.find(Buffer.from(packId, 'hex'))
  }

  id(n: number): string {
    return this.ids.hex(n)
  }

  has(n: number, flag: number): boolean {
    return (this.flags.get(n) & flag) !== 0
  }

  set(n: number, flag: number): void {
    this.flags.set(n, this.flags.get(n) | flag)
  }

  clear(n: number, flag: number): void {
    this.flags.set(n, this.flags.get(n) & ~flag)
  }

  /** Bytes held by the table. */
  get sizeBytes(): number {
    return (
      this.ids.sizeBytes +
      [
        this.flags,
        this.objectBytes,
        this.modifiedAt,
        this.firstListing,
        this.entries,
        this.blobBytes,
        this.liveBytes,
        this.liveEntries,
        this.condemnedBy,
      ].reduce((s, c) => s + c.sizeBytes, 0)
    )
  }
}

/** An index object as listed. */
export interface IndexObjectInfo {
  readonly id: string
  readonly sizeBytes: number
  /** Entries of packs it lists (counted while streaming). */
  entries: number
}

/** Lists the packs in storage into `table`; returns their count and bytes. */
export async function listPacks(storage: Storage, table: PackTable, signal?: AbortSignal): Promise<{ packs: number; bytes: number }> {
  let packs = 0
  let bytes = 0
  for await (const obj of storage.list(PACKS_PREFIX, { signal })) {
    const packId = packIdOfKey(obj.key)
    if (packId === undefined) continue
    const n = table.row(packId)
    table.set(n, PackFlag.IN_STORAGE)
    table.objectBytes.set(n, obj.sizeBytes)
    table.modifiedAt.set(n, obj.modifiedAt.getTime())
    packs++
    bytes += obj.sizeBytes
  }
  return { packs, bytes }
}

/** Lists the index objects. */
export async function listIndexObjects(storage: Storage, signal?: AbortSignal): Promise<IndexObjectInfo[]> {
  const out: IndexObjectInfo[] = []
  for await (const obj of storage.list(INDEX_PREFIX, { signal })) {
    const id = indexIdOfKey(obj.key)
    if (id !== undefined) out.push({ id, sizeBytes: obj.sizeBytes, entries: 0 })
  }
  return out
}

/** An upper bound of the entries of index objects of these sizes (each entry takes 46 bytes). */
export function entriesBound(objects: readonly IndexObjectInfo[]): number {
  return objects.reduce((n, o) => n + Math.max(0, Math.floor((o.sizeBytes - 16) / 46)), 0)
}

/**
 * Reads, verifies and decodes each of `objects` (a few at a time) and hands it to `fn` with its position. An index
 * object that is damaged, or that vanished (another process compacting or rebuilding the index), stops the run:
 * garbage collection decides nothing on an index it could not read whole.
 */
export async function streamIndexObjects(
  storage: Storage,
  keys: RepoKeys | undefined,
  objects: readonly IndexObjectInfo[],
  o: { concurrency: number; signal?: AbortSignal },
  fn: (objectNo: number, content: IndexContent) => void | Promise<void>,
): Promise<void> {
  await forEachConcurrent(
    objects.map((_, i) => i),
    o.concurrency,
    async (i) => {
      const info = objects[i]!
      const name = indexKey(info.id)
      let bytes: Buffer
      try {
        bytes = await readObject(storage, name, { signal: o.signal })
      } catch (err) {
        if (!isNotFound(err)) throw err
        throw new IntegrityError(`index object '${name}' vanished while garbage collection read the index`, {
          cause: err,
          hint: 'another process rebuilt or compacted the index meanwhile; run gc again',
        })
      }
      let content: IndexContent
      try {
        content = decodeIndex(bytes, info.id, name, keys)
      } catch (err) {
        if (!(err instanceof IntegrityError)) throw err
        throw new IntegrityError(`${err.message}; garbage collection needs an index it can read whole`, {
          cause: err,
          hint: "nothing was deleted; run 'pgkeep verify', then rebuild the index from the packs before running gc again",
        })
      }
      await fn(i, content)
    },
  )
}
