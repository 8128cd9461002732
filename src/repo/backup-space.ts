// The space each backup holds alone: the stored bytes of the blobs that it references and no other backup does,
// what forgetting it (and then gc) would give back. Memory is a few bytes per indexed blob (typed arrays over the
// index's blob numbers), whatever the number of backups or files; each distinct file list chunk and file map is read
// once, however many backups share it.

import { FormatError, IntegrityError, NotFoundError } from '../errors.js'
import type { BackupRecord } from './backup-record.js'
import type { BlobId } from './blob.js'
import { decodeChunk } from './file-list.js'
import { decodeFileMap } from './file-map.js'
import type { Repository } from './repository.js'

/** What one backup holds alone. */
export interface BackupSpace {
  /** Stored bytes (compressed, encrypted, as in the packs) of the blobs only this backup references. */
  readonly aloneBytes: number
  readonly aloneBlobs: number
}

export interface BackupSpaceResult {
  /** By backup id. */
  readonly backups: ReadonlyMap<string, BackupSpace>
  /**
   * File list chunks and file maps that could not be read (missing or damaged: 'pgkeep verify' says which); what
   * they reference is not counted, so the figures may be low.
   */
  readonly unreadable: number
}

/** Owner value of a blob referenced by two or more backups. */
const SHARED = 0xffff_ffff
/** How many chunks or file maps are read at once. */
const READ_CONCURRENCY = 8

/**
 * What each of `backups` holds alone, by backup id. Give every backup of the repository (of all clusters): a blob is
 * held alone only when no other backup given references it. WAL is not looked at (a blob that a WAL record also
 * references, which pgkeep's chunking makes all but impossible, would count as held alone). Blobs the index does
 * not know (damage that verify reports) are skipped.
 *
 * References form a tree: record → file list chunks and server manifest pieces → extent blobs and file maps → the
 * blobs a file map's extents name. Level by level, every blob gets an owner: the one backup that references it, or
 * SHARED. A chunk or file map is read once; what it references inherits its owner. Memory: 5 bytes per indexed
 * blob (owner, kind).
 */
export async function backupSpace(
  repo: Repository,
  backups: readonly BackupRecord[],
  o: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
): Promise<BackupSpaceResult> {
  const numbering = repo.blobNumbering()
  // owner[n]: 0 = unreferenced, i + 1 = backups[i] alone, SHARED = two or more.
  const owner = new Uint32Array(numbering.size)
  // kind[n]: 1 = a file list chunk, 2 = a file map, to read at their level.
  const kind = new Uint8Array(numbering.size)
  const mark = (id: BlobId | null | undefined, who: number, k = 0): void => {
    if (!id) return
    const n = numbering.numberOf(id)
    if (n === undefined) return
    if (k !== 0) kind[n] = k
    const cur = owner[n]!
    if (cur === 0) owner[n] = who
    else if (cur !== who) owner[n] = SHARED
  }
  backups.forEach((b, i) => {
    for (const c of b.files.chunks) mark(c.blob, i + 1, 1)
    for (const p of b.serverManifest) mark(p, i + 1)
  })
  // Visits every blob number of kind `k`, READ_CONCURRENCY at a time (no list of them is built).
  const forEachOfKind = async (k: number, fn: (n: number) => Promise<void>): Promise<void> => {
    let cursor = 0
    const worker = async () => {
      for (;;) {
        o.signal?.throwIfAborted()
        while (cursor < kind.length && kind[cursor] !== k) cursor++
        if (cursor >= kind.length) return
        await fn(cursor++)
      }
    }
    await Promise.all(Array.from({ length: READ_CONCURRENCY }, worker))
  }
  const count = (k: number) => kind.reduce((sum, v) => sum + (v === k ? 1 : 0), 0)
  let unreadable = 0
  let done = 0
  // Reads a meta blob and decodes it; a missing or damaged one is counted, and what it references is not.
  const expand = async <T>(n: number, decode: (bytes: Buffer, id: BlobId) => T): Promise<T | undefined> => {
    const id = numbering.idOf(n)
    try {
      return decode(await repo.readBlob(id, o), id)
    } catch (err) {
      if (o.signal?.aborted || !(err instanceof NotFoundError || err instanceof IntegrityError || err instanceof FormatError)) throw err
      unreadable++
      return undefined
    }
  }
  const chunks = count(1)
  await forEachOfKind(1, async (n) => {
    const entries = await expand(n, (bytes, id) => decodeChunk(bytes, `file list chunk '${id}'`))
    for (const e of entries ?? []) {
      for (const x of e.extents ?? []) mark(x.blob, owner[n]!)
      // An inline map's blobs are its entry's extents'.
      if (typeof e.fileMap === 'string') mark(e.fileMap, owner[n]!, 2)
    }
    o.onProgress?.(++done, chunks)
  })
  const maps = count(2)
  await forEachOfKind(2, async (n) => {
    const map = await expand(n, (bytes, id) => decodeFileMap(bytes, `file map '${id}'`))
    for (const x of map?.extents ?? []) mark(x.blob, owner[n]!)
    o.onProgress?.(++done, chunks + maps)
  })
  const bytes = new Float64Array(backups.length)
  const blobs = new Uint32Array(backups.length)
  for (let n = 0; n < owner.length; n++) {
    const who = owner[n]!
    if (who === 0 || who === SHARED) continue
    bytes[who - 1]! += numbering.storedBytesOf(n)
    blobs[who - 1]!++
  }
  return { backups: new Map(backups.map((b, i) => [b.id, { aloneBytes: bytes[i]!, aloneBlobs: blobs[i]! }])), unreadable }
}
