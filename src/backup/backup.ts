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
  type Lsn,
  type ReplicationConnection,
  ServerError,
  type ServerMessageFields,
  show,
  startReplication,
  uploadManifest,
} from '../../protocol/index.js'
import { AbortedError, FormatError, IntegrityError, UsageError } from '../errors.js'
import { parseServerManifest } from '../pg/backup-manifest.js'
import { stripIncrementalLines } from '../pg/backup-label.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { parseSizeSetting } from '../pg/lsn.js'
import { classifyRelationPath } from '../pg/relation-path.js'
import {
  type BackupRecord,
  BACKUP_FORMAT_VERSION,
  ensureClusterRecord,
  listBackups,
  newBackupId,
  writeBackupRecord,
} from '../repo/backup-record.js'
import type { BlobId } from '../repo/blob.js'
import { FileListReader, FileListWriter } from '../repo/file-list.js'
import { decodeFileMap, encodeFileMap, type FileMap, PAGE_BYTES } from '../repo/file-map.js'
import { PACKS_PREFIX } from '../repo/layout.js'
import type { Repository } from '../repo/repository.js'
import { WalSegmentWriter } from '../wal/segment-writer.js'
import { type BlobSink, ParentBlobMissingError, PlainFileIngest, RelationFileIngest } from './file-ingest.js'
import { IncrementalFileIngest, ParentFileMissingError } from './incremental-ingest.js'
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

