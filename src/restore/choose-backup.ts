// Which backup a restore starts from: the one named, the newest, or, for a recovery target, the newest backup
// that ends before the target (recovery cannot stop before the point where its backup becomes consistent).

import { NotFoundError, UsageError } from '../errors.js'
import { parseLsn } from '../pg/lsn.js'
import { decodeControlFile } from '../pg/pg-control.js'
import { parseRecoveryTargetTime, type RecoveryTarget } from '../pg/recovery-conf.js'
import { findBackup, listBackups, type BackupRecord } from '../repo/backup-record.js'
import { FileListReader } from '../repo/file-list.js'
import type { Repository } from '../repo/repository.js'
import { readWholeFile } from './file-content.js'

export interface ChooseBackupOptions {
  /** A backup id or 'latest' (default). An explicit id wins over the target. */
  backup?: string
  /** Limit the choice to one cluster of the repository. */
  systemId?: string
  target?: RecoveryTarget
  signal?: AbortSignal
}

export interface ChosenBackup {
  backup: BackupRecord
  /** Why this one, for the user. */
  reason: string
}

/**
 * Picks the backup to restore.
 * - an id: that backup;
 * - a time target: the newest backup that finished before it;
 * - an LSN target: the newest backup whose end LSN is at or before it;
 * - an xid target: the newest backup whose checkpoint had not yet assigned the xid (its pg_control's next xid is
 *   at or below it), so the transaction's commit comes after the backup started;
 * - otherwise (a name, immediate, none): the newest backup.
 * @throws NotFoundError when no backup qualifies
 */
export async function chooseBackup(repo: Repository, o: ChooseBackupOptions): Promise<ChosenBackup> {
  const explicit = o.backup !== undefined && o.backup !== 'latest'
  if (explicit || !o.target || o.target.type === 'immediate' || o.target.type === 'name') {
    const backup = await findBackup(repo, o.backup ?? 'latest', o.systemId, { signal: o.signal })
    const reason = explicit
      ? 'named on the command line'
      : o.target?.type === 'name'
        ? `the newest backup (where restore point '${o.target.name}' lies cannot be known in advance; pick an older backup with --backup if it precedes this one)`
        : 'the newest backup'
    return { backup, reason }
  }
  const all = await listBackups(repo, o.systemId, { signal: o.signal })
  if (all.length === 0) throw new NotFoundError(`repository '${repo.location}' has no backup`, { hint: "take one with 'pgkeep backup'" })
  const systems = new Set(all.map((b) => b.systemId))
  if (systems.size > 1) {
    throw new UsageError(`repository '${repo.location}' holds backups of ${systems.size} clusters; a recovery target needs one`, {
      hint: 'name the backup with --backup',
    })
  }
  const newestFirst = [...all].reverse()
  const t = o.target
  let found: BackupRecord | undefined
  let reason = ''
  if (t.type === 'time') {
    const when = parseRecoveryTargetTime(t.time).ms
    found = newestFirst.find((b) => Date.parse(b.finishedAt) < when)
    reason = `the newest backup that finished before ${new Date(when).toISOString()}`
  } else if (t.type === 'lsn') {
    const lsn = typeof t.lsn === 'bigint' ? t.lsn : parseLsn(t.lsn)
    found = newestFirst.find((b) => parseLsn(b.endLsn) <= lsn)
    reason = `the newest backup that ends at or before ${String(t.lsn)}`
  } else {
    const xid = BigInt(t.xid)
    for (const b of newestFirst) {
      const next = await nextFullXid(repo, b, o.signal)
      // A 32-bit target xid is taken to be in the backup's epoch.
      const target = xid > 0xffff_ffffn ? xid : ((next >> 32n) << 32n) | xid
      if (next <= target) {
        found = b
        break
      }
    }
    reason = `the newest backup taken before transaction ${String(t.xid)} started`
  }
  if (!found) {
    throw new NotFoundError(`no backup in repository '${repo.location}' ends before the recovery target`, {
      hint: 'choose a later target, or name a backup with --backup',
    })
  }
  return { backup: found, reason }
}

async function nextFullXid(repo: Repository, b: BackupRecord, signal?: AbortSignal): Promise<bigint> {
  const entry = await new FileListReader(repo, b.files).get('global/pg_control', { signal })
  if (!entry) throw new NotFoundError(`backup ${b.id} has no global/pg_control`)
  return decodeControlFile(await readWholeFile(repo, b.id, entry, signal)).nextFullXid
}
