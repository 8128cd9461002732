// The restore engine: turns a backup of the repository back into a data directory that starts, in phases. It
// chooses the backup and checks every option, the target and every entry of the backup before touching anything
// (prepare-target.ts); writes a marker first, then the files in parallel from verified blobs (restore-files.ts);
// and finishes the directory: the WAL the backup needs, the recovery settings, global/pg_control last and a
// backup_manifest for pg_verifybackup (finish-directory.ts). An interrupted or failed restore leaves a directory no
// server will start on.

import { setMaxListeners } from 'node:events'
import { mkdir, rm } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { UsageError } from '../errors.js'
import { OperationEvents, type OperationOptions } from '../events.js'
import { majorSupport } from '../pg/versions.js'
import { assertSoundBackupRecord, type BackupRecord, type BlobReader, defaultWorkers, FileListReader, type Repository } from '../repo/index.js'
import { chooseBackup } from './choose-backup.js'
import { removeExtraneous } from './delta-cleanup.js'
import { finishDirectory } from './finish-directory.js'
import { prepareTarget } from './prepare-target.js'
import type { RecoveryOptions } from './recovery-config.js'
import { MANIFEST_NAME, RestoredManifest } from './restored-manifest.js'
import { checkEntries, linkTablespaces, restoreFiles } from './restore-files.js'
import { RestoreProgress } from './restore-progress.js'
import type { TablespaceMapping } from './tablespace-mapping.js'
import { syncDirectory } from '../storage/durable-file.js'
import { CONTROL_FILE, RESTORE_MARKER, writeMarker } from './target-directory.js'
import { checkTargetReachable } from './target-reach.js'
import { WritebackAhead } from './target-sync.js'
import { TargetTree } from './target-tree.js'

/**
 * Options of {@link restoreBackup}. Progress phases: `cleanup` (delta), `files`, `wal`, `finish`; bytes are the
 * backup's covered so far, items its files, detail `bytesWritten` (a delta writes less than it covers).
 */
export interface RestoreOptions extends OperationOptions {
  repo: Repository
  /** The data directory to create (missing or empty), or to update with `delta`. */
  pgdata: string
  /** A backup id or 'latest' (default). With a recovery target and no id, the newest backup before it. */
  backup?: string
  /** The cluster, by name or system identifier; needed when the repository holds more than one (choose-backup.ts). */
  cluster?: string
  tablespaceMapping?: readonly TablespaceMapping[]
  /**
   * Every tablespace no mapping names goes to `<tablespaceRoot>/<oid>` instead of its original location (a drill
   * restores into a scratch directory this way, whatever the chosen backup's tablespaces are).
   */
  tablespaceRoot?: string
  /**
   * Called with the backup chosen, before anything is written; a rejection ends the restore there (a drill
   * checks that it has server binaries of the backup's major).
   */
  onBackupChosen?: (backup: BackupRecord) => void | Promise<void>
  /** How the server recovers; default `{ mode: 'none' }` (replay pg_wal, open on the backup's timeline). */
  recovery?: RecoveryOptions
  /** Update an existing copy of the same cluster, writing only what differs. */
  delta?: boolean
  /** Files (or pieces of large files) written at once; default 4. */
  jobs?: number
  /** Bytes of decoded blobs kept for reuse and read ahead; default 10 MiB per job, at least 32 MiB. */
  cacheBytes?: number
  /**
   * Small files written on the calling thread before the others go to a writer thread of their own (0: all on it);
   * default 0 for a backup of more than 4,096 files, else 4,096, so that a restore of few small files does not
   * start the thread (docs/restore.md).
   */
  smallFileThreadAfter?: number
  /** Worker threads decoding blobs and hashing pages; default: the cores beyond two, at most `jobs` (Repository.openBlobReader says why). */
  workers?: number
  /**
   * Make everything written durable before pg_control is written: syncfs of the target's file systems, else an
   * fsync of every file and directory (docs/restore.md, "Durability"; default true).
   */
  sync?: boolean
}

export interface RestoreResult {
  backupId: string
  backupType: 'full' | 'incremental'
  /** Why this backup was chosen. */
  reason: string
  systemId: string
  serverVersion: string
  timeline: number
  startLsn: string
  endLsn: string
  pgdata: string
  tablespaces: { oid: number; location: string }[]
  delta: boolean
  /** Files of the backup (directories and links not counted). */
  files: number
  /** Files written (all of them, unless delta found some already right). */
  filesWritten: number
  filesUnchanged: number
  /** Entries the delta restore removed because the backup does not have them. */
  removed: number
  /** Logical size of the backup's files. */
  sizeBytes: number
  /** Bytes of file content written (WAL not included). */
  bytesWritten: number
  walSegments: string[]
  walBytes: number
  signalFile: 'recovery.signal' | 'standby.signal' | null
  /** postgresql.auto.conf settings of the backup that were commented out. */
  disabledSettings: string[]
  /** Blobs read for file data and maps, the storage reads that carried them, and blobs read again one by one. */
  reads: { blobs: number; storageReads: number; fallbacks: number }
  durationMs: number
}

