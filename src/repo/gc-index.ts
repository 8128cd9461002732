// Index compaction: index objects that list a pack about to be deleted, and small ones (a WAL streamer writes one
// per segment), are rewritten into full ones. The new objects are written first, the last naming the replaced ones
// in `supersedes`; only then are the old ones removed (docs/repository-format.md §7), and only after that are packs
// deleted, so an index object never lists a missing pack. Objects are read one at a time, never all at once.

import type { Storage } from '../storage/storage.js'
import type { RepoKeys } from './crypto.js'
import type { HeldWrite } from './gc-repack.js'
import { type IndexObjectInfo, type PackTable, streamIndexObjects } from './gc-packs.js'
import { encodeIndex, type IndexPack, MAX_INDEX_ENTRIES } from './index-file.js'
import { indexKey } from './layout.js'
import { isAlreadyExists } from './storage-io.js'

/** Index objects with fewer entries than this are merged when there are several. */
export const SMALL_INDEX_ENTRIES = MAX_INDEX_ENTRIES / 2

export interface CompactOptions {
  storage: Storage
  keys: RepoKeys | undefined
  /** The index objects listed at the start of the run (with their entry counts). */
  objects: readonly IndexObjectInfo[]
  table: PackTable
  /** True for pack rows whose entries must go (the packs are deleted next). */
  drop(n: number): boolean
  /** Rewrite index objects with fewer than SMALL_INDEX_ENTRIES entries too. */
  mergeSmall: boolean
  held: HeldWrite
  concurrency: number
  signal?: AbortSignal
}

/** What a compaction wrote and removed. */
export interface CompactResult {
  readonly written: readonly string[]
  readonly removed: readonly string[]
  readonly bytesWritten: number
  readonly bytesRemoved: number
}

/** How many index objects a compaction would merge because they are small (0 when fewer than two). */
export function smallIndexObjects(objects: readonly IndexObjectInfo[]): number {
  const n = objects.filter((o) => o.entries < SMALL_INDEX_ENTRIES).length
  return n >= 2 ? n : 0
}

/**
 * Rewrites the index objects that list a dropped pack (and, with `mergeSmall`, the small ones): each pack they list
 * first (PackTable.firstListing) and that is not dropped goes into a new object. Returns the objects written and
 * removed. A crash leaves both generations (every entry listed twice, harmless) or the new ones alone.
 */
export async function compactIndex(o: CompactOptions): Promise<CompactResult> {
  const written: string[] = []
  const rewritten: string[] = []
  let bytesWritten = 0
  let bytesRemoved = 0
  let batch: IndexPack[] = []
  let batchEntries = 0
  let writes: Promise<void> = Promise.resolve()
  const write = (packs: IndexPack[], supersedes: string[]) => {
    writes = writes.then(async () => {
      const { id, bytes } = encodeIndex({ supersedes, packs }, o.keys)
      await o.held(async (signal) => {
        try {
          await o.storage.write(indexKey(id), bytes, { ifAbsent: true, collisionFree: true, signal })
        } catch (err) {
          if (!isAlreadyExists(err)) throw err
        }
      })
      written.push(id)
      bytesWritten += bytes.length
    })
  }
  const mergeable = (info: IndexObjectInfo) => o.mergeSmall && info.entries < SMALL_INDEX_ENTRIES
  await streamIndexObjects(o.storage, o.keys, o.objects, { concurrency: o.concurrency, signal: o.signal }, async (i, content) => {
    const rows = content.packs.map((p) => o.table.find(p.packId))
    if (!mergeable(o.objects[i]!) && !rows.some((n) => n >= 0 && o.drop(n))) return
    rewritten.push(o.objects[i]!.id)
    bytesRemoved += o.objects[i]!.sizeBytes
    content.packs.forEach((p, k) => {
      const n = rows[k]!
      // Listed first by another object, or dropped: not carried over from here.
      if (n < 0 || o.table.firstListing.get(n) !== i + 1 || o.drop(n)) return
      if (batchEntries > 0 && batchEntries + p.entries.length > MAX_INDEX_ENTRIES) {
        write(batch, [])
        batch = []
        batchEntries = 0
      }
      batch.push(p)
      batchEntries += p.entries.length
    })
    await writes
  })
  // The last object names every object it and its siblings replace.
  if (batch.length > 0) write(batch, rewritten)
  await writes
  for (const id of rewritten) await o.held((signal) => o.storage.remove(indexKey(id), { signal }))
  return { written, removed: rewritten, bytesWritten, bytesRemoved }
}
