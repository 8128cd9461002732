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
  type KeyInfo,
  type LockStatus,
  type RepoConfig,
  listBackups,
  findBackup,
  summarizeRepository,
  listClusters,
  type RepoCluster,
  verifyRepository,
  type VerifyOptions,
  type VerifyResult,
  type VerifyProblem,
  collectGarbage,
  type GcOptions,
  type GcResult,
  // Retention: the policy type and its parsing (flags, config files), the pure decisions, plans, stored policies
  type RetentionPolicy,
  type RetentionRuleText,
  type Duration,
  parseRetentionPolicy,
  retentionPolicyProblems,
  parseDuration,
  describePolicy,
  decideBackups,
  decideWal,
  type RetentionBackup,
  type BackupDecision,
  type KeepReason,
  type KeepRule,
  type WalDecision,
  type WalReason,
  type WalRetention,
  type WalRun,
  planRetention,
  type RetentionPlan,
  type StoredPolicy,
  listStoredPolicies,
  policyInForce,
  recoverableWindow,
  type RecoverableWindow,
  backupSpace,
  type BackupSpace,
  type BackupSpaceResult,
} from './repo/index.js'

// Operations
export { checkServer, type CheckOptions, type CheckReport, type CheckProblem, CheckProblemCodes } from './check/check-server.js'
export { SUPPORTED_MAJORS } from './pg/versions.js'
export { takeBackup, type BackupOptions, type BackupResult, type BackupType } from './backup/backup.js'
export { restoreBackup, type RestoreOptions, type RestoreResult } from './restore/restore.js'
export type { RecoveryOptions } from './restore/recovery-config.js'
export type { TablespaceMapping } from './restore/tablespace-mapping.js'
export { WalStreamer, type WalStreamOptions, type WalStreamResult, type WalStreamStatus } from './wal/wal-streamer.js'
export { pushWalFile, type PushWalOptions, type PushWalResult } from './wal/wal-push.js'
export { fetchWalFile } from './wal/wal-fetch.js'
export {
  expireBackups,
  type ExpireOptions,
  type ExpireResult,
  type ExpireClusterResult,
  type ExpiredBackup,
} from './expire/expire.js'
export { forgetBackups, type ForgetOptions, type ForgetResult, type ForgottenBackup } from './expire/forget.js'
export { setRetentionPolicy, clearRetentionPolicy, type PolicyOptions } from './expire/policy.js'
export { verifyBackups, type VerifyBackupsResult, type BackupProblem } from './verify/verify-backups.js'
export { copyBackups, type CopyOptions, type CopyResult, type CopiedBackup } from './copy/copy-backups.js'

// Shared shapes
export type { ServerTarget, ConnectionOverrides } from './server-target.js'
export type { OperationOptions, PgkeepEvent, ProgressEvent, MessageEvent, OperationName, EventListener } from './events.js'

// Errors: classes with stable codes; `isPgkeepError` and `hasErrorCode` work across two copies of the package.
export {
  BaseError,
  isPgkeepError,
  hasErrorCode,
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
