// The backup engine: BASE_BACKUP on one replication connection while WAL streams on a second, both into the
// repository. Every relation file is tracked page by page so that a backup with a parent stores only what changed
// (found by the server's WAL summaries on 17+, or by comparing page hashes here). The backup record is written last,
// once every blob and all WAL from start to end LSN are durable (invariant 1).
// Longer than 400 lines on purpose: the order of a backup's steps (lock, WAL, files, record last) is what makes it
// correct, and is read top to bottom.

import { type BaseBackupEvent, formatLsn, type ReplicationConnection, type ServerMessageFields } from '../../protocol/index.js'
import { AbortedError, FormatError, UsageError } from '../errors.js'
import { anySignal } from '../storage/abort.js'
import { OperationEvents, type OperationOptions } from '../events.js'
import type { ServerTarget } from '../server-target.js'
import { majorSupport, SUPPORTED_MAJORS } from '../pg/versions.js'
import { decodeControlFile } from '../pg/pg-control.js'
import {
  assertSoundBackupRecord,
  BACKUP_FORMAT_VERSION,
  BACKUP_LOCK_PURPOSE,
  EXPIRE_LOCK_PURPOSE,
  type BackupRecord,
  defaultWorkers,
  ensureClusterRecord,
  listBackups,
  newBackupId,
  type Repository,
  type WindowStore,
  writeBackupRecord,
} from '../repo/index.js'
import type { LockTiming } from '../repo/index.js'
import { BackupFiles, openParentFiles, type ParentFiles } from './backup-files.js'
import { BackupWal } from './backup-wal.js'
import { ParentBlobMissingError } from './extent-builder.js'
import { ParentFileMissingError } from './incremental-ingest.js'
import { ManifestIntake } from './manifest-check.js'
import { checkArchive, checkTablespaceList, checkVersionDirectories, type ArchiveEntryCheck } from './server-input.js'
import { beginBaseBackup, ensureSlot, openReplication, type ServerFacts, serverFacts } from './server-session.js'
import { TarArchiveReader } from './tar-entries.js'

export type BackupType = 'auto' | 'full' | 'incremental'

/**
 * Options of {@link takeBackup}. Progress phases: `connect`, `checkpoint` (waiting for the server to start the
 * backup), `files` (the archives; detail: `tablespace` as `n/m`, `storedBytes`, `walDurableLsn`), `wal` (waiting for
 * the WAL up to the backup's end), `finish` (the record). Messages: fallbacks (`full-instead-of-incremental`,
 * `client-side-incremental`) and the server's warnings (`server-warning`, `checksum-failure`).
 */
export interface BackupOptions extends OperationOptions {
  /** The server to back up (a role with the REPLICATION attribute). */
  server: ServerTarget
  /** Where the backup goes. */
  repo: Repository
  type?: BackupType
  label?: string
  /** Stream WAL through this physical slot (created when missing) instead of a temporary one. */
  slot?: string
  checkpoint?: 'fast' | 'spread'
  maxRateKbps?: number
  /** Readable name for the cluster, recorded with its first backup. */
  clusterName?: string
  /**
   * Worker threads for hashing and compression (default: for a full backup the cores beyond one, at most 4, as
   * Repository.openWindowStore says; for an incremental the cores beyond two).
   */
  workers?: number
  /** Timing of the backup's shared repository lock (defaults: stale after 30 min, refreshed every 5 min). */
  lockTiming?: LockTiming
}

export interface BackupResult {
  id: string
  /** The cluster's system identifier (decimal). */
  systemId: string
  clusterName: string
  type: 'full' | 'incremental'
  parent: string | null
  incrementalMode: 'server' | 'client' | null
  startLsn: string
  endLsn: string
  timeline: number
  /** The cluster's tablespaces: oid and location on the server. */
  tablespaces: { oid: number; location: string }[]
  /** Logical size of the data directory and tablespaces. */
  sizeBytes: number
  /** Tar bytes the server sent: everything for a full or client-side incremental, changed blocks for a server-side one. */
  receivedBytes: number
  /** Bytes the repository grew by for this backup's data (compressed, encrypted), WAL excluded. */
  storedBytes: number
  /** Bytes the repository grew by for the WAL streamed during the backup. */
  walStoredBytes: number
  durationMs: number
  checksumFailures: number
  files: number
}

/** How long a backup waits for a running expire at most (the default stale interval of a lock). */
const EXPIRE_WAIT_MS = 30 * 60_000
/** Notices with this text are the server's page checksum warnings during BASE_BACKUP. */
const CHECKSUM_NOTICE = /checksum verification failed|checksum verification failure/i

