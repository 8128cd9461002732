// Backups made of blobs a test or bench stored itself, written through the library: a backup record whose file list
// and file maps name those blobs as a backup names the extents of relation files, and, on request, the WAL segment
// its range needs. What garbage collection walks and `verify` checks; no PostgreSQL involved (those tests use real
// backups), so that the content and the number of blobs are chosen freely (a bench of a million blobs).

import { crc32c, crc32cHexLE } from '../../src/pg/crc32c.js'
import { walFileName } from '../../src/pg/wal-names.js'
import {
  type BackupRecord,
  type BlobId,
  encodeFileMap,
  FileListWriter,
  PAGE_HASH_BYTES,
  type Repository,
  segmentKey,
  writeBackupRecord,
  writeWalRecord,
} from '../../src/repo/index.js'

export interface SyntheticBackup {
  /** The backup id (default `20260101T000000Z-000001`). */
  id?: string
  systemId?: string
  /** Blobs already stored, `blobBytes` each: the data of the backup's files, in order. */
  blobs: readonly BlobId[]
  blobBytes: number
  /** Blobs per file (default 100). */
  blobsPerFile?: number
  /** Also store the one WAL segment (1 MiB, timeline 1) from the backup's start to its end LSN. */
  withWal?: boolean
}

const WAL_SEGMENT_BYTES = 1 << 20

/** Writes the backup (its file maps, file list, WAL segment if asked, then its record) and returns its record. */
export async function writeSyntheticBackup(repo: Repository, b: SyntheticBackup): Promise<BackupRecord> {
  const perFile = b.blobsPerFile ?? 100
  const files = new FileListWriter()
  for (let f = 0; f * perFile < b.blobs.length; f++) {
    const part = b.blobs.slice(f * perFile, (f + 1) * perFile)
    const sizeBytes = part.length * b.blobBytes
    const map = encodeFileMap({
      sizeBytes,
      pageHashAlgorithm: 'xxh64',
      pageHashes: Buffer.alloc(PAGE_HASH_BYTES * Math.ceil(sizeBytes / 8192)),
      extents: part.map((blob, k) => ({ offset: k * b.blobBytes, length: b.blobBytes, blob, blobOffset: 0 })),
    })
    const { id: fileMap } = await repo.putBlob('meta', map)
    files.add({ path: `base/5/${16384 + f}`, type: 'file', mode: 0o600, mtime: 0, sizeBytes, fileMap })
  }
  const summary = await files.finish(repo)
  const systemId = b.systemId ?? '7000000000000000001'
  // Start and end inside segment 1 of timeline 1.
  const startLsn = '0/100028'
  const endLsn = '0/100100'
  if (b.withWal) {
    // WAL content is not looked into by what uses these backups; it is stored and catalogued as `wal push` does.
    const content = Buffer.alloc(WAL_SEGMENT_BYTES, (b.id ?? '').length + 1)
    const { id } = await repo.putBlob('data', content)
    await repo.flush()
    const name = walFileName(1, 1n, WAL_SEGMENT_BYTES)
    await writeWalRecord(repo, segmentKey(systemId, name), {
      name,
      timeline: 1,
      segno: '1',
      segmentSizeBytes: WAL_SEGMENT_BYTES,
      validBytes: WAL_SEGMENT_BYTES,
      partial: false,
      crc32c: crc32cHexLE(crc32c(content)),
      pieces: [[id, WAL_SEGMENT_BYTES]],
    })
  }
  const now = new Date().toISOString()
  const record: BackupRecord = {
    formatVersion: 1,
    id: b.id ?? '20260101T000000Z-000001',
    systemId,
    clusterName: 'synthetic',
    type: 'full',
    parent: null,
    incrementalMode: null,
    label: 'synthetic',
    server: { version: '17.0', versionNum: 170000, major: 17, fromStandby: false },
    timeline: 1,
    startLsn,
    endLsn,
    startedAt: now,
    finishedAt: now,
    durationMs: 0,
    walSegmentSizeBytes: WAL_SEGMENT_BYTES,
    tablespaces: [],
    files: summary,
    serverManifest: [],
    backupLabel: '',
    tablespaceMap: null,
    storedBytes: 0,
    checksumFailures: [],
  }
  await writeBackupRecord(repo, record)
  return record
}