/** Takes a full or incremental backup of the server into the repository. */
export async function takeBackup(o: BackupOptions): Promise<BackupResult> {
  const started = Date.now()
  const say = (level: 'info' | 'warning', text: string) => o.onMessage?.({ level, text })
  const lock = await o.repo.acquireLock('shared', { purpose: 'backup', signal: o.signal })
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
      if (!parent && o.type === 'incremental') {
        throw new UsageError(`there is no earlier backup of cluster ${facts.systemId} to base an incremental backup on`, {
          hint: 'take a full backup first, or use --type auto to take a full one when there is none',
        })
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
  try {
    const slot = o.slot ?? `pgkeep_${walConn.backendPid}`
    await ensureSlot(walConn, slot, o.slot === undefined, signal)

    let mode: BackupRecord['incrementalMode'] = parent ? 'client' : null
    backupConn = await open(o, 'pgkeep backup')
    if (parent && facts.major >= 17 && parent.server.major >= 17) {
      if (!facts.summarizeWal) {
        say('info', 'summarize_wal is off on the server: the incremental backup reads every page and compares on the client')
      } else {
        try {
          await uploadManifest(backupConn, await readManifestBytes(repo, parent, signal), { signal })
          mode = 'server'
        } catch (err) {
          say('info', `the server cannot take an incremental backup (${(err as Error).message}); comparing pages on the client instead`)
          await backupConn.close()
          backupConn = await open(o, 'pgkeep backup')
        }
      }
    }

    let events = startBaseBackup(backupConn, o, mode === 'server')
    let first: IteratorResult<BaseBackupEvent>
    try {
      first = await events.next()
    } catch (err) {
      if (mode !== 'server' || !(err instanceof ServerError)) throw err
      // For example "WAL summaries are required on timeline …": fall back to comparing on the client.
      say('info', `the server refused the incremental backup (${err.message}); comparing pages on the client instead`)
      mode = 'client'
      backupConn = await open(o, 'pgkeep backup')
      events = startBaseBackup(backupConn, o, false)
      first = await events.next()
    }
    if (first.done || first.value.type !== 'start') throw new FormatError('BASE_BACKUP did not begin with its start position')
    const start = first.value
    const segStart = start.startLsn - (start.startLsn % BigInt(facts.segmentSizeBytes))

    // WAL: streamed into the repository until the backup's end LSN is known and reached.
    let endLsn: Lsn | undefined
    const walWriter = new WalSegmentWriter(walRepo, {
      systemId: BigInt(facts.systemId),
      timeline: start.timeline,
      segmentSizeBytes: facts.segmentSizeBytes,
      startLsn: segStart,
      signal,
    })
    const walStream = await startReplication(walConn, { slot, startLsn: segStart, timeline: start.timeline, signal })
    const walDone = (async () => {
      for await (const ev of walStream) {
        if (ev.type === 'xlogdata') {
          await walWriter.write(ev.walStart, ev.data)
          walStream.confirmFlushed(walWriter.durableLsn)
        }
        if (endLsn !== undefined && walWriter.receivedLsn >= endLsn) break
      }
      if (endLsn === undefined || walWriter.receivedLsn < endLsn) {
        throw new IntegrityError(`WAL streaming ended at ${formatLsn(walWriter.receivedLsn)} before the backup's end`, {
          hint: 'the server may have switched timelines (promotion) during the backup; run the backup again',
        })
      }
      await walWriter.storePartial()
      walStream.confirmFlushed(walWriter.durableLsn)
    })()
    // Awaited after the archives; a WAL failure meanwhile stops the data side at once.
    let walFailure: unknown
    walDone.catch((err) => {
      walFailure = err
      backupConn?.destroy(err)
    })

    const files = new FileListWriter()
    const parentFiles = parent ? new FileListReader(repo, parent.files) : undefined
    // Reusing the parent's blobs is safe only if their packs are still there: the index alone can be stale.
    const sink = parent ? await sinkCheckingPacks(repo, signal) : repo
    const receivedChecks = new Map<string, { sizeBytes: number; crc32c: string }>()
    const checksumFailures: BackupRecord['checksumFailures'] = []
    const manifest: Buffer[] = []
    let backupLabel = ''
    let tablespaceMap: string | null = null
    let reader: TarArchiveReader | undefined
    let archivePrefix = ''
    let bytesDone = 0
    let bytesTotal: number | null = start.tablespaces.every((t) => t.sizeBytes !== null)
      ? start.tablespaces.reduce((s, t) => s + t.sizeBytes!, 0)
      : null
    let lastProgress = 0
    const progress = (force = false) => {
      const now = Date.now()
      if (!o.onProgress || (!force && now - lastProgress < 250)) return
      lastProgress = now
      o.onProgress({
        bytesDone,
        bytesTotal,
        storedBytes: repo.sessionStats.storedBytes - storedAtStart,
        walDurableLsn: walWriter.durableLsn > segStart ? formatLsn(walWriter.durableLsn) : null,
      })
    }

    const parentMap = async (path: string): Promise<FileMap | undefined> => {
      const e = await parentFiles?.get(path, { signal })
      if (!e?.fileMap) return undefined
      if (!sink.hasBlob(e.fileMap)) throw new ParentBlobMissingError(e.fileMap)
      try {
        return decodeFileMap(await repo.readBlob(e.fileMap, { signal }), `file map of '${path}' in backup ${parent!.id}`)
      } catch (err) {
        if (signal?.aborted) throw err
        throw new ParentBlobMissingError(e.fileMap)
      }
    }
    const storeFileMap = async (m: FileMap): Promise<BlobId> => (await repo.putBlob('meta', encodeFileMap(m), { signal })).id

    const onEntry = async (e: import('./tar-entries.js').TarEntry) => {
      const path = archivePrefix + e.name
      if (e.type !== 'file') {
        files.add({ path, type: e.type, mode: e.mode, mtime: e.mtime, sizeBytes: 0, linkTarget: e.linkTarget })
        return
      }
      const rel = classifyRelationPath(path)
      if (rel.kind === 'relation' && rel.incremental) {
        const target = path.replace(/INCREMENTAL\.([^/]+)$/, '$1')
        const ing = new IncrementalFileIngest(sink, target, await parentMap(target), signal)
        for await (const chunk of e.content) await ing.push(chunk)
        const r = await ing.finish()
        receivedChecks.set(path, { sizeBytes: r.incrementalSizeBytes, crc32c: crc32cHexLE(r.incrementalCrc32c) })
        files.add({ path: target, type: 'file', mode: e.mode, mtime: e.mtime, sizeBytes: r.fileMap.sizeBytes, fileMap: await storeFileMap(r.fileMap) })
      } else if (rel.kind === 'relation' && e.sizeBytes % PAGE_BYTES === 0) {
        const ing = new RelationFileIngest(sink, e.sizeBytes, await parentMap(path), signal)
        for await (const chunk of e.content) await ing.push(chunk)
        const r = await ing.finish()
        const crc = crc32cHexLE(r.crc32c)
        receivedChecks.set(path, { sizeBytes: e.sizeBytes, crc32c: crc })
        files.add({ path, type: 'file', mode: e.mode, mtime: e.mtime, sizeBytes: e.sizeBytes, crc32c: crc, fileMap: await storeFileMap(r.fileMap) })
      } else if (path === 'backup_label' || path === 'tablespace_map') {
        const parts: Buffer[] = []
        for await (const chunk of e.content) parts.push(Buffer.from(chunk))
        const received = Buffer.concat(parts)
        receivedChecks.set(path, { sizeBytes: received.length, crc32c: crc32cHexLE(crc32c(received)) })
        let text = received.toString('utf8')
        // A server-side incremental's label names its parent, and a server refuses to start on it; the stored
        // backup is complete, so it keeps the label pg_combinebackup would write.
        if (path === 'backup_label') text = backupLabel = stripIncrementalLines(text)
        else tablespaceMap = text
        const ing = new PlainFileIngest(repo, signal)
        await ing.push(Buffer.from(text))
        const r = await ing.finish()
        files.add({ path, type: 'file', mode: e.mode, mtime: e.mtime, sizeBytes: r.sizeBytes, crc32c: crc32cHexLE(r.crc32c), extents: r.extents })
      } else {
        const ing = new PlainFileIngest(repo, signal)
        for await (const chunk of e.content) await ing.push(chunk)
        const r = await ing.finish()
        if (r.sizeBytes !== e.sizeBytes) throw new FormatError(`'${path}' has ${r.sizeBytes} bytes, its tar header says ${e.sizeBytes}`)
        const crc = crc32cHexLE(r.crc32c)
        receivedChecks.set(path, { sizeBytes: r.sizeBytes, crc32c: crc })
        files.add({ path, type: 'file', mode: e.mode, mtime: e.mtime, sizeBytes: r.sizeBytes, crc32c: crc, extents: r.extents })
      }
      progress()
    }

    let end: Extract<BaseBackupEvent, { type: 'end' }> | undefined
    try {
      for (let r = await events.next(); !r.done; r = await events.next()) {
        const ev = r.value
        switch (ev.type) {
          case 'archive':
            archivePrefix = ev.tablespace.oid === null ? '' : `pg_tblspc/${ev.tablespace.oid}/`
            reader = new TarArchiveReader(ev.name, onEntry)
            break
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

    // The server's manifest is the oracle for every byte we received (invariant 4).
    const manifestBytes = Buffer.concat(manifest)
    checkAgainstManifest(manifestBytes, receivedChecks, start.startLsn, end.endLsn)
    const manifestBlobs: BlobId[] = []
    for (let off = 0; off < manifestBytes.length; off += MANIFEST_PIECE_BYTES) {
      manifestBlobs.push((await repo.putBlob('meta', manifestBytes.subarray(off, off + MANIFEST_PIECE_BYTES), { signal })).id)
    }
    const fileList = await files.finish(repo, { signal })

    endLsn = end.endLsn
    walStream.sendStatus(true) // wake the WAL loop if no WAL is flowing
    await walDone
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
      server: { version: facts.version, versionNum: facts.versionNum, major: facts.major, fromStandby: /^BACKUP FROM: standby$/m.test(backupLabel) },
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
      backupLabel,
      tablespaceMap,
      storedBytes: repo.sessionStats.storedBytes - storedAtStart,
      checksumFailures,
    }
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
    await walConn.close().catch(() => walConn.destroy())
  }
}

/** The repository as a blob sink whose hasBlob also requires the blob's pack to exist in storage. */
async function sinkCheckingPacks(repo: Repository, signal?: AbortSignal): Promise<BlobSink> {
  const packs = new Set<string>()
  for await (const obj of repo.storage.list(PACKS_PREFIX, { signal })) packs.add(obj.key.slice(obj.key.lastIndexOf('/') + 1))
  return {
    blobIdOf: (bytes) => repo.blobIdOf(bytes),
    putBlob: (type, bytes, o) => repo.putBlob(type, bytes, o),
    // A blob not located yet was put in this session (not flushed): it is there. A located blob counts only if
    // its pack was in storage when the backup began; the parent's blobs were all located by then.
    hasBlob: (id) => {
      const loc = repo.locateBlob(id)
      return loc === undefined ? repo.hasBlob(id) : packs.has(loc.packId)
    },
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

/**
 * Every file the server listed must have arrived with the size and CRC-32C it computed, and nothing else may have
 * arrived; the manifest's WAL range must be the backup's.
 */
function checkAgainstManifest(bytes: Buffer, received: Map<string, { sizeBytes: number; crc32c: string }>, startLsn: Lsn, endLsn: Lsn): void {
  const m = parseServerManifest(bytes, { verifyChecksum: true })
  const problems: string[] = []
  for (const f of m.files) {
    const got = received.get(f.path)
    if (!got) problems.push(`'${f.path}' is in the server's manifest but did not arrive`)
    else if (got.sizeBytes !== f.size) problems.push(`'${f.path}' has ${got.sizeBytes} bytes, the server's manifest says ${f.size}`)
    else if (f.checksumAlgorithm === 'CRC32C' && got.crc32c !== f.checksum) {
      problems.push(`'${f.path}' has CRC-32C ${got.crc32c}, the server's manifest says ${f.checksum}`)
    }
    received.delete(f.path)
  }
  for (const path of received.keys()) problems.push(`'${path}' arrived but is not in the server's manifest`)
  const range = m.walRanges[m.walRanges.length - 1]
  if (m.walRanges.length === 0 || m.walRanges[0].startLsn !== startLsn || range.endLsn !== endLsn) {
    problems.push(`the manifest's WAL range does not match the backup's ${formatLsn(startLsn)}..${formatLsn(endLsn)}`)
  }
  if (problems.length > 0) {
    throw new IntegrityError(`the backup does not match the server's manifest: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` (and ${problems.length - 5} more)` : ''}`, {
      hint: 'the data was damaged in transit or by a bug; nothing was recorded, run the backup again',
    })
  }
}
