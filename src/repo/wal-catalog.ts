// The WAL catalog: one immutable record per stored WAL segment (and per timeline history and backup history file)
// of a cluster. Keys (kind `wal`): `<systemId>/<segment name>` for a complete segment, `<systemId>/<segment
// name>.partial.<valid bytes as 8 hex digits>` for a partial one (a longer partial of the same segment gets its own
// key), `<systemId>/<TLI>.history` and `<systemId>/<segment>.<offset>.backup`. Segment names start with the
// timeline, so a key prefix selects a timeline. docs/wal.md describes the records.

import { AlreadyExistsError, IntegrityError, NotFoundError } from '../errors.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import type { BlobId } from './blob.js'
import type { BlobReader } from './blob-reader.js'
import type { Repository } from './repository.js'

/** The record kind of the WAL catalog. */
export const WAL_RECORD_KIND = 'wal'

/** The stored content of a segment or history file, in order; null pieces are zeros. */
export type WalPiece = [blob: BlobId | null, lengthBytes: number]

/** The record of a complete or partial segment. Content = base's content ++ pieces ++ tail, `validBytes` long. */
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
  /**
   * Key of another partial record of the same segment whose content comes first: this record's content is the
   * base's, then its pieces, then its tail. Only a synchronous streamer writes it (at most two levels deep), so that
   * a flush report writes only the bytes since the base.
   */
  base?: string
  /**
   * Bytes that follow the pieces, inline as base64. Only partial records written by a synchronous streamer have
   * it: the last, still growing part is kept in the record rather than in a blob, so that each flush report costs
   * one object instead of a pack, an index object and a record.
   */
  tail?: string
}

/** A timeline history file (`%08X.history`) or a backup history file (`<segment>.%08X.backup`). */
export interface WalFileRecord {
  name: string
  sizeBytes: number
  crc32c: string
  pieces: WalPiece[]
}

/** The record of a timeline history file. */
export interface WalHistoryRecord extends WalFileRecord {
  timeline: number
}

/** Any WAL catalog record. */
export type WalRecord = WalSegmentRecord | WalFileRecord

const hex8 = (n: number) => n.toString(16).toUpperCase().padStart(8, '0')

/** Key of a complete segment. */
export const segmentKey = (systemId: bigint | string, name: string) => `${systemId}/${name}`
/** Key of a partial segment holding its first `validBytes` bytes. */
export const partialKey = (systemId: bigint | string, name: string, validBytes: number) => `${systemId}/${name}.partial.${hex8(validBytes)}`
/** Key of the history file of timeline `tli`. */
export const historyKey = (systemId: bigint | string, tli: number) => `${systemId}/${hex8(tli)}.history`
/** Key of a backup history file; `name` is its file name (`000000010000000000000002.00000028.backup`). */
export const backupHistoryKey = (systemId: bigint | string, name: string) => `${systemId}/${name}`

/** What a WAL catalog key names. */
export type WalKey =
  | { kind: 'segment'; systemId: string; name: string; tli: number }
  | { kind: 'partial'; systemId: string; name: string; tli: number; validBytes: number }
  | { kind: 'history'; systemId: string; name: string; tli: number }
  | { kind: 'backup'; systemId: string; name: string; tli: number }

const KEY = /^(\d{1,20})\/(?:([0-9A-F]{8})([0-9A-F]{16})(?:\.partial\.([0-9A-F]{8})|(\.[0-9A-F]{8}\.backup))?|([0-9A-F]{8})\.history)$/

/** Decodes a WAL catalog key; undefined for anything else (foreign objects are skipped, never guessed at). */
export function parseWalKey(key: string): WalKey | undefined {
  const m = KEY.exec(key)
  if (!m) return undefined
  const systemId = m[1]!
  if (m[6] !== undefined) return { kind: 'history', systemId, name: `${m[6]}.history`, tli: parseInt(m[6], 16) }
  const name = m[2]! + m[3]!
  const tli = parseInt(m[2]!, 16)
  if (m[4] !== undefined) return { kind: 'partial', systemId, name, tli, validBytes: parseInt(m[4], 16) }
  if (m[5] !== undefined) return { kind: 'backup', systemId, name: name + m[5], tli }
  return { kind: 'segment', systemId, name, tli }
}

