// The restore engine: turns a backup of the repository back into a data directory that starts. It checks every
// option before touching anything, writes a marker first and global/pg_control last (so that an interrupted or
// failed restore leaves a directory no server will start on), writes files in parallel from verified blobs, puts
// the WAL the backup needs into pg_wal, writes the recovery settings, and a backup_manifest for pg_verifybackup.

import { lstat, mkdir, open, readlink, rename, rm, symlink, chmod, utimes } from 'node:fs/promises'
import { setMaxListeners } from 'node:events'
import { join, resolve } from 'node:path'
import { IntegrityError, UsageError } from '../errors.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { printableName, restoredMode, tablespaceLinkOid } from '../pg/data-dir-entry.js'
import { parseLsn } from '../pg/lsn.js'
import { formatTablespaceMap, parseTablespaceMap } from '../pg/tablespace-map.js'
import {
  assertSoundBackupRecord,
  type BackupRecord,
  type BlobReader,
  decodeFileMap,
  defaultWorkers,
  type FileEntry,
  FileListReader,
  type Repository,
} from '../repo/index.js'
import { BlobCache } from './blob-cache.js'
import { chooseBackup } from './choose-backup.js'
import { removeExtraneous } from './delta-cleanup.js'
import { readWholeFile } from './file-content.js'
import { FileRestorer, READ_AHEAD_EXTENTS, type FileTask } from './file-restorer.js'
import { formatRecoveryLines, restoredAutoConf, signalFileOf, type RecoveryOptions } from './recovery-config.js'
import { MANIFEST_NAME, MANIFEST_TEMP_NAME, RestoredManifest } from './restored-manifest.js'
import { prepareTarget } from './prepare-target.js'
import { CONTROL_FILE, removeMarker, RESTORE_MARKER, syncDirectory, writeMarker } from './target-directory.js'
import { TargetTree } from './target-tree.js'
import { runTaskPool } from './task-pool.js'
import type { TablespaceMapping } from './tablespace-mapping.js'
import { checkTargetReachable } from './target-reach.js'
import { writeTimelineHistory } from './timeline-history.js'
import { writeBackupWal } from './wal-files.js'

export interface RestoreOptions {
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
  /** Bytes of decoded blobs kept for reuse and read ahead; default 20 MiB per job, at least 32 MiB. */
  cacheBytes?: number
  /** Worker threads decoding blobs and hashing pages; default: one fewer than the cores, at most `jobs`. */
  workers?: number
  /** fsync every file and directory before pg_control is written (default true). */
  sync?: boolean
  signal?: AbortSignal
  onProgress?: (p: RestoreProgress) => void
  onMessage?: (m: { level: 'info' | 'warning'; text: string }) => void
}

