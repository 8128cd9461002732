// The WAL catalog: one immutable record per stored WAL segment (and per timeline history file) of a cluster.
// Keys: `wal` / `<systemId>/<segment name>` for a complete segment, `<systemId>/<segment name>.partial.<valid bytes
// as 8 hex digits>` for a partial one (a longer partial of the same segment gets its own key), and
// `<systemId>/<TLI>.history`. Segment names start with the timeline, so a key prefix selects a timeline.

import { AlreadyExistsError, IntegrityError, NotFoundError } from '../errors.js'
import type { BlobId } from './blob.js'
import type { Repository } from './repository.js'

export const WAL_RECORD_KIND = 'wal'

/** The stored content of a segment or history file, in order; null pieces are zeros. */
export type WalPiece = [blob: BlobId | null, lengthBytes: number]

export interface WalSegmentRecord {
  name: string
  timeline: number
  /** Segment number as a decimal string (u64). */
  segno: string
  segmentSizeBytes: number
  /** Bytes of real WAL from the segment start; the rest of a partial segment reads as zeros. */
  validBytes: number
  partial: boolean
  /** CRC-32C (little-endian hex) of the valid bytes. */
  crc32c: string
  pieces: WalPiece[]
}

export interface WalHistoryRecord {
  name: string
  timeline: number
  sizeBytes: number
  crc32c: string
  pieces: WalPiece[]
}

export const segmentKey = (systemId: bigint | string, name: string) => `${systemId}/${name}`
export const partialKey = (systemId: bigint | string, name: string, validBytes: number) =>
  `${systemId}/${name}.partial.${validBytes.toString(16).toUpperCase().padStart(8, '0')}`
export const historyKey = (systemId: bigint | string, tli: number) => `${systemId}/${tli.toString(16).toUpperCase().padStart(8, '0')}.history`

/** Blob ids a WAL record references (for writeRecord's blobRefs and for verify). */
export const piecesBlobs = (pieces: WalPiece[]): BlobId[] => [...new Set(pieces.map((p) => p[0]).filter((b): b is BlobId => b !== null))]

/**
 * Writes a WAL record unless an equal one exists. A record under the same key with different content is an
 * IntegrityError: two clusters (or two timelines' histories) writing the same WAL name is a disaster to report.
 */
export async function writeWalRecord(
  repo: Repository,
  key: string,
  value: WalSegmentRecord | WalHistoryRecord,
  o: { signal?: AbortSignal } = {},
): Promise<'stored' | 'exists'> {
  try {
    await repo.writeRecord(WAL_RECORD_KIND, key, value, { blobRefs: piecesBlobs(value.pieces), signal: o.signal })
    return 'stored'
  } catch (err) {
    if (!(err instanceof AlreadyExistsError)) throw err
    const existing = (await repo.readRecord<WalSegmentRecord | WalHistoryRecord>(WAL_RECORD_KIND, key, o)).value
    if (existing.crc32c === value.crc32c && JSON.stringify(existing.pieces) === JSON.stringify(value.pieces)) return 'exists'
    throw new IntegrityError(`WAL file '${value.name}' is already in the repository with different content`, {
      hint: 'two servers seem to write the same timeline into one repository (a restored copy still archiving?); stop one of them and give each cluster its own timeline',
    })
  }
}

export async function readWalRecord<T extends WalSegmentRecord | WalHistoryRecord>(repo: Repository, key: string, o: { signal?: AbortSignal } = {}): Promise<T | undefined> {
  try {
    return (await repo.readRecord<T>(WAL_RECORD_KIND, key, o)).value
  } catch (err) {
    if (err instanceof NotFoundError) return undefined
    throw err
  }
}

/** Keys of the WAL records of a cluster whose names start with `namePrefix` (e.g. a timeline's 8 hex digits). */
export async function listWalKeys(repo: Repository, systemId: bigint | string, namePrefix = '', o: { signal?: AbortSignal } = {}): Promise<string[]> {
  const keys: string[] = []
  for await (const r of repo.listRecords(WAL_RECORD_KIND, `${systemId}/${namePrefix}`, o)) keys.push(r.key)
  return keys.sort()
}
