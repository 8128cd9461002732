// Reads a backed-up file's bytes back from the repository, every blob verified by the repository against its
// content address (invariant 3) and the whole compared with the CRC-32C the backup recorded. Holes come back as
// zeros. A blob that cannot be read is an integrity error naming the file and the backup.

import { IntegrityError, isPgkeepError } from '../errors.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { type BlobId, type FileEntry, fileMapOf, type Repository } from '../repo/index.js'

/**
 * Runs a blob read; a failure other than an abort or a storage error (which says what it is itself) becomes an
 * IntegrityError naming the file and the backup: a missing blob is as much damage as a corrupt one.
 */
export async function readNamingFile<T>(entry: FileEntry, id: BlobId, backupId: string, read: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  try {
    return await read()
  } catch (err) {
    if (signal?.aborted || (isPgkeepError(err) && (err.code === 'ABORTED' || err.code === 'STORAGE'))) throw err
    throw new IntegrityError(`cannot restore '${entry.path}' of backup ${backupId}: ${(err as Error).message}`, {
      cause: err,
      hint: `blob '${id}' is damaged or missing; run 'pgkeep verify --read-data' to list every damaged object, or restore another backup with --backup`,
    })
  }
}

/** The whole content of a (small) file of a backup, every blob verified. */
export async function readWholeFile(repo: Repository, backupId: string, entry: FileEntry, signal?: AbortSignal): Promise<Buffer> {
  const out = Buffer.alloc(entry.sizeBytes)
  const read = (id: BlobId) => readNamingFile(entry, id, backupId, () => repo.readBlob(id, { signal }), signal)
  const extents = entry.extents ?? (entry.fileMap ? (await fileMapOf(entry, entry.fileMap, read, `file map of '${entry.path}'`)).extents : [])
  for (const x of extents) {
    if (x.blob === null) continue
    const blob = await read(x.blob)
    if (x.blobOffset + x.length > blob.length || x.offset + x.length > out.length) {
      throw new IntegrityError(`'${entry.path}' of backup ${backupId} refers to bytes beyond blob '${x.blob}' or beyond its own size`)
    }
    blob.copy(out, x.offset, x.blobOffset, x.blobOffset + x.length)
  }
  const crc = crc32cHexLE(crc32c(out))
  if (entry.crc32c !== undefined && crc !== entry.crc32c) {
    throw new IntegrityError(`'${entry.path}' of backup ${backupId} reads back with CRC-32C ${crc}, the backup recorded ${entry.crc32c}`, {
      hint: "the backup's blobs and its file list disagree; run 'pgkeep verify --read-data', or restore another backup with --backup",
    })
  }
  return out
}
