// How much a repository occupies in its storage: the objects listed (never read), by area. Monitoring shows it
// (`pgkeep metrics`); one listing of the whole store, which on S3 costs one request per 1000 objects.

import { INDEX_PREFIX, PACKS_PREFIX, RECORDS_PREFIX } from './layout.js'
import type { Repository } from './repository.js'

/** Bytes and objects a repository occupies, as its storage lists them. */
export interface RepositoryUsage {
  /** Every object under the repository's location. */
  readonly totalBytes: number
  readonly objects: number
  /** Packs: the blobs of backups and WAL, compressed (and encrypted). */
  readonly packBytes: number
  readonly packs: number
  readonly indexBytes: number
  readonly recordBytes: number
  readonly records: number
}

/** Lists the repository's objects and adds up their sizes. */
export async function measureRepository(repo: Repository, o: { signal?: AbortSignal } = {}): Promise<RepositoryUsage> {
  let totalBytes = 0
  let objects = 0
  let packBytes = 0
  let packs = 0
  let indexBytes = 0
  let recordBytes = 0
  let records = 0
  for await (const obj of repo.storage.list('', { signal: o.signal })) {
    totalBytes += obj.sizeBytes
    objects++
    if (obj.key.startsWith(PACKS_PREFIX)) {
      packBytes += obj.sizeBytes
      packs++
    } else if (obj.key.startsWith(INDEX_PREFIX)) indexBytes += obj.sizeBytes
    else if (obj.key.startsWith(RECORDS_PREFIX)) {
      recordBytes += obj.sizeBytes
      records++
    }
  }
  return { totalBytes, objects, packBytes, packs, indexBytes, recordBytes, records }
}