/** Blob ids a WAL record references (for writeRecord's blobRefs and for verify). */
export const piecesBlobs = (pieces: WalPiece[]): BlobId[] => [...new Set(pieces.map((p) => p[0]).filter((b): b is BlobId => b !== null))]

const isSegmentRecord = (r: WalRecord): r is WalSegmentRecord => 'validBytes' in r

/** Length of the content a record describes (valid bytes of a segment, size of a file). */
export const walContentLength = (r: WalRecord): number => (isSegmentRecord(r) ? r.validBytes : r.sizeBytes)

/**
 * Writes a WAL record unless one with the same content exists under its key (then resolves 'exists'). A record
 * under the same key with different content is an IntegrityError: two clusters (or two timelines' histories)
 * writing the same WAL name is a disaster to report, never to hide. Content is compared byte for byte, not by
 * representation: a partial segment stored by a synchronous streamer (inline tail) equals the same bytes stored
 * in pieces.
 */
export async function writeWalRecord(repo: Repository, key: string, value: WalRecord, o: { signal?: AbortSignal } = {}): Promise<'stored' | 'exists'> {
  try {
    await repo.writeRecord(WAL_RECORD_KIND, key, value, { blobRefs: piecesBlobs(value.pieces), signal: o.signal })
    return 'stored'
  } catch (err) {
    if (!(err instanceof AlreadyExistsError)) throw err
    const existing = (await repo.readRecord<WalRecord>(WAL_RECORD_KIND, key, o)).value
    if (await sameContent(repo, existing, value, o)) return 'exists'
    throw new IntegrityError(`WAL file '${value.name}' is already in the repository with different content`, {
      hint: 'two servers seem to write the same timeline into one repository (a restored copy still archiving?); stop one of them and give each cluster its own timeline',
    })
  }
}

async function sameContent(repo: Repository, a: WalRecord, b: WalRecord, o: { signal?: AbortSignal }): Promise<boolean> {
  if (a.crc32c !== b.crc32c || walContentLength(a) !== walContentLength(b)) return false
  const sa = a as WalSegmentRecord
  const sb = b as WalSegmentRecord
  const sameRepresentation = JSON.stringify(a.pieces) === JSON.stringify(b.pieces) && sa.tail === sb.tail && sa.base === sb.base
  if (sameRepresentation) return true
  // Equal CRC and length but stored differently: read both (rare: a re-push after a synchronous streamer).
  const [x, y] = await Promise.all([readWalContent(repo, a, o), readWalContent(repo, b, o)])
  return x.equals(y)
}

/** A WAL record, or undefined when it does not exist. */
export async function readWalRecord<T extends WalRecord>(repo: Repository, key: string, o: { signal?: AbortSignal } = {}): Promise<T | undefined> {
  try {
    return (await repo.readRecord<T>(WAL_RECORD_KIND, key, o)).value
  } catch (err) {
    if (err instanceof NotFoundError) return undefined
    throw err
  }
}

/** Removes a WAL record (a partial one superseded by a longer or complete one). A missing record is not an error. */
export async function removeWalRecord(repo: Repository, key: string, o: { signal?: AbortSignal } = {}): Promise<void> {
  await repo.removeRecord(WAL_RECORD_KIND, key, o)
}

/** Keys of the WAL records of a cluster whose names start with `namePrefix` (e.g. a timeline's 8 hex digits). */
export async function listWalKeys(repo: Repository, systemId: bigint | string, namePrefix = '', o: { signal?: AbortSignal } = {}): Promise<string[]> {
  const keys: string[] = []
  for await (const r of repo.listRecords(WAL_RECORD_KIND, `${systemId}/${namePrefix}`, o)) keys.push(r.key)
  return keys.sort()
}

