// The last phase of a restore: what makes the directory start. The WAL the backup needs goes into pg_wal (marked
// archived); the held-back small files are read and verified before the first of them is written, then written:
// postgresql.auto.conf with the recovery settings, tablespace_map with the mapped locations, backup_label, the signal
// file; everything is made durable at once (target-sync.ts); global/pg_control goes last of all (written under a
// temporary name, fsynced and renamed), then the backup_manifest, the markers go, and directories get their modes
// and times.

import { chmod, rename, utimes } from 'node:fs/promises'
import { join } from 'node:path'
import { UsageError } from '../errors.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { restoredMode } from '../pg/data-dir-entry.js'
import { parseLsn } from '../pg/lsn.js'
import { formatTablespaceMap, parseTablespaceMap } from '../pg/tablespace-map.js'
import type { BackupRecord, FileEntry, Repository } from '../repo/index.js'
import { readWholeFile } from './file-content.js'
import { formatRecoveryLines, type RecoveryOptions, restoredAutoConf, signalFileOf } from './recovery-config.js'
import type { RestoredManifest } from './restored-manifest.js'
import type { RestoredDirectory } from './restore-files.js'
import type { RestoreProgress } from './restore-progress.js'
import { syncDirectory } from '../storage/durable-file.js'
import { CONTROL_FILE, removeMarker } from './target-directory.js'
import { syncTarget, type TargetSyncMethod, type WritebackAhead } from './target-sync.js'
import type { TargetTree } from './target-tree.js'
import { writeTimelineHistory } from './timeline-history.js'
import { writeBackupWal } from './wal-files.js'

export interface FinishPhase {
  repo: Repository
  backup: BackupRecord
  pgdata: string
  tree: TargetTree
  locations: ReadonlyMap<number, string>
  recovery: RecoveryOptions
  deferred: ReadonlyMap<string, FileEntry>
  dirs: RestoredDirectory[]
  manifest: RestoredManifest
  progress: RestoreProgress
  sync: boolean
  /** The writeback started while the files were written, which the final sync waits for. */
  writebackAhead?: WritebackAhead
  signal: AbortSignal
  say: (level: 'info' | 'warning', text: string) => void
  /** Called with the signal file's name once it is written, and with null once pg_control is (from then on the directory is complete). */
  onSignalFile: (name: string | null) => void
}

export interface Finished {
  walSegments: string[]
  walBytes: number
  signalFile: 'recovery.signal' | 'standby.signal' | null
  disabledSettings: string[]
  /** How the target was made durable before pg_control (undefined without sync). */
  syncMethod: TargetSyncMethod | undefined
}

