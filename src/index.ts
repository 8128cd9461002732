// pgkeep as a library: the one public door (`import { takeBackup } from 'pgkeep'`). Everything a program needs to
// back up, stream and archive WAL, restore, list, verify and maintain a repository is exported here, with its
// option and result types and the error classes; nothing else of the package is public. docs/library.md shows a
// complete program. Every operation takes an AbortSignal (`signal`) and reports through `onEvent`; none reads
// process.env or prints.

import { type DrillOptions, type DrillResult, runDrill } from './drill/drill.js'
import { restoreBackup } from './restore/restore.js'

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
  // Monitoring: what a repository says about its clusters' freshness, size and drills
  readRepositoryStatus,
  type RepositoryStatus,
  type RepositoryStatusOptions,
  type ClusterStatus,
  type LastBackupStatus,
  measureRepository,
  type RepositoryUsage,
  readDrillStatus,
  type DrillStatus,
  type DrillSummary,
} from './repo/index.js'

// Operations
export { checkServer, type CheckOptions, type CheckReport, type CheckProblem, CheckProblemCodes } from './check/check-server.js'
export { SUPPORTED_MAJORS } from './pg/versions.js'
export { takeBackup, type BackupOptions, type BackupResult, type BackupType } from './backup/backup.js'
export { restoreBackup, type RestoreOptions, type RestoreResult } from './restore/restore.js'
export { parseCheckFile, type UserCheck } from './drill/check-file.js'
export type { DrillOptions, DrillResult, DrillRestoreFunction } from './drill/drill.js'
export type { DrillRecord, DrillCheckRecord } from './repo/index.js'
export { findPgBinaries, embeddedServers, type PgBinaries, type FindPgBinariesOptions } from './local-server/pg-binaries.js'
export type { RecoveryOptions } from './restore/recovery-config.js'
export { walGetRestoreCommand, type WalGetCommandOptions } from './restore/restore-command.js'
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

/**
 * Runs a restore drill (docs/drill.md): restores a backup into a scratch directory with {@link restoreBackup},
 * starts the copy, waits for recovery, checks it, records the drill in the repository and cleans up. Resolves with
 * the report whether the drill passed or not (`passed`, `failure`).
 */
export function drillBackup(o: Omit<DrillOptions, 'restore'>): Promise<DrillResult> {
  return runDrill({ ...o, restore: restoreBackup })
}

export {
  checkFreshness,
  judgeFreshness,
  FreshnessCodes,
  type FreshnessOptions,
  type FreshnessLimits,
  type FreshnessReport,
  type FreshnessViolation,
  type ClusterFreshness,
} from './check/check-freshness.js'

// Monitoring: Prometheus metrics of a repository (and of a running WalStreamer), printed or served over HTTP
export { formatMetrics, repositoryMetrics, METRICS_CONTENT_TYPE, type FormatMetricsOptions, type StreamMetricsSource } from './metrics/prometheus.js'
export { serveMetrics, type ServeMetricsOptions, type MetricsServer } from './metrics/metrics-server.js'

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