export interface RestoreProgress {
  phase: 'cleanup' | 'files' | 'wal' | 'finish'
  /** Bytes of the backup's files covered so far, of `bytesTotal`. */
  bytesDone: number
  bytesTotal: number
  /** Bytes written into the target (a delta restore writes less than it covers). */
  bytesWritten: number
  filesDone: number
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

/** Written after every other file, in this order; pg_control last of all. */
const DEFERRED = new Set(['postgresql.auto.conf', 'tablespace_map', 'backup_label', CONTROL_FILE])
/** Never restored from a backup: the restore writes its own. */
const SKIPPED = new Set([MANIFEST_NAME, MANIFEST_TEMP_NAME, RESTORE_MARKER, 'recovery.signal', 'standby.signal'])
const PROGRESS_MS = 250
/** File entries read ahead of the workers (what they need is fetched together). */
const LOOKAHEAD_ENTRIES = 64
/** Files up to this size have their data fetched ahead too (at most LOOKAHEAD_ENTRIES × this in flight). */
const SMALL_FILE_BYTES = 256 << 10

/**
 * Restores a backup into `pgdata`. See docs/restore.md.
 * @throws UsageError on a bad option or target directory (nothing written then)
 * @throws IntegrityError naming the file and backup when a blob is missing or damaged (the directory is then left
 *   incomplete: no global/pg_control, a `pgkeep-restore-incomplete` marker)
 */
export async function restoreBackup(o: RestoreOptions): Promise<RestoreResult> {
  const started = Date.now()
  const say = (level: 'info' | 'warning', text: string) => o.onMessage?.({ level, text })
  const pgdata = resolve(o.pgdata)
  const jobs = o.jobs ?? 4
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > 128) throw new UsageError(`invalid number of jobs ${String(jobs)}`, { hint: 'use 1 to 128' })
  const sync = o.sync ?? true
  const recovery: RecoveryOptions = o.recovery ?? { mode: 'none' }
  const mode = recovery.mode ?? 'recovery'
  const recoveryLines = formatRecoveryLines(recovery)
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
  let blobReader: BlobReader | undefined
  let signalWritten: string | null = null
  try {
    const { backup, reason } = await chooseBackup(repo, { backup: o.backup, cluster: o.cluster, target: recovery.target, signal })
    assertSoundBackupRecord(backup)
    say('info', `restoring backup ${backup.id} (${backup.type}, PostgreSQL ${backup.server.version}, ${backup.startLsn}..${backup.endLsn}): ${reason}`)
    await checkTargetReachable(repo, backup, recovery, { signal })
    await o.onBackupChosen?.(backup)

    const delta = o.delta === true
    const mappings = withTablespaceRoot(backup, o.tablespaceMapping ?? [], o.tablespaceRoot)
    const { locations, state } = await prepareTarget({ pgdata, backup, mappings, delta })
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

    const progress = newProgress(backup, o.onProgress)
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
    const m = manifest

    let files = 0
    let filesWritten = 0
    let filesUnchanged = 0
    const dirs: { path: string; mode: number; mtime: number }[] = []
    const deferred = new Map<string, FileEntry>()
    const blobs = (blobReader = repo.openBlobReader({ signal, workers: o.workers ?? defaultWorkers(1, Math.min(jobs, 8)) }))
    // Room for every job's read-ahead and the blobs it is writing, so nothing fetched ahead is evicted unused.
    const cache = new BlobCache((id) => blobs.read(id), o.cacheBytes ?? Math.max(32 << 20, jobs * (READ_AHEAD_EXTENTS + 4) * (1 << 20)))
    const restorer = new FileRestorer({
      repo,
      backupId: backup.id,
      cache,
      delta,
      sync,
      syncUnchanged: state.marker !== undefined,
      reader: blobs,
      signal,
      target: tree,
      onBytes: (covered, written) => progress.add(covered, written),
      onDone: async (d) => {
        progress.fileDone()
        if (d.changed) filesWritten++
        else filesUnchanged++
        await m.add({
          path: d.entry.path,
          size: d.entry.sizeBytes,
          lastModified: new Date(d.entry.mtime * 1000),
          checksumAlgorithm: 'CRC32C',
          checksum: d.crc32c,
        })
      },
    })
    // Entries are taken up to LOOKAHEAD_ENTRIES ahead of the workers, refilled in batches, and what the coming
    // files need is asked for together so that it arrives in runs rather than one request per file: the file
    // maps of relation files, and the blobs of small files (their maps first, for relation files).
    const prefetchSmall = (e: FileEntry) => {
      if (e.type !== 'file' || e.sizeBytes > SMALL_FILE_BYTES) return
      const want = (extents: readonly { blob: string | null }[]) => {
        for (const x of extents) if (x.blob !== null) cache.get(x.blob).catch(() => {})
      }
      if (e.fileMap) {
        cache.get(e.fileMap).then(
          (bytes) => want(decodeFileMap(bytes).extents),
          () => {},
        )
      } else want(e.extents ?? [])
    }
    async function* lookahead(): AsyncGenerator<FileEntry> {
      const it = reader.entries({ signal })[Symbol.asyncIterator]()
      const queue: FileEntry[] = []
      let done = false
      for (;;) {
        if (!done && queue.length <= LOOKAHEAD_ENTRIES / 2) {
          while (!done && queue.length < LOOKAHEAD_ENTRIES) {
            const r = await it.next()
            if (r.done) done = true
            else {
              if (r.value.fileMap) cache.get(r.value.fileMap).catch(() => {})
              prefetchSmall(r.value)
              queue.push(r.value)
            }
          }
        }
        const next = queue.shift()
        if (next === undefined) return
        yield next
      }
    }
    async function* tasks(): AsyncGenerator<FileTask> {
      for await (const e of lookahead()) {
        if (SKIPPED.has(e.path)) continue
        // pg_tblspc/<oid> links were made from the backup's tablespace list; no other links are backed up.
        if (e.type === 'symlink' || isTablespaceLink(e.path, locations)) continue
        if (e.type === 'directory') {
          dirs.push({ path: await tree.mkdir(e.path), mode: restoredMode('directory', e.mode), mtime: e.mtime })
          continue
        }
        files++
        if (DEFERRED.has(e.path)) deferred.set(e.path, e)
        else yield { kind: 'file', entry: e }
      }
    }
    progress.phase('files')
    await runTaskPool(tasks(), jobs, (t, spawn) => restorer.run(t, spawn), signal)

    // The WAL from the backup's start to its end, so the directory reaches consistency on its own.
    progress.phase('wal')
    await tree.mkdir('pg_wal/archive_status')
    const pgWal = join(pgdata, 'pg_wal')
    const walSegments = await writeBackupWal(repo, backup, pgWal, { signal })
    const history = await writeTimelineHistory(repo, backup.systemId, backup.timeline, pgWal, { signal })
    const walFiles = history ? [...walSegments, history] : walSegments
    for (const name of walFiles) {
      // Marked archived: the restored server must not archive the backup's WAL again.
      await writeSmallFile(tree, `pg_wal/archive_status/${name}.done`, Buffer.alloc(0), 0o600, undefined, sync)
      if (sync) await syncFile(join(pgWal, name))
    }
    const walBytes = walSegments.length * backup.walSegmentSizeBytes

    // The small files that make the directory startable, pg_control last.
    progress.phase('finish')
    const readEntry = (e: FileEntry): Promise<Buffer> => readWholeFile(repo, backup.id, e, signal)
    const writeListed = async (path: string, bytes: Buffer, mode: number, mtime: number | undefined) => {
      await writeSmallFile(tree, path, bytes, mode, mtime, sync)
      const at = mtime === undefined ? new Date() : new Date(mtime * 1000)
      await m.add({ path, size: bytes.length, lastModified: at, checksumAlgorithm: 'CRC32C', checksum: crc32cHexLE(crc32c(bytes)) })
      progress.add(bytes.length, bytes.length)
    }

    // Everything these files need is read (and verified) before the first of them is written: a damaged blob
    // fails the restore before a signal file exists.
    const control = deferred.get(CONTROL_FILE)
    if (!control) throw new UsageError(`backup ${backup.id} has no ${CONTROL_FILE}`, { hint: 'the backup is damaged; restore another one with --backup' })
    const controlBytes = await readEntry(control)
    const autoConf = deferred.get('postgresql.auto.conf')
    const original = autoConf ? (await readEntry(autoConf)).toString('utf8') : ''
    const tsMap = deferred.get('tablespace_map')
    const tsMapBytes = tsMap ? await readEntry(tsMap) : undefined
    const label = deferred.get('backup_label')
    const labelBytes = label ? await readEntry(label) : undefined

    const conf = restoredAutoConf(original, recoveryLines, backup.id)
    if (conf.commented.length > 0) say('info', `postgresql.auto.conf: disabled the backup's ${[...new Set(conf.commented)].join(', ')}`)
    if (autoConf || conf.text !== '') {
      const unchanged = autoConf !== undefined && conf.text === original
      await writeListed('postgresql.auto.conf', Buffer.from(conf.text), autoConf?.mode ?? 0o600, unchanged ? autoConf.mtime : undefined)
    }
    if (tsMap && tsMapBytes) {
      // The map names where the server links each tablespace at startup: the mapped locations.
      const entries = parseTablespaceMap(tsMapBytes, { major: backup.server.major }).map((t) => ({ oid: t.oid, path: locations.get(t.oid) ?? t.path }))
      await writeListed('tablespace_map', Buffer.from(formatTablespaceMap(entries, { major: backup.server.major })), tsMap.mode, tsMap.mtime)
    }
    if (label && labelBytes) await writeListed('backup_label', labelBytes, label.mode, label.mtime)
    const signalFile = signalFileOf(mode)
    if (signalFile) {
      signalWritten = signalFile
      await writeListed(signalFile, Buffer.alloc(0), 0o600, undefined)
    }

    if (sync) {
      for (const d of dirs) await syncDirectory(d.path)
      for (const dir of [pgdata, pgWal, join(pgWal, 'archive_status'), join(pgdata, 'pg_tblspc'), ...locations.values()]) await syncDirectory(dir)
    }
    const controlTemp = `${CONTROL_FILE}.pgkeep-partial`
    await writeSmallFile(tree, controlTemp, controlBytes, control.mode, control.mtime, sync)
    await rename(join(pgdata, controlTemp), join(pgdata, CONTROL_FILE))
    // From here the directory is complete: a later failure (the manifest) must not take the signal file away.
    signalWritten = null
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
    filesWritten += deferred.size

    await m.finish([{ timeline: backup.timeline, startLsn: parseLsn(backup.startLsn), endLsn: parseLsn(backup.endLsn) }], sync)
    manifest = undefined
    for (const location of locations.values()) await removeMarker(location, sync)
    await removeMarker(pgdata, sync)

    // Directory modes and times last: writing into a directory changes its time.
    for (const d of dirs.reverse()) {
      await chmod(d.path, d.mode)
      await utimes(d.path, d.mtime, d.mtime)
    }
    const global = dirs.find((d) => d.path === join(pgdata, 'global'))
    // The server accepts a data directory of mode 0700, or 0750 when the cluster allows group access.
    await chmod(pgdata, global && (global.mode & 0o050) === 0o050 ? 0o750 : 0o700)
    progress.flush()

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
      files,
      filesWritten,
      filesUnchanged,
      removed,
      sizeBytes: backup.files.sizeBytes,
      bytesWritten: progress.written,
      walSegments,
      walBytes,
      signalFile,
      disabledSettings: [...new Set(conf.commented)],
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
    await blobReader?.close().catch(() => {})
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

/** True for a `pg_tblspc/<oid>` entry of a tablespace the backup lists: restore makes that link itself. */
function isTablespaceLink(path: string, locations: ReadonlyMap<number, string>): boolean {
  const oid = tablespaceLinkOid(path)
  return oid !== undefined && locations.has(oid)
}

/**
 * Reads the whole file list once before anything is written: every entry must map into the target (its
 * tablespace listed by the backup), and a tablespace link must point where the backup record says.
 * @throws IntegrityError naming the backup and the entry
 */
async function checkEntries(reader: FileListReader, tree: TargetTree, backup: BackupRecord, signal: AbortSignal): Promise<void> {
  const original = new Map(backup.tablespaces.map((t) => [t.oid, t.location]))
  for await (const e of reader.entries({ signal })) {
    if (SKIPPED.has(e.path)) continue
    const oid = tablespaceLinkOid(e.path)
    if (oid !== undefined && original.has(oid)) {
      if (e.type === 'symlink' && e.linkTarget !== original.get(oid)) {
        throw new IntegrityError(
          `backup ${backup.id} links '${e.path}' to '${printableName(e.linkTarget)}', but lists tablespace ${oid} at '${original.get(oid)}'`,
          {
            hint: "the backup is damaged or was altered; run 'pgkeep verify' and restore another backup with --backup",
          },
        )
      }
      continue
    }
    tree.resolve(e.path)
  }
}

/** Makes pg_tblspc/<oid> link to each tablespace's (mapped) location, creating the location if needed. */
async function linkTablespaces(pgdata: string, locations: ReadonlyMap<number, string>): Promise<void> {
  await mkdir(join(pgdata, 'pg_tblspc'), { recursive: true, mode: 0o700 })
  for (const [oid, location] of locations) {
    await mkdir(location, { recursive: true, mode: 0o700 })
    const link = join(pgdata, 'pg_tblspc', String(oid))
    const st = await lstat(link).catch(() => undefined)
    if (st?.isSymbolicLink() && (await readlink(link)) === location) continue
    if (st) await rm(link, { recursive: true, force: true })
    await symlink(location, link)
  }
}

/** Writes a whole small file of the backup with its mode and time, durably when asked. */
async function writeSmallFile(tree: TargetTree, path: string, bytes: Buffer, mode: number, mtime: number | undefined, sync: boolean): Promise<void> {
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

async function syncFile(path: string): Promise<void> {
  const fh = await open(path, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** Progress counters, reported at most every PROGRESS_MS. */
function newProgress(backup: BackupRecord, onProgress: RestoreOptions['onProgress']) {
  let phase: RestoreProgress['phase'] = 'files'
  let covered = 0
  let written = 0
  let filesDone = 0
  let last = 0
  const report = (force: boolean) => {
    if (!onProgress) return
    const now = Date.now()
    if (!force && now - last < PROGRESS_MS) return
    last = now
    onProgress({ phase, bytesDone: covered, bytesTotal: backup.files.sizeBytes, bytesWritten: written, filesDone })
  }
  return {
    get written() {
      return written
    },
    phase(p: RestoreProgress['phase']) {
      phase = p
      report(true)
    },
    add(c: number, w: number) {
      covered += c
      written += w
      report(false)
    },
    fileDone() {
      filesDone++
    },
    flush() {
      report(true)
    },
  }
}
