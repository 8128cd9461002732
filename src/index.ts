// pgkeep as a library: the one public door (`import { takeBackup } from 'pgkeep'`). Everything a program needs to
// back up, stream and archive WAL, restore, list, verify and maintain a repository is exported here, with its
// option and result types and the error classes; nothing else of the package is public. docs/library.md shows a
// complete program. Every operation takes an AbortSignal (`signal`) and reports through `onEvent`; none reads
// process.env or prints.

// Storage and repositories
export { openStorage, type OpenStorageOptions } from './storage/open.js'
export type { Storage, ObjectInfo } from './storage/storage.js'
export {
  initRepository,
  openRepository,
  Repository,
  type InitRepositoryOptions,
  type OpenRepositoryOptions,
  type BackupRecord,
  type ClusterSummary,
  type LockStatus,
  type RepoConfig,
  listBackups,
  findBackup,
  summarizeRepository,
  verifyRepository,
  type VerifyOptions,
  type VerifyResult,
  type VerifyProblem,
  collectGarbage,
  type GcOptions,
  type GcResult,
} from './repo/index.js'

// Operations
export { checkServer, SUPPORTED_MAJORS, type CheckOptions, type CheckReport, type CheckProblem, CheckProblemCodes } from './check/check-server.js'
export { takeBackup, type BackupOptions, type BackupResult, type BackupType } from './backup/backup.js'
export { restoreBackup, type RestoreOptions, type RestoreResult } from './restore/restore.js'
export type { RecoveryOptions } from './restore/recovery-config.js'
export type { TablespaceMapping } from './restore/tablespace-mapping.js'
export { WalStreamer, type WalStreamOptions, type WalStreamResult, type WalStreamStatus } from './wal/wal-streamer.js'
export { pushWalFile, type PushWalOptions, type PushWalResult } from './wal/wal-push.js'
export { fetchWalFile } from './wal/wal-fetch.js'
export { verifyBackups, type VerifyBackupsResult, type BackupProblem } from './verify/verify-backups.js'

// Shared shapes
export type { ServerTarget, ConnectionOverrides } from './server-target.js'
export type { OperationOptions, PgkeepEvent, ProgressEvent, MessageEvent, OperationName, EventListener } from './events.js'

// Errors: classes with stable codes; `isPgkeepError` and `hasErrorCode` work across two copies of the package.
export {
  BaseError,
  isPgkeepError,
  Codes,
  ProtocolCodes,
  StorageError,
  NotFoundError,
  AlreadyExistsError,
  IntegrityError,
  RepoFormatError,
  PassphraseError,
  LockedError,
  FormatError,
  UsageError,
  ConfigError,
  AssertionError,
  ProtocolError,
  ConnectionError,
  AuthError,
  ConnectionConfigError,
  ServerError,
  AbortedError,
} from './errors.js'
