// The repository layer's public surface: what engines (backup, restore, WAL, verify) and the CLI import.
// docs/repository-format.md describes the bytes; this module the API.

export {
  conditionalWriteNotice,
  initRepository,
  openRepository,
  Repository,
  type DamagedObject,
  type InitRepositoryOptions,
  type OpenRepositoryOptions,
  type PutBlobResult,
  type RebuildIndexResult,
  type RecordInfo,
  type SessionStats,
} from './repository.js'
export { verifyRepository, type VerifyOptions, type VerifyProblem, type VerifyProgress, type VerifyResult, type VerifyStats } from './verify.js'
export { MAX_BLOB_BYTES, type BlobId, type BlobType } from './blob.js'
export type { BlobLocation } from './blob-index.js'
export { conditionalWriteOf, FORMAT_VERSION, type CompressionConfig, type RepoConfig } from './config.js'
export { DEFAULT_SCRYPT, type ScryptParams } from './crypto.js'
export { MAX_RECORD_BYTES, type RepoRecord } from './record-format.js'
export type { AcquireLockOptions, LockHoldState, LockInfo, LockKind, LockState, LockStateChange, LockStatus, LockTiming, RepoLock } from './lock.js'
