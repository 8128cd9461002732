// `wal push`: one file from pg_wal into the WAL catalog, for archive_command. Segments are checked against their
// own long page header (which also names the cluster); history and backup history files need the cluster from
// elsewhere (cluster-id.ts). Idempotent; different content under the same name is an IntegrityError.

import { readFile } from 'node:fs/promises'
import { basename } from 'node:path'
import { FormatError, NotFoundError, UsageError } from '../errors.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { assertWalSegmentSize } from '../pg/lsn.js'
import { isAllZero } from '../pg/page.js'
import { assertSegmentHeader, decodeWalLongPageHeader, WAL_BLOCK_SIZE_BYTES, WAL_LONG_PAGE_HEADER_BYTES } from '../pg/wal-page.js'
import { isBackupHistoryFileName, isHistoryFileName, isPartialWalName, isWalSegmentName, parseWalFileName } from '../pg/wal-names.js'
import type { Repository } from '../repo/index.js'
import {
  backupHistoryKey,
  historyKey,
  partialKey,
  segmentKey,
  type WalFileRecord,
  type WalHistoryRecord,
  type WalSegmentRecord,
  writeWalRecord,
} from '../repo/index.js'
import { parseSystemId, resolveClusterId } from './cluster-id.js'
import { putWalPieces } from '../repo/index.js'

/** Options of {@link pushWalFile}. */
export interface PushWalOptions {
  /** `--cluster SYSTEMID`: required for history files when it cannot be found otherwise. */
  cluster?: string
  signal?: AbortSignal
}

/** What {@link pushWalFile} stored (or found stored). */
export interface PushWalResult {
  name: string
  kind: 'segment' | 'partial' | 'history' | 'backup'
  systemId: string
  /** The catalog key written (or found). */
  key: string
  result: 'stored' | 'exists'
  sizeBytes: number
}

/** Stores the file at `path` (named as in pg_wal) in the WAL catalog. */
export async function pushWalFile(repo: Repository, path: string, o: PushWalOptions = {}): Promise<PushWalResult> {
  const name = basename(path)
  const isSegment = isWalSegmentName(name)
  if (!isSegment && !isPartialWalName(name) && !isHistoryFileName(name) && !isBackupHistoryFileName(name)) {
    throw new UsageError(`'${name}' is not a WAL file name`, {
      hint: "wal push takes a segment, '<segment>.partial', '%08X.history' or '<segment>.%08X.backup' file (%p of archive_command)",
    })
  }
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new NotFoundError(`WAL file '${path}' does not exist`, { cause: err })
    throw new UsageError(`cannot read WAL file '${path}': ${code ?? (err as Error).message}`, { cause: err })
  }
  if (isSegment || isPartialWalName(name)) return pushSegment(repo, name, bytes, o)
  const systemId = await resolveClusterId(repo, { explicit: o.cluster, walPath: path, signal: o.signal })
  const pieces = await putWalPieces(repo, bytes, { signal: o.signal })
  const common: WalFileRecord = { name, sizeBytes: bytes.length, crc32c: crc32cHexLE(crc32c(bytes)), pieces }
  if (isHistoryFileName(name)) {
    const parsed = parseWalFileName(name, 16 << 20)
    const tli = parsed.kind === 'history' ? parsed.tli : 0
    const key = historyKey(systemId, tli)
    const record: WalHistoryRecord = { ...common, timeline: tli }
    return { name, kind: 'history', systemId, key, result: await writeWalRecord(repo, key, record, o), sizeBytes: bytes.length }
  }
  const key = backupHistoryKey(systemId, name)
  return { name, kind: 'backup', systemId, key, result: await writeWalRecord(repo, key, common, o), sizeBytes: bytes.length }
}

async function pushSegment(repo: Repository, name: string, bytes: Buffer, o: PushWalOptions): Promise<PushWalResult> {
  const partial = isPartialWalName(name)
  const segName = name.slice(0, 24)
  try {
    assertWalSegmentSize(bytes.length)
  } catch {
    throw new FormatError(`WAL file '${name}' is ${bytes.length} bytes, not a WAL segment size`, {
      hint: 'a segment file is exactly wal_segment_size bytes (a power of two from 1 MB to 1 GB); was it truncated?',
    })
  }
  if (bytes.length < WAL_LONG_PAGE_HEADER_BYTES) throw new FormatError(`WAL file '${name}' is too short`)
  const header = decodeWalLongPageHeader(bytes)
  const parsed = parseWalFileName(segName, bytes.length)
  if (parsed.kind !== 'segment') throw new FormatError(`not a WAL segment name: '${segName}'`)
  // The header names the cluster; the name's timeline and number must match the header too.
  const systemId = o.cluster !== undefined ? BigInt(parseSystemId(o.cluster)) : header.systemId
  assertSegmentHeader(bytes, { segno: parsed.segno, segSizeBytes: bytes.length, systemId, tli: parsed.tli }, name)
  // A `.partial` file (the last segment of an old timeline, archived at promotion) is full size; its valid part
  // ends after the last page that is not all zeros.
  let validBytes = bytes.length
  if (partial) {
    while (validBytes > 0 && isAllZero(bytes.subarray(validBytes - WAL_BLOCK_SIZE_BYTES, validBytes))) validBytes -= WAL_BLOCK_SIZE_BYTES
  }
  const valid = bytes.subarray(0, validBytes)
  const record: WalSegmentRecord = {
    name: segName,
    timeline: parsed.tli,
    segno: parsed.segno.toString(),
    segmentSizeBytes: bytes.length,
    validBytes,
    partial,
    crc32c: crc32cHexLE(crc32c(valid)),
    // The same 1 MiB pieces the streamer cuts, so a pushed segment and a streamed one share their blobs.
    pieces: await putWalPieces(repo, valid, { signal: o.signal }),
  }
  const key = partial ? partialKey(systemId, segName, validBytes) : segmentKey(systemId, segName)
  const result = await writeWalRecord(repo, key, record, o)
  return { name, kind: partial ? 'partial' : 'segment', systemId: systemId.toString(), key, result, sizeBytes: bytes.length }
}
