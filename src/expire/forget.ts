// `forget`: removes chosen backups by id (their records only; blobs stay until gc, WAL until expire). Every backup
// restores on its own, so removing one never breaks another. The newest backup of a cluster goes only with `force`:
// it is what restore takes by default, and an incremental's parent for the next backup.

import { NotFoundError, UsageError } from '../errors.js'
import { OperationEvents, type OperationOptions } from '../events.js'
import { BACKUP_RECORD_KIND, type BackupRecord, backupKey, listBackups, type LockTiming, type Repository, resolveCluster } from '../repo/index.js'
import { removeAll, takeRemovalLock } from './remove-all.js'

export interface ForgetOptions extends OperationOptions {
  repo: Repository
  /** Backup ids to remove. */
  backupIds: readonly string[]
  /** Look for the ids in this cluster only (name or system identifier); needed when an id is in two clusters. */
  cluster?: string
  /** Allow removing the newest backup of a cluster. */
  force?: boolean
  /** Check and report, remove nothing (and take no lock). */
  dryRun?: boolean
  lockTiming?: LockTiming
}

export interface ForgottenBackup {
  readonly id: string
  readonly systemId: string
  readonly clusterName: string
  readonly startedAt: string
  readonly finishedAt: string
  /** It was the newest backup of its cluster. */
  readonly newest: boolean
}

export interface ForgetResult {
  readonly dryRun: boolean
  readonly backups: readonly ForgottenBackup[]
}

/**
 * Removes the records of the backups named. Every id is checked before anything is removed.
 * @throws NotFoundError for an id the repository does not hold; UsageError for an id two clusters hold, or the
 *   newest backup of a cluster without `force`; LockedError when the lock cannot be taken or is lost
 */
export async function forgetBackups(options: ForgetOptions): Promise<ForgetResult> {
  const { repo, signal } = options
  const events = new OperationEvents('forget', options.onEvent)
  if (options.backupIds.length === 0) throw new UsageError('no backup to forget was named', { hint: "give backup ids ('pgkeep info' lists them)" })
  const lock = options.dryRun ? undefined : await takeRemovalLock(repo, 'forget', options, events)
  try {
    const systemId = options.cluster === undefined ? undefined : (await resolveCluster(repo, options.cluster, { signal })).systemId
    const all = await listBackups(repo, systemId, { signal })
    const newest = new Map<string, string>()
    for (const b of all) newest.set(b.systemId, b.id) // oldest first: the last one of each cluster wins
    const chosen: BackupRecord[] = []
    for (const id of new Set(options.backupIds)) {
      const found = all.filter((b) => b.id === id)
      if (found.length === 0) {
        throw new NotFoundError(`backup '${id}' is not in repository '${repo.location}'${systemId ? ` (cluster ${options.cluster})` : ''}`, {
          hint: "'pgkeep info' lists the backups; nothing was removed",
        })
      }
      if (found.length > 1) {
        throw new UsageError(`backup id '${id}' is used in ${found.length} clusters: ${found.map((b) => b.systemId).join(', ')}`, {
          hint: 'say which cluster with --cluster SYSTEMID; nothing was removed',
        })
      }
      const b = found[0]!
      if (newest.get(b.systemId) === b.id && !options.force) {
        throw new UsageError(`backup '${id}' is the newest backup of cluster ${b.clusterName}`, {
          hint: 'restore takes it by default and the next backup builds on it; add --force to remove it anyway (nothing was removed)',
        })
      }
      chosen.push(b)
    }
    if (!options.dryRun) {
      events.phase('backups', { bytesDone: 0, bytesTotal: null, itemsDone: 0, itemsTotal: chosen.length })
      await removeAll(
        chosen.map((b) => () => repo.removeRecord(BACKUP_RECORD_KIND, backupKey(b.systemId, b.id), { signal })),
        (done) => events.progress({ bytesDone: 0, bytesTotal: null, itemsDone: done, itemsTotal: chosen.length }),
      )
      events.flush()
    }
    return {
      dryRun: options.dryRun === true,
      backups: chosen.map((b) => ({
        id: b.id,
        systemId: b.systemId,
        clusterName: b.clusterName,
        startedAt: b.startedAt,
        finishedAt: b.finishedAt,
        newest: newest.get(b.systemId) === b.id,
      })),
    }
  } finally {
    await lock?.release().catch(() => {})
  }
}
