// The repository layer's only door: what engines (backup, restore, WAL, verify) and the library import. Behind it
// stay the storage keys, packs, index objects, the codec and its worker threads, and the key material.
// docs/repository-format.md describes the bytes; this module the API.

export { conditionalWriteNotice, initRepository, locationIsEmpty, openRepository, type InitRepositoryOptions, type OpenRepositoryOptions } from './open.js'
export { Repository, type DamagedObject, type PutBlobResult, type RebuildIndexResult, type RecordInfo, type SessionStats } from './repository.js'
export { verifyRepository, type VerifyOptions, type VerifyProblem, type VerifyResult, type VerifyStats } from './verify.js'
export { MAX_BLOB_BYTES, type BlobId, type BlobType } from './blob.js'
export type { BlobLocation } from './blob-index.js'
export { conditionalWriteOf, FORMAT_VERSION, type CompressionConfig, type RepoConfig } from './config.js'
export { DEFAULT_SCRYPT, type ScryptParams } from './crypto.js'
export { MAX_RECORD_BYTES, type RepoRecord } from './record-format.js'
export { formatLockAge } from './lock.js'
export type { AcquireLockOptions, LockHoldState, LockInfo, LockKind, LockState, LockStateChange, LockStatus, LockTiming, RepoLock } from './lock.js'
// The per-byte work, on worker threads or not: engines choose how many workers, never see the codec or keys.
export { defaultWorkers } from './codec-pool.js'
export { pageHashesOf, type AnalyzeRequest } from './codec-work.js'
export { WindowStore, type WindowFacts } from './window-store.js'
export { BlobReader, type BlobReaderOptions } from './blob-reader.js'
// The repository's own structures (normative in docs/backup-format.md): records, file lists, file maps, WAL.
export * from './backup-record.js'
export * from './file-list.js'
export * from './file-map.js'
export * from './wal-catalog.js'
export { WAL_PIECE_BYTES, WalSegmentWriter, type SegmentWriterOptions, type StoredSegment } from './wal-segment-writer.js'
export * from './summary.js'
export * from './clusters.js'
