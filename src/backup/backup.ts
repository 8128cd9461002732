// The backup engine: BASE_BACKUP on one replication connection while WAL streams on a second, both into the
// repository. Every relation file is tracked page by page so that a backup with a parent stores only what changed
// (found by the server's WAL summaries on 17+, or by comparing page hashes here). The backup record is written last,
// once every blob and all WAL from start to end LSN are durable (invariant 1).

import {
  baseBackup,
  type BaseBackupEvent,
  connect,
  createReplicationSlot,
  formatLsn,
  identifySystem,
  type ReplicationConnection,
  ServerError,
  type ServerMessageFields,
  show,
  uploadManifest,
} from '../../protocol/index.js'
import { AbortedError, FormatError, ProtocolError, UsageError } from '../errors.js'
import { anySignal } from '../storage/abort.js'
import { parseSizeSetting } from '../pg/lsn.js'
import { decodeControlFile } from '../pg/pg-control.js'
import {
  assertSoundBackupRecord,
  BACKUP_FORMAT_VERSION,
  type BackupRecord,
  type BlobId,
  ensureClusterRecord,
  FileListReader,
  listBackups,
  newBackupId,
  type Repository,
  type WindowStore,
  writeBackupRecord,
} from '../repo/index.js'
import type { LockTiming } from '../repo/index.js'
import { BackupFiles } from './backup-files.js'
import { BackupWal } from './backup-wal.js'
import { ParentBlobMissingError } from './extent-builder.js'
import { ParentFileMissingError } from './incremental-ingest.js'
import { checkAgainstManifest } from './manifest-check.js'
import { checkArchive, checkTablespaceList, checkVersionDirectories, type ArchiveEntryCheck } from './server-input.js'
import { TarArchiveReader } from './tar-entries.js'

export type BackupType = 'auto' | 'full' | 'incremental'

export interface BackupOptions {
  /** libpq connection string (URI or key=value); PG* variables from `env` fill the rest. */
  conninfo?: string
  env?: Record<string, string | undefined>
  overrides?: Partial<Record<'host' | 'port' | 'user' | 'password', string>>
  /** Where file data goes. */
  repo: Repository
  /** Where streamed WAL goes: a second instance on the same storage, so WAL commits do not cut data packs short. */
  walRepo?: Repository
  type?: BackupType
  label?: string
  /** Stream WAL through this physical slot (created when missing) instead of a temporary one. */
  slot?: string
  checkpoint?: 'fast' | 'spread'
  maxRateKbps?: number
  /** Readable name for the cluster, recorded with its first backup. */
  clusterName?: string
  /** Worker threads for hashing and compression (default: as many as pay on this machine, none on two cores). */
  workers?: number
  /** Timing of the backup's shared repository lock (defaults: stale after 30 min, refreshed every 5 min). */
  lockTiming?: LockTiming
  signal?: AbortSignal
  onProgress?: (p: BackupProgress) => void
  /** Things the user should read: fallbacks, server warnings (checksum failures). */
  onMessage?: (m: { level: 'info' | 'warning'; text: string }) => void
}

export interface BackupProgress {
  /** Bytes received from the server so far, of all archives. */
  bytesDone: number
  /** The server's estimate of the total (null until known). */
  bytesTotal: number | null
  /** Bytes added to the repository so far. */
  storedBytes: number
  /** End of the WAL stored so far. */
  walDurableLsn: string | null
}