/**
 * Takes a full or incremental backup of the server into the repository, under a shared repository lock. When the
 * lock is lost the backup stops with its LockedError, and nothing of it is listed: index objects and the backup
 * record are written only while the lock is held (Repository.writeUnder), the record last of all.
 */
export async function takeBackup(options: BackupOptions): Promise<BackupResult> {
  const started = Date.now()
  const events = new OperationEvents('backup', options.onEvent)
  const say = (level: 'info' | 'warning', text: string, code?: string) => events.say(level, text, code)
  events.phase('connect')
  const lock = await options.repo.acquireLock('shared', {
    purpose: BACKUP_LOCK_PURPOSE,
    signal: options.signal,
    ...options.lockTiming,
    // A lost lock ends the backup with its error: only the way there is worth a message.
    onStateChange: (c) => c.state !== 'lost' && say(c.state === 'held' ? 'info' : 'warning', c.message, 'lock'),
  })
  // An expire that started before our lock was written may not have seen it, and may still remove WAL this backup
  // would find stored and rely on: wait until it is done (docs/repository-format.md §10). Expire is short.
  await options.repo.waitWhileLocked(EXPIRE_LOCK_PURPOSE, {
    except: lock,
    maxWaitMs: options.lockTiming?.staleAfterMs ?? EXPIRE_WAIT_MS,
    signal: options.signal,
    onWait: (l) => say('info', `waiting for an expire to finish before storing WAL: ${l.description}`),
  })
  // Everything the backup does stops when the lock is lost: connections, uploads, the WAL stream.
  const o: BackupOptions = { ...options, signal: anySignal(options.signal, lock.signal) }
  try {
    const probe = await openReplication(o, 'pgkeep backup')
    let facts: ServerFacts
    try {
      facts = await serverFacts(probe, o.signal)
    } finally {
      await probe.close()
    }
    if (majorSupport(facts.major) === 'untested') {
      say(
        'warning',
        `PostgreSQL ${facts.version} is newer than the majors pgkeep is tested against (${SUPPORTED_MAJORS.min} to ${SUPPORTED_MAJORS.max})`,
        'untested-major',
      )
    }
    const cluster = await ensureClusterRecord(o.repo, facts.systemId, o.clusterName, { signal: o.signal })
    let parent: BackupRecord | undefined
    if ((o.type ?? 'auto') !== 'full') {
      parent = (await listBackups(o.repo, facts.systemId, { signal: o.signal })).at(-1)
      if (parent) assertSoundBackupRecord(parent)
      if (!parent && o.type === 'incremental') {
        throw new UsageError(`there is no earlier backup of cluster ${facts.systemId} to base an incremental backup on`, {
          hint: 'take a full backup first, or use --type auto to take a full one when there is none',
        })
      }
      // pg_upgrade keeps the system identifier, so the latest backup of this cluster may hold the old major's
      // files. Never base an incremental on them: the first backup after a major upgrade is a full one (its
      // blobs still dedup against the old backup's where the bytes are equal).
      if (parent && parent.server.major !== facts.major) {
        say(
          o.type === 'incremental' ? 'warning' : 'info',
          `the latest backup of cluster ${facts.systemId} (${parent.id}) is of PostgreSQL ${parent.server.major} and the server now runs ${facts.major}: taking a full backup`,
          'full-instead-of-incremental',
        )
        parent = undefined
      }
    }
    for (;;) {
      try {
        return await run(o, facts, cluster.name, parent, started, events)
      } catch (err) {
        if (parent && (err instanceof ParentBlobMissingError || err instanceof ParentFileMissingError)) {
          say('warning', `${err.message}; taking a full backup instead of an incremental one`, 'full-instead-of-incremental')
          parent = undefined
          continue
        }
        throw err
      }
    }
  } finally {
    await lock.release().catch(() => {})
  }
}

