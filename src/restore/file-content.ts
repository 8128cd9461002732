// Reads a backed-up file's bytes back from the repository, extent by extent, every blob verified by the
// repository against its content address (invariant 3). Holes come back as zeros.

import { IntegrityError } from '../errors.js'
import type { BlobId } from '../repo/blob.js'
import type { FileEntry } from '../repo/file-list.js'
import { decodeFileMap, type Extent } from '../repo/file-map.js'
import type { Repository } from '../repo/repository.js'

const ZEROS = Buffer.alloc(1 << 20)

/** The extents of a file entry: inline for ordinary files, from its file map for relation files. */
export async function extentsOf(repo: Repository, e: FileEntry, o: { signal?: AbortSignal } = {}): Promise<Extent[]> {
  if (e.fileMap) return decodeFileMap(await repo.readBlob(e.fileMap, o), `file map of '${e.path}'`).extents
  return e.extents ?? []
}

/**
 * Yields the content of a file in order, in pieces of at most 1 MiB. Consecutive extents of one blob read it once.
 * A missing or damaged blob is an IntegrityError naming the file and the blob.
 */
export async function* readFileContent(repo: Repository, e: FileEntry, o: { signal?: AbortSignal; backupId?: string } = {}): AsyncGenerator<Buffer> {
  let cachedId: BlobId | undefined
  let cached: Buffer | undefined
  for (const x of await extentsOf(repo, e, o)) {
    if (x.blob === null) {
      for (let left = x.length; left > 0; left -= ZEROS.length) yield ZEROS.subarray(0, Math.min(left, ZEROS.length))
      continue
    }
    if (x.blob !== cachedId) {
      try {
        cached = await repo.readBlob(x.blob, o)
      } catch (err) {
        throw new IntegrityError(`cannot read '${e.path}'${o.backupId ? ` of backup ${o.backupId}` : ''}: ${(err as Error).message}`, {
          cause: err,
          hint: "run 'pgkeep verify --read-data' to list every damaged object",
        })
      }
      cachedId = x.blob
    }
    if (x.blobOffset + x.length > cached!.length) {
      throw new IntegrityError(`'${e.path}' refers to bytes ${x.blobOffset}..${x.blobOffset + x.length} of blob '${x.blob}', which has ${cached!.length}`)
    }
    yield cached!.subarray(x.blobOffset, x.blobOffset + x.length)
  }
}