/**
 * Restores a backup into `pgdata`. See docs/restore.md.
 * @throws UsageError on a bad option or target directory (nothing written then)
 * @throws IntegrityError naming the file and backup when a blob is missing or damaged (the directory is then left
 *   incomplete: no global/pg_control, a `pgkeep-restore-incomplete` marker)
 */
export async function restoreBackup(o: RestoreOptions): Promise<RestoreResult> {
  const started = Date.now()
  const events = new OperationEvents('restore', o.onEvent)
  const say = (level: 'info' | 'warning', text: string, code?: string, data?: Record<string, unknown>) => events.say(level, text, code, data)
  const pgdata = resolve(o.pgdata)
  const jobs = o.jobs ?? 4
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > 128) throw new UsageError(`invalid number of jobs ${String(jobs)}`, { hint: 'use 1 to 128' })
  const sync = o.sync ?? true
  const recovery: RecoveryOptions = o.recovery ?? { mode: 'none' }
  const repo = o.repo

  // A shared lock tells maintenance (gc, expire) that a reader is there. With read-only access to the repository
  // (a DR credential) it cannot be written: restore then goes on without one, reading only, and says so.
  const lock = await repo.acquireReaderLock({
    purpose: 'restore',
    signal: o.signal,
    onStateChange: (c) => c.state === 'at-risk' && say('warning', c.message),
  })
  if (!lock)
    say(
      'warning',
      `no write access to repository '${repo.location}': restoring without a lock, so maintenance (gc, expire) started meanwhile would not wait for this restore`,
    )
  const signal = AbortSignal.any([o.signal, lock?.signal].filter((x): x is AbortSignal => x !== undefined))
  // Every blob read in flight listens on it (jobs × read-ahead of them): not a leak.
  setMaxListeners(0, signal)
  let touched = false
  let manifest: RestoredManifest | undefined
  let blobs: BlobReader | undefined
  let writebackAhead: WritebackAhead | undefined
  let signalWritten: string | null = null
  try {
    // Prepare: which backup, whether its target can be reached, where it goes, whether every entry may be written.
    const { backup, reason } = await chooseBackup(repo, { backup: o.backup, cluster: o.cluster, target: recovery.target, signal })
    assertSoundBackupRecord(backup)
    // Said before anything is written (code 'backup-chosen'): a person sees at once which backup is coming back.
    say(
      'info',
      `restoring backup ${backup.id} (${backup.type}, PostgreSQL ${backup.server.version}, ${backup.startLsn}..${backup.endLsn}): ${reason}`,
      'backup-chosen',
      {
        backupId: backup.id,
        systemId: backup.systemId,
        reason,
      },
    )
    if (majorSupport(backup.server.major) === 'untested') {
      say('warning', `backup ${backup.id} is of PostgreSQL ${backup.server.version}, newer than the majors pgkeep is tested against`)
    }
    await checkTargetReachable(repo, backup, recovery, { signal })
    await o.onBackupChosen?.(backup)

    const delta = o.delta === true
    const mappings = withTablespaceRoot(backup, o.tablespaceMapping ?? [], o.tablespaceRoot)
    const { locations } = await prepareTarget({ pgdata, backup, mappings, delta })
    const tree = new TargetTree(pgdata, locations, `backup ${backup.id}`)
    const reader = new FileListReader(repo, backup.files, undefined, `backup ${backup.id}`)
    // Every entry is checked before the first byte is written: a damaged or hostile list is refused whole.
    await checkEntries(reader, tree, backup, signal)

    // From here on the directory is ours, and unusable until the end.
    await mkdir(pgdata, { recursive: true, mode: 0o700 })
    touched = true
    const marker = { systemId: backup.systemId, backupId: backup.id, startedAt: new Date(started).toISOString(), pgdata }
    await writeMarker(pgdata, marker)
    for (const location of locations.values()) {
      await mkdir(location, { recursive: true, mode: 0o700 })
      await writeMarker(location, marker)
    }
    if (delta) {
      for (const name of [CONTROL_FILE, MANIFEST_NAME, 'recovery.signal', 'standby.signal']) await rm(join(pgdata, name), { force: true })
      await syncDirectory(pgdata)
      await syncDirectory(join(pgdata, 'global')).catch(() => {})
    }

    writebackAhead = sync ? await WritebackAhead.start([pgdata, ...locations.values()], { signal }) : undefined
    const ahead = writebackAhead
    const progress = new RestoreProgress(events, backup.files.sizeBytes, backup.files.count, ahead && ((bytes) => ahead.written(bytes)))
    let removed = 0
    if (delta) {
      progress.phase('cleanup')
      const r = await removeExtraneous({ pgdata, tablespaces: locations, lookup: (p) => reader.get(p, { signal }), keep: new Set([RESTORE_MARKER]), signal })
      removed = r.removed
      if (r.walLinkRemoved) say('info', `pg_wal was a link to '${r.walLinkRemoved}'; it is restored as a directory (nothing was removed there)`)
      if (r.removed > 0)
        say('info', `removed ${r.removed} entries the backup does not have${r.removedPaths.length ? `, e.g. ${r.removedPaths.slice(0, 5).join(', ')}` : ''}`)
    }
    await linkTablespaces(pgdata, locations)
    manifest = await RestoredManifest.create(pgdata, backup.server.major >= 17 ? { version: 2, systemId: BigInt(backup.systemId) } : { version: 1 })

    // Write: every file and directory but the few that make the directory startable.
    blobs = repo.openBlobReader({ signal, workers: o.workers ?? defaultWorkers(2, Math.min(jobs, 8)) })
    const written = await restoreFiles({
      repo,
      backup,
      reader,
      tree,
      locations,
      blobs,
      manifest,
      progress,
      jobs,
      cacheBytes: o.cacheBytes,
      smallFileThreadAfter: o.smallFileThreadAfter,
      delta,
      signal,
    })

    // Finish: the WAL, the held-back files, pg_control last.
    const finished = await finishDirectory({
      repo,
      backup,
      pgdata,
      tree,
      locations,
      recovery,
      deferred: written.deferred,
      dirs: written.dirs,
      manifest,
      progress,
      sync,
      writebackAhead,
      signal,
      say,
      onSignalFile: (name) => {
        signalWritten = name
      },
    })
    manifest = undefined

    return {
      backupId: backup.id,
      backupType: backup.type,
      reason,
      systemId: backup.systemId,
      serverVersion: backup.server.version,
      timeline: backup.timeline,
      startLsn: backup.startLsn,
      endLsn: backup.endLsn,
      pgdata,
      tablespaces: [...locations].map(([oid, location]) => ({ oid, location })),
      delta,
      files: written.files,
      filesWritten: written.filesWritten + written.deferred.size,
      filesUnchanged: written.filesUnchanged,
      removed,
      sizeBytes: backup.files.sizeBytes,
      bytesWritten: progress.written,
      walSegments: finished.walSegments,
      walBytes: finished.walBytes,
      signalFile: finished.signalFile,
      disabledSettings: finished.disabledSettings,
      reads: { blobs: blobs.stats.blobs, storageReads: blobs.stats.runs, fallbacks: blobs.stats.fallbacks },
      durationMs: Date.now() - started,
    }
  } catch (err) {
    await manifest?.discard().catch(() => {})
    // A failure after the signal file was written (syncing, pg_control itself): take it away again.
    if (signalWritten) await rm(join(pgdata, signalWritten), { force: true }).catch(() => {})
    if (touched) {
      say(
        'warning',
        `the restore into '${pgdata}' did not finish: the directory is incomplete and will not start (it has no ${CONTROL_FILE}); run the restore again (--delta reuses what was written) or remove it`,
      )
    }
    throw err
  } finally {
    await blobs?.close().catch(() => {})
    // No flush of the target outlives the command (it never fails: a failure only ends the flushes).
    await writebackAhead?.settle()
    await lock?.release().catch(() => {})
  }
}

/** The mappings given, and one to `<root>/<oid>` for every tablespace of the backup they leave unmapped. */
function withTablespaceRoot(backup: BackupRecord, mappings: readonly TablespaceMapping[], root: string | undefined): TablespaceMapping[] {
  if (root === undefined) return [...mappings]
  const base = resolve(root)
  const named = (t: { oid: number; location: string }) => mappings.some((m) => m.from === String(t.oid) || resolve(m.from) === resolve(t.location))
  return [...mappings, ...backup.tablespaces.filter((t) => !named(t)).map((t) => ({ from: String(t.oid), to: join(base, String(t.oid)) }))]
}