/** One attempt at a backup with the given parent (undefined: full). */
async function run(
  o: BackupOptions,
  facts: ServerFacts,
  clusterName: string,
  parent: BackupRecord | undefined,
  started: number,
  events: OperationEvents,
): Promise<BackupResult> {
  const say = (level: 'info' | 'warning', text: string, code?: string) => events.say(level, text, code)
  const repo = o.repo
  const signal = o.signal
  // The WAL goes through a twin: its frequent flushes then do not cut the file packs short.
  const walRepo = await repo.twin({ signal })
  const storedAtStart = repo.sessionStats.storedBytes
  const walStoredAtStart = walRepo.sessionStats.storedBytes
  const id = newBackupId(new Date(started))

  // The WAL connection and its slot come first: a slot created before BASE_BACKUP reserves WAL from the last
  // checkpoint, which is at or before the backup's start, so nothing the backup needs can be recycled meanwhile.
  const walConn = await openReplication(o, 'pgkeep backup wal')
  let backupConn: ReplicationConnection | undefined
  let store: WindowStore | undefined
  let parentFiles: (ParentFiles & { close(): Promise<void> }) | undefined
  try {
    const slot = o.slot ?? `pgkeep_${walConn.backendPid}`
    await ensureSlot(walConn, slot, o.slot === undefined, signal)

    events.phase('checkpoint')
    const begun = await beginBaseBackup(o, facts, parent, say)
    backupConn = begun.conn
    const { events: stream, start, mode } = begun
    // Before anything of the backup is stored: every tablespace oid and location as PostgreSQL has them.
    const tablespaceLocations = checkTablespaceList(start.tablespaces)
    const wal = await BackupWal.start(walConn, walRepo, {
      slot,
      systemId: facts.systemId,
      timeline: start.timeline,
      segmentSizeBytes: facts.segmentSizeBytes,
      startLsn: start.startLsn,
      signal,
    })
    // Awaited after the archives; a WAL failure meanwhile stops the data side at once.
    let walFailure: unknown
    wal.done.catch((err) => {
      walFailure = err
      backupConn?.destroy(err)
    })

    // Reusing the parent's blobs is safe only if their packs are still there: the index alone can be stale. A full
    // backup hashes and compresses every window and takes the store's workers; an incremental mostly computes page
    // hashes (cheap, about 0.2 s per GB), where a worker on two cores cost memory and saved nothing (bench data after
    // 1% changed, 3 alternating runs: 145-156 MB and 2.70-3.17 s without, 156-177 MB and 3.00-3.21 s with one), so
    // it counts its thread and the server's as two busy cores.
    const workers = o.workers ?? (parent ? defaultWorkers(2, 4) : undefined)
    store = await repo.openWindowStore({ workers, checkPacks: parent !== undefined, signal })
    if (parent) parentFiles = openParentFiles(repo, parent, signal)
    const files = new BackupFiles(repo, store, parentFiles, signal)
    const checksumFailures: BackupRecord['checksumFailures'] = []
    const manifest = new ManifestIntake(files.received, {
      put: async (piece) => (await repo.putBlob('meta', piece, { signal })).id,
      read: (id) => repo.readBlob(id, { signal }),
    })
    let reader: TarArchiveReader | undefined
    const archivesSeen = new Set<string>()
    const archiveChecks: ArchiveEntryCheck[] = []
    let bytesDone = 0
    let bytesTotal: number | null = start.tablespaces.every((t) => t.sizeBytes !== null) ? start.tablespaces.reduce((s, t) => s + t.sizeBytes!, 0) : null
    const archives = start.tablespaces.length
    let archive = 0
    const progress = (force = false) =>
      events.progress(
        {
          bytesDone,
          bytesTotal,
          detail: {
            tablespace: `${archive}/${archives}`,
            storedBytes: repo.sessionStats.storedBytes - storedAtStart,
            walDurableLsn: wal.durableLsn > start.startLsn ? formatLsn(wal.durableLsn) : null,
          },
        },
        force,
      )
    events.phase('files', { bytesDone: 0, bytesTotal, detail: { tablespace: `0/${archives}` } })

    let end: Extract<BaseBackupEvent, { type: 'end' }> | undefined
    try {
      for (let r = await stream.next(); !r.done; r = await stream.next()) {
        const ev = r.value
        switch (ev.type) {
          case 'archive': {
            checkArchive(ev.name, ev.tablespace.oid, archivesSeen)
            archive++
            const scope = { name: ev.name, tablespaceOid: ev.tablespace.oid, tablespaces: tablespaceLocations, major: facts.major }
            reader = new TarArchiveReader(scope, async (entry) => {
              await files.add(entry)
              progress()
            })
            archiveChecks.push(reader.check)
            break
          }
          case 'data':
            bytesDone += ev.data.length
            await reader!.write(ev.data)
            break
          case 'archive-end':
            await reader!.end()
            reader = undefined
            progress(true)
            break
          case 'progress':
            if (ev.bytesTotal !== null) bytesTotal = ev.bytesTotal
            progress()
            break
          case 'manifest':
            await manifest.add(ev.data)
            break
          case 'notice':
            if (CHECKSUM_NOTICE.test(ev.notice.message)) {
              if (checksumFailures.length < 1000) checksumFailures.push(noticeOf(ev.notice))
              say('warning', `server: ${ev.notice.message}`)
            } else if (ev.notice.severity === 'WARNING') {
              say('warning', `server: ${ev.notice.message}`)
            }
            break
          case 'end':
            end = ev
            break
          case 'start':
            break
        }
      }
    } catch (err) {
      reader?.destroy(err)
      if (walFailure) throw walFailure
      throw err
    }
    if (!end) throw new FormatError('BASE_BACKUP ended without its end position')
    if (end.checksumFailure) {
      checksumFailures.push(noticeOf(end.checksumFailure))
      say('warning', `server: ${end.checksumFailure.message}`)
    }

    checkVersionDirectories(archiveChecks, facts.major, () => {
      if (!files.controlFile) return undefined
      try {
        return decodeControlFile(files.controlFile).catalogVersion
      } catch {
        return null // a pg_control layout this build cannot read (a newer major): the directory's form was checked
      }
    })
    const manifestBlobs = await manifest.finish(start.startLsn, end.endLsn)
    const fileList = await files.finish()
    events.phase('wal', { bytesDone, bytesTotal: bytesDone, detail: { endLsn: formatLsn(end.endLsn) } })
    await wal.finishAt(end.endLsn)
    events.phase('finish', { bytesDone, bytesTotal: bytesDone })
    await repo.flush({ signal })

    const record: BackupRecord = {
      formatVersion: BACKUP_FORMAT_VERSION,
      id,
      systemId: facts.systemId,
      clusterName,
      type: parent ? 'incremental' : 'full',
      parent: parent?.id ?? null,
      incrementalMode: mode,
      label: o.label ?? `pgkeep ${id}`,
      server: { version: facts.version, versionNum: facts.versionNum, major: facts.major, fromStandby: /^BACKUP FROM: standby$/m.test(files.backupLabel) },
      timeline: start.timeline,
      startLsn: formatLsn(start.startLsn),
      endLsn: formatLsn(end.endLsn),
      startedAt: new Date(started).toISOString(),
      finishedAt: new Date().toISOString(),
      durationMs: Date.now() - started,
      walSegmentSizeBytes: facts.segmentSizeBytes,
      tablespaces: start.tablespaces.filter((t) => t.oid !== null).map((t) => ({ oid: t.oid!, location: t.location ?? '' })),
      files: fileList,
      serverManifest: manifestBlobs,
      backupLabel: files.backupLabel,
      tablespaceMap: files.tablespaceMap,
      storedBytes: repo.sessionStats.storedBytes - storedAtStart,
      checksumFailures,
    }
    // The backup becomes listed here: only while the lock is held. The state is checked now (a lost lock stops
    // us before anything else is written), and writeRecord makes the write itself conditional on the lock.
    signal?.throwIfAborted()
    await writeBackupRecord(repo, record, { signal })
    progress(true)
    return {
      id,
      systemId: facts.systemId,
      clusterName,
      type: record.type,
      parent: record.parent,
      incrementalMode: mode,
      startLsn: record.startLsn,
      endLsn: record.endLsn,
      timeline: record.timeline,
      tablespaces: record.tablespaces,
      sizeBytes: fileList.sizeBytes,
      receivedBytes: bytesDone,
      storedBytes: repo.sessionStats.storedBytes - storedAtStart,
      walStoredBytes: walRepo.sessionStats.storedBytes - walStoredAtStart,
      durationMs: Date.now() - started,
      checksumFailures: checksumFailures.length,
      files: fileList.count,
    }
  } catch (err) {
    backupConn?.destroy()
    // Keep what was uploaded: committing it lets the next run find those blobs instead of storing them again.
    await commitWhatWasStored([repo, walRepo])
    if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new AbortedError()
    throw err
  } finally {
    backupConn?.destroy()
    await store?.close().catch(() => {})
    await parentFiles?.close().catch(() => {})
    await walConn.close().catch(() => walConn.destroy())
    await walRepo.close().catch(() => {})
  }
}

/** Flushes the repositories after a failure, giving up after a few seconds (the failure may be the storage's). */
async function commitWhatWasStored(repos: Repository[]): Promise<void> {
  const timeout = new Promise<void>((resolve) => setTimeout(resolve, 10_000).unref())
  await Promise.race([Promise.all(repos.map((r) => r.flush().catch(() => {}))), timeout])
}

const noticeOf = (n: ServerMessageFields) => (n.detail ? { message: n.message, detail: n.detail } : { message: n.message })