/** System identifiers that have WAL records in the repository (lists every WAL record once). */
export async function listWalClusters(repo: Repository, o: { signal?: AbortSignal } = {}): Promise<string[]> {
  const ids = new Set<string>()
  for await (const r of repo.listRecords(WAL_RECORD_KIND, '', o)) {
    const k = parseWalKey(r.key)
    if (k) ids.add(k.systemId)
  }
  return [...ids].sort()
}

/** Partial records build on at most two others (a synchronous streamer's levels); more is damage. */
const MAX_BASE_DEPTH = 3

/**
 * How many blobs of one file are asked for at once: a 16 MiB segment's pieces in one go. They go through one
 * BlobReader, which reads blobs lying together in a pack with one storage request (a segment's pieces were stored
 * together): on S3, latency, not bandwidth, limited a read of one request per piece.
 */
const PIECE_BATCH = 16

/** Options of reading WAL content. */
export interface WalReadOptions {
  signal?: AbortSignal
  /**
   * A buffer of exactly `length` bytes to read into, every byte of which is overwritten: one that served the
   * previous segment, say. A 16 MiB buffer allocated afresh for each segment is 4,096 pages to fault in, which cost
   * more than the copy into it (about 40 ms a segment here). Default: a new buffer.
   */
  into?: (length: number) => Buffer
  /**
   * The reader to read pieces through, for one who reads segment after segment: a reader kept open reuses its
   * buffers (the same page faults again). Default: one opened for this read.
   */
  reader?: BlobReader
}

/**
 * The content a record describes (without zero padding), verified against its recorded length and CRC. A blob the
 * loaded index does not know (stored by another process since the repository was opened) triggers one index
 * refresh.
 */
export async function readWalContent(repo: Repository, rec: WalRecord, o: WalReadOptions = {}, depth = 0): Promise<Buffer> {
  const length = walContentLength(rec)
  const out = o.into?.(length) ?? Buffer.allocUnsafe(length)
  if (out.length !== length) throw new RangeError(`readWalContent: a buffer of ${out.length} bytes for ${length}`)
  let at = 0
  if (isSegmentRecord(rec) && rec.base !== undefined) {
    if (depth >= MAX_BASE_DEPTH) throw damaged(rec)
    const base = await readWalRecord<WalSegmentRecord>(repo, rec.base, o)
    if (!base) {
      // Superseded and removed by the streamer meanwhile: the caller looks the segment up again.
      throw new NotFoundError(`partial WAL record '${rec.base}' that '${rec.name}' builds on no longer exists`, { retryable: true })
    }
    const head = await readWalContent(repo, base, { signal: o.signal, reader: o.reader }, depth + 1)
    if (head.length > length) throw damaged(rec)
    head.copy(out)
    at = head.length
  }
  const offsets: number[] = []
  for (const [, len] of rec.pieces) {
    offsets.push(at)
    at += len
  }
  const tail = isSegmentRecord(rec) && rec.tail !== undefined ? Buffer.from(rec.tail, 'base64') : undefined
  if (at + (tail?.length ?? 0) !== length) throw damaged(rec)
  if (tail) tail.copy(out, at)
  let refreshed: Promise<void> | undefined
  const reader = o.reader ?? repo.openBlobReader({ workers: 0, signal: o.signal })
  const readOne = async (blob: BlobId): Promise<Buffer> => {
    try {
      return await reader.read(blob)
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err
      refreshed ??= repo.refreshIndex(o)
      await refreshed
      return repo.readBlob(blob, o)
    }
  }
  const readPiece = async (i: number) => {
    const [blob, len] = rec.pieces[i]!
    // A piece of zeros is stored as none.
    if (blob === null) return void out.fill(0, offsets[i], offsets[i]! + len)
    const bytes = await readOne(blob)
    if (bytes.length !== len) throw damaged(rec)
    bytes.copy(out, offsets[i])
    reader.giveBack(bytes)
  }
  try {
    for (let first = 0; first < rec.pieces.length; first += PIECE_BATCH) {
      const batch: Promise<void>[] = []
      for (let i = first; i < Math.min(first + PIECE_BATCH, rec.pieces.length); i++) batch.push(readPiece(i))
      await Promise.all(batch)
    }
  } finally {
    if (reader !== o.reader) await reader.close()
  }
  if (crc32cHexLE(crc32c(out)) !== rec.crc32c) throw damaged(rec)
  return out
}