export async function finishDirectory(p: FinishPhase): Promise<Finished> {
  const { backup, pgdata, tree, sync, signal, progress, manifest: m } = p
  // The WAL from the backup's start to its end, so the directory reaches consistency on its own.
  progress.phase('wal')
  await tree.mkdir('pg_wal/archive_status')
  const pgWal = join(pgdata, 'pg_wal')
  const walSegments = await writeBackupWal(p.repo, backup, pgWal, { signal })
  const history = await writeTimelineHistory(p.repo, backup.systemId, backup.timeline, pgWal, { signal })
  for (const name of history ? [...walSegments, history] : walSegments) {
    // Marked archived: the restored server must not archive the backup's WAL again.
    await writeSmallFile(tree, `pg_wal/archive_status/${name}.done`, Buffer.alloc(0), 0o600, undefined)
  }

  // The small files that make the directory startable, pg_control last.
  progress.phase('finish')
  const readEntry = (e: FileEntry): Promise<Buffer> => readWholeFile(p.repo, backup.id, e, signal)
  const writeListed = async (path: string, bytes: Buffer, mode: number, mtime: number | undefined) => {
    await writeSmallFile(tree, path, bytes, mode, mtime)
    const at = mtime === undefined ? new Date() : new Date(mtime * 1000)
    await m.add({ path, size: bytes.length, lastModified: at, checksumAlgorithm: 'CRC32C', checksum: crc32cHexLE(crc32c(bytes)) })
    progress.add(bytes.length, bytes.length)
  }

  // Everything these files need is read (and verified) before the first of them is written: a damaged blob
  // fails the restore before a signal file exists.
  const control = p.deferred.get(CONTROL_FILE)
  if (!control) throw new UsageError(`backup ${backup.id} has no ${CONTROL_FILE}`, { hint: 'the backup is damaged; restore another one with --backup' })
  const controlBytes = await readEntry(control)
  const autoConf = p.deferred.get('postgresql.auto.conf')
  const original = autoConf ? (await readEntry(autoConf)).toString('utf8') : ''
  const tsMap = p.deferred.get('tablespace_map')
  const tsMapBytes = tsMap ? await readEntry(tsMap) : undefined
  const label = p.deferred.get('backup_label')
  const labelBytes = label ? await readEntry(label) : undefined

  const conf = restoredAutoConf(original, formatRecoveryLines(p.recovery), backup.id)
  const disabledSettings = [...new Set(conf.commented)]
  if (disabledSettings.length > 0) p.say('info', `postgresql.auto.conf: disabled the backup's ${disabledSettings.join(', ')}`)
  if (autoConf || conf.text !== '') {
    const unchanged = autoConf !== undefined && conf.text === original
    await writeListed('postgresql.auto.conf', Buffer.from(conf.text), autoConf?.mode ?? 0o600, unchanged ? autoConf.mtime : undefined)
  }
  if (tsMap && tsMapBytes) {
    // The map names where the server links each tablespace at startup: the mapped locations.
    const major = backup.server.major
    const entries = parseTablespaceMap(tsMapBytes, { major }).map((t) => ({ oid: t.oid, path: p.locations.get(t.oid) ?? t.path }))
    await writeListed('tablespace_map', Buffer.from(formatTablespaceMap(entries, { major })), tsMap.mode, tsMap.mtime)
  }
  if (label && labelBytes) await writeListed('backup_label', labelBytes, label.mode, label.mtime)
  const signalFile = signalFileOf(p.recovery.mode ?? 'recovery')
  if (signalFile) {
    p.onSignalFile(signalFile)
    await writeListed(signalFile, Buffer.alloc(0), 0o600, undefined)
  }

  // Every file and directory written so far is durable before pg_control exists: a crash leaves either a
  // complete directory or one no server starts on.
  const syncMethod = sync ? await syncTarget([pgdata, ...p.locations.values()], { signal, ahead: p.writebackAhead }) : undefined
  const controlTemp = `${CONTROL_FILE}.pgkeep-partial`
  await writeSmallFile(tree, controlTemp, controlBytes, control.mode, control.mtime, sync)
  await rename(join(pgdata, controlTemp), join(pgdata, CONTROL_FILE))
  // From here the directory is complete: a later failure (the manifest) must not take the signal file away.
  p.onSignalFile(null)
  if (sync) await syncDirectory(join(pgdata, 'global'))
  await m.add({
    path: CONTROL_FILE,
    size: controlBytes.length,
    lastModified: new Date(control.mtime * 1000),
    checksumAlgorithm: 'CRC32C',
    checksum: crc32cHexLE(crc32c(controlBytes)),
  })
  progress.add(controlBytes.length, controlBytes.length)
  progress.fileDone()

  await m.finish([{ timeline: backup.timeline, startLsn: parseLsn(backup.startLsn), endLsn: parseLsn(backup.endLsn) }], sync)
  for (const location of p.locations.values()) await removeMarker(location, sync)
  await removeMarker(pgdata, sync)

  // Directory modes and times last: writing into a directory changes its time.
  for (const d of [...p.dirs].reverse()) {
    await chmod(d.path, d.mode)
    await utimes(d.path, d.mtime, d.mtime)
  }
  const global = p.dirs.find((d) => d.path === join(pgdata, 'global'))
  // The server accepts a data directory of mode 0700, or 0750 when the cluster allows group access.
  await chmod(pgdata, global && (global.mode & 0o050) === 0o050 ? 0o750 : 0o700)
  progress.flush()
  return { walSegments, walBytes: walSegments.length * backup.walSegmentSizeBytes, signalFile, disabledSettings, syncMethod }
}

/** Writes a whole small file of the backup with its mode and time, fsynced when asked. */
async function writeSmallFile(tree: TargetTree, path: string, bytes: Buffer, mode: number, mtime: number | undefined, sync = false): Promise<void> {
  const fh = await tree.open(path, 'create', restoredMode('file', mode))
  try {
    await fh.writeFile(bytes)
    if (sync) await fh.sync()
    await fh.chmod(restoredMode('file', mode))
    if (mtime !== undefined) await fh.utimes(mtime, mtime)
  } finally {
    await fh.close()
  }
}