export interface BackupResult {
  id: string
  cluster: string
  clusterName: string
  type: 'full' | 'incremental'
  parent: string | null
  incrementalMode: 'server' | 'client' | null
  startLsn: string
  endLsn: string
  timeline: number
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

/** Notices with this text are the server's page checksum warnings during BASE_BACKUP. */
const CHECKSUM_NOTICE = /checksum verification failed|checksum verification failure/i
/** The server manifest is kept as meta blobs of this size. */
const MANIFEST_PIECE_BYTES = 4 << 20
/**
 * The server's manifest is held in memory until it is checked, so its size is bounded by what it can describe: a
 * line per file of at most a hex-encoded 4095-byte path plus size, time and checksum, and a header and WAL ranges.
 */
const MANIFEST_BYTES_PER_ENTRY = 8192 + 512
const MANIFEST_BASE_BYTES = 1 << 20

/**
 * Takes a full or incremental backup of the server into the repository, under a shared repository lock. When the
 * lock is lost the backup stops with its LockedError, and nothing of it is listed: index objects and the backup
 * record are written only while the lock is held (Repository.writeUnder), the record last of all.
 */
export async function takeBackup(options: BackupOptions): Promise<BackupResult> {
  const started = Date.now()
  const say = (level: 'info' | 'warning', text: string) => options.onMessage?.({ level, text })
  const lock = await options.repo.acquireLock('shared', {
    purpose: 'backup',
    signal: options.signal,
    ...options.lockTiming,
    // A lost lock ends the backup with its error: only the way there is worth a message.
    onStateChange: (c) => c.state !== 'lost' && say(c.state === 'held' ? 'info' : 'warning', c.message),
  })
  await options.walRepo?.writeUnder(lock, { signal: options.signal })
  // Everything the backup does stops when the lock is lost: connections, uploads, the WAL stream.
  const o: BackupOptions = { ...options, signal: anySignal(options.signal, lock.signal) }
  try {
    const probe = await open(o, 'pgkeep backup')
    let facts: ServerFacts
    try {
      facts = await serverFacts(probe, o.signal)
    } finally {
      await probe.close()
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
        )
        parent = undefined
      }
    }
    for (;;) {
      try {
        return await run(o, facts, cluster.name, parent, started, say)
      } catch (err) {
        if (parent && (err instanceof ParentBlobMissingError || err instanceof ParentFileMissingError)) {
          say('warning', `${err.message}; taking a full backup instead of an incremental one`)
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

interface ServerFacts {
  systemId: string
  major: number
  versionNum: number
  version: string
  segmentSizeBytes: number
  summarizeWal: boolean
}

async function open(o: BackupOptions, applicationName: string): Promise<ReplicationConnection> {
  return connect(o.conninfo, { env: o.env, overrides: o.overrides, fallbackApplicationName: applicationName, signal: o.signal })
}

async function serverFacts(c: ReplicationConnection, signal?: AbortSignal): Promise<ServerFacts> {
  const id = await identifySystem(c, { signal })
  const major = c.serverMajor
  if (major < 13) {
    throw new UsageError(`PostgreSQL ${c.parameters.get('server_version')} is too old for pgkeep`, { hint: 'pgkeep supports PostgreSQL 13 and later' })
  }
  const blockSize = await show(c, 'block_size', { signal })
  if (blockSize !== '8192') {
    throw new UsageError(`the server uses ${blockSize}-byte pages; pgkeep supports only 8192`, { hint: 'use pg_basebackup for this cluster' })
  }
  return {
    systemId: id.systemId.toString(),
    major,
    versionNum: c.serverVersionNum,
    version: c.parameters.get('server_version') ?? String(major),
    segmentSizeBytes: parseSizeSetting(await show(c, 'wal_segment_size', { signal })),
    summarizeWal: major >= 17 && (await show(c, 'summarize_wal', { signal })) === 'on',
  }
}

/** One attempt at a backup with the given parent (undefined: full). */
async function run(
  o: BackupOptions,
  facts: ServerFacts,
  clusterName: string,
  parent: BackupRecord | undefined,
  started: number,
  say: (level: 'info' | 'warning', text: string) => void,
): Promise<BackupResult> {
  const repo = o.repo
  const walRepo = o.walRepo ?? repo
  const signal = o.signal
  const storedAtStart = repo.sessionStats.storedBytes
  const walStoredAtStart = walRepo.sessionStats.storedBytes
  const id = newBackupId(new Date(started))

  // The WAL connection and its slot come first: a slot created before BASE_BACKUP reserves WAL from the last
  // checkpoint, which is at or before the backup's start, so nothing the backup needs can be recycled meanwhile.
  const walConn = await open(o, 'pgkeep backup wal')
  let backupConn: ReplicationConnection | undefined
  let store: WindowStore | undefined
  try {
    const slot = o.slot ?? `pgkeep_${walConn.backendPid}`
    await ensureSlot(walConn, slot, o.slot === undefined, signal)

    const begun = await beginBaseBackup(o, facts, parent, say)
    backupConn = begun.conn
    const { events, start, mode } = begun
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

    // Reusing the parent's blobs is safe only if their packs are still there: the index alone can be stale.
    store = await repo.openWindowStore({ workers: o.workers, checkPacks: parent !== undefined, signal })
    const files = new BackupFiles(
      repo,
      store,
      parent && { backupId: parent.id, files: new FileListReader(repo, parent.files, undefined, `backup ${parent.id}`) },
      signal,
    )
    const checksumFailures: BackupRecord['checksumFailures'] = []
    const manifest: Buffer[] = []
    let reader: TarArchiveReader | undefined
    const archivesSeen = new Set<string>()
    const archiveChecks: ArchiveEntryCheck[] = []
    let manifestBytesHeld = 0
    let bytesDone = 0
    let bytesTotal: number | null = start.tablespaces.every((t) => t.sizeBytes !== null) ? start.tablespaces.reduce((s, t) => s + t.sizeBytes!, 0) : null
    let lastProgress = 0
    const progress = (force = false) => {
      const now = Date.now()
      if (!o.onProgress || (!force && now - lastProgress < 250)) return
      lastProgress = now
      o.onProgress({
        bytesDone,
        bytesTotal,
        storedBytes: repo.sessionStats.storedBytes - storedAtStart,
        walDurableLsn: wal.durableLsn > start.startLsn ? formatLsn(wal.durableLsn) : null,
      })
    }

    let end: Extract<BaseBackupEvent, { type: 'end' }> | undefined
    try {
      for (let r = await events.next(); !r.done; r = await events.next()) {
        const ev = r.value
        switch (ev.type) {
          case 'archive': {
            checkArchive(ev.name, ev.tablespace.oid, archivesSeen)
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
            manifestBytesHeld += ev.data.length
            if (manifestBytesHeld > MANIFEST_BASE_BYTES + files.received.size * MANIFEST_BYTES_PER_ENTRY) {
              throw new ProtocolError(
                `the server's backup_manifest exceeds ${manifestBytesHeld - ev.data.length} bytes, more than ${files.received.size} files can need`,
                {
                  hint: 'PostgreSQL never sends such a manifest: check that the connection leads to a genuine PostgreSQL server; nothing was recorded',
                },
              )
            }
            manifest.push(Buffer.from(ev.data))
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
    const manifestBytes = Buffer.concat(manifest)
    checkAgainstManifest(manifestBytes, files.received, start.startLsn, end.endLsn)
    const manifestBlobs: BlobId[] = []
    for (let off = 0; off < manifestBytes.length; off += MANIFEST_PIECE_BYTES) {
      manifestBlobs.push((await repo.putBlob('meta', manifestBytes.subarray(off, off + MANIFEST_PIECE_BYTES), { signal })).id)
    }
    const fileList = await files.finish()
    await wal.finishAt(end.endLsn)
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
      cluster: facts.systemId,
      clusterName,
      type: record.type,
      parent: record.parent,
      incrementalMode: mode,
      startLsn: record.startLsn,
      endLsn: record.endLsn,
      timeline: record.timeline,
      sizeBytes: fileList.sizeBytes,
      receivedBytes: bytesDone,
      storedBytes: repo.sessionStats.storedBytes - storedAtStart,
      walStoredBytes: walRepo === repo ? 0 : walRepo.sessionStats.storedBytes - walStoredAtStart,
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
    await walConn.close().catch(() => walConn.destroy())
  }
}

/**
 * Starts BASE_BACKUP and reads its start position. With a parent on PostgreSQL 17+ and summarize_wal on, it first
 * uploads the parent's manifest and asks for an incremental backup; when the server cannot, it falls back to a
 * plain BASE_BACKUP whose pages are compared on the client, and says so.
 */
async function beginBaseBackup(o: BackupOptions, facts: ServerFacts, parent: BackupRecord | undefined, say: (level: 'info' | 'warning', text: string) => void) {
  let mode: BackupRecord['incrementalMode'] = parent ? 'client' : null
  let conn = await open(o, 'pgkeep backup')
  try {
    if (parent && facts.major >= 17 && parent.server.major >= 17) {
      if (!facts.summarizeWal) {
        say('info', 'summarize_wal is off on the server: the incremental backup reads every page and compares on the client')
      } else {
        try {
          await uploadManifest(conn, await readManifestBytes(o.repo, parent, o.signal), { signal: o.signal })
          mode = 'server'
        } catch (err) {
          say('info', `the server cannot take an incremental backup (${(err as Error).message}); comparing pages on the client instead`)
          conn.destroy()
          conn = await open(o, 'pgkeep backup')
        }
      }
    }
    let events = startBaseBackup(conn, o, mode === 'server')
    let first: IteratorResult<BaseBackupEvent>
    try {
      first = await events.next()
    } catch (err) {
      if (mode !== 'server' || !(err instanceof ServerError)) throw err
      // For example "WAL summaries are required on timeline …": fall back to comparing on the client.
      say('info', `the server refused the incremental backup (${err.message}); comparing pages on the client instead`)
      mode = 'client'
      conn = await open(o, 'pgkeep backup')
      events = startBaseBackup(conn, o, false)
      first = await events.next()
    }
    if (first.done || first.value.type !== 'start') throw new FormatError('BASE_BACKUP did not begin with its start position')
    return { conn, events, start: first.value, mode }
  } catch (err) {
    conn.destroy()
    throw err
  }
}

/** Flushes the repositories after a failure, giving up after a few seconds (the failure may be the storage's). */
async function commitWhatWasStored(repos: Repository[]): Promise<void> {
  const timeout = new Promise<void>((resolve) => setTimeout(resolve, 10_000).unref())
  await Promise.race([Promise.all(repos.map((r) => r.flush().catch(() => {}))), timeout])
}

function startBaseBackup(c: ReplicationConnection, o: BackupOptions, incremental: boolean) {
  return baseBackup(c, {
    label: o.label ?? 'pgkeep',
    checkpoint: o.checkpoint ?? 'fast',
    progress: true,
    maxRateKbps: o.maxRateKbps,
    manifest: true,
    manifestChecksums: 'CRC32C',
    incremental,
    signal: o.signal,
  })
}

/** A temporary slot dies with its session; a named one is created when missing and kept. */
async function ensureSlot(c: ReplicationConnection, slot: string, temporary: boolean, signal?: AbortSignal): Promise<void> {
  try {
    await createReplicationSlot(c, slot, { temporary, reserveWal: true, signal })
  } catch (err) {
    // 42710: the named slot exists already, which is what --slot expects.
    if (!temporary && err instanceof ServerError && err.sqlState === '42710') return
    throw err
  }
}

async function readManifestBytes(repo: Repository, b: BackupRecord, signal?: AbortSignal): Promise<Buffer> {
  const parts: Buffer[] = []
  for (const id of b.serverManifest) parts.push(await repo.readBlob(id, { signal }))
  return Buffer.concat(parts)
}

const noticeOf = (n: ServerMessageFields) => (n.detail ? { message: n.message, detail: n.detail } : { message: n.message })