function damaged(rec: WalRecord): IntegrityError {
  return new IntegrityError(`WAL file '${rec.name}' read back does not match its recorded length and CRC`, {
    hint: "run 'pgkeep verify --read-data' to find the damaged objects",
  })
}

/** The longest partial record of segment `name`, or undefined. */
export async function findLongestPartial(
  repo: Repository,
  systemId: bigint | string,
  name: string,
  o: { signal?: AbortSignal } = {},
): Promise<WalSegmentRecord | undefined> {
  for (let attempt = 0; attempt < 4; attempt++) {
    // Keys end in the valid length as fixed-width hex, so the last sorts longest.
    const partials = await listWalKeys(repo, systemId, `${name}.partial.`, o)
    if (partials.length === 0) return undefined
    const longest = await readWalRecord<WalSegmentRecord>(repo, partials[partials.length - 1]!, o)
    // Removed between listing and reading: a streamer superseded it; look again.
    if (longest) return longest
  }
  return undefined
}

/**
 * The stored record for segment `name`: the complete one if stored, else the longest partial one; undefined if
 * neither.
 */
export async function findSegmentRecord(
  repo: Repository,
  systemId: bigint | string,
  name: string,
  o: { signal?: AbortSignal } = {},
): Promise<WalSegmentRecord | undefined> {
  const complete = await readWalRecord<WalSegmentRecord>(repo, segmentKey(systemId, name), o)
  if (complete) return complete
  const partial = await findLongestPartial(repo, systemId, name, o)
  // The partial may have been superseded by the complete record meanwhile.
  return partial ?? (await readWalRecord<WalSegmentRecord>(repo, segmentKey(systemId, name), o))
}

/**
 * Finds segment `name` (complete, else the longest partial) and reads its full bytes, zero-padded; undefined when
 * the repository does not have it. Looks again when a partial record it read was superseded meanwhile.
 */
export async function readSegmentByName(
  repo: Repository,
  systemId: bigint | string,
  name: string,
  o: WalReadOptions & { partialOnly?: boolean } = {},
): Promise<Buffer | undefined> {
  for (let attempt = 0; ; attempt++) {
    const rec = o.partialOnly ? await findLongestPartial(repo, systemId, name, o) : await findSegmentRecord(repo, systemId, name, o)
    if (!rec) return undefined
    try {
      return await readSegmentBytes(repo, rec, o)
    } catch (err) {
      if (!(err instanceof NotFoundError && err.retryable) || attempt >= 3) throw err
    }
  }
}

/** A segment's full bytes (a partial one zero-padded after its valid bytes), verified. */
export async function readSegmentBytes(repo: Repository, rec: WalSegmentRecord, o: WalReadOptions = {}): Promise<Buffer> {
  if (rec.validBytes === rec.segmentSizeBytes) return readWalContent(repo, rec, o)
  if (rec.validBytes > rec.segmentSizeBytes) throw damaged(rec)
  const out = o.into?.(rec.segmentSizeBytes) ?? Buffer.allocUnsafe(rec.segmentSizeBytes)
  await readWalContent(repo, rec, { ...o, into: (n) => out.subarray(0, n) })
  return out.fill(0, rec.validBytes)
}
