// The repository layer's only door: what engines (backup, restore, WAL, verify) and the library import. Behind it
// stay the storage keys, packs, index objects, the codec and its worker threads, and the key material.
// docs/repository-format.md describes the bytes; this module the API.

export { conditionalWriteNotice, initRepository, locationIsEmpty, openRepository, type InitRepositoryOptions, type OpenRepositoryOptions } from './open.js'
export {
  Repository,
  type BlobNumbering,
  type DamagedObject,
  type KeyInfo,
  type PutBlobResult,
  type RebuildIndexResult,
  type RecordInfo,
  type SessionStats,
} from './repository.js'
export { verifyRepository, type VerifyOptions, type VerifyProblem, type VerifyResult, type VerifyStats } from './verify.js'
export { collectGarbage, GC_LOCK_PURPOSE, type GcOptions, type GcResult } from './gc.js'
export { CONDEMNED_RECORD_KIND, type CondemnedRecord } from './condemned.js'
export { MAX_BLOB_BYTES, type BlobId, type BlobType } from './blob.js'
export type { BlobLocation } from './blob-index.js'
export { conditionalWriteOf, FORMAT_VERSION, type CompressionConfig, type RepoConfig } from './config.js'
export { DEFAULT_SCRYPT, type ScryptParams } from './crypto.js'
export { MAX_RECORD_BYTES, type RepoRecord } from './record-format.js'
export { BACKUP_LOCK_PURPOSE, EXPIRE_LOCK_PURPOSE, formatLockAge } from './lock.js'
export type { AcquireLockOptions, LockHoldState, LockInfo, LockKind, LockState, LockStateChange, LockStatus, LockTiming, RepoLock } from './lock.js'
// The per-byte work, on worker threads or not: engines choose how many workers, never see the codec or keys.
export { defaultWorkers } from './codec-pool.js'
export { pageHashesOf, type AnalyzeRequest } from './codec-work.js'
export { hashPagesInto } from './page-hash.js'
export { WindowStore, type WindowFacts } from './window-store.js'
export { BlobReader, type BlobReaderOptions } from './blob-reader.js'
// What a writer must remember of every file until the end of a backup, compressed in memory.
export { CompressedLines } from './compressed-lines.js'
// The repository's own structures (normative in docs/backup-format.md): records, file lists, file maps, WAL.
export * from './backup-record.js'
export * from './file-list.js'
export { FileListWriter } from './file-list-writer.js'
export { GrowingBytes } from './growing-bytes.js'
export * from './inline-file-map.js'
export * from './file-map.js'
export * from './wal-catalog.js'
export { putWalPieces, WAL_PIECE_BYTES } from './wal-pieces.js'
export { WalSegmentWriter, type SegmentWriterOptions, type StoredSegment } from './wal-segment-writer.js'
export * from './summary.js'
export * from './wal-reach.js'
export * from './retention-policy.js'
export * from './retention.js'
export * from './retention-plan.js'
export * from './policy-store.js'
export * from './backup-space.js'
export * from './clusters.js'
export * from './drill-record.js'
// What monitoring reads (`pgkeep metrics`, `pgkeep check --max-*-age`).
export * from './drill-status.js'
export * from './repository-usage.js'
export * from './repository-status.js'
