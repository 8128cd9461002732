// `copy`: backups, with the WAL they need, from one repository into a second one that already exists (3-2-1
// copies), plain or encrypted with other keys. Only what the target lacks crosses; everything that names blobs is
// rewritten with the target's ids; each backup's record is written last, so the target lists a backup only once
// all of it (data, metadata, WAL) is durable there. Interrupted, it leaves no half-listed backup, and the next run
// stores nothing twice. Both repositories are held under shared locks.

import { setMaxListeners } from 'node:events'
import { AlreadyExistsError, NotFoundError, UsageError } from '../errors.js'
import { OperationEvents, type OperationOptions } from '../events.js'
import {
  assertSoundBackupRecord,
  type BackupRecord,
  type BlobId,
  CLUSTER_RECORD_KIND,
  type ClusterRecord,
  type FileListSummary,
  listBackups,
  listClusters,
  type LockTiming,
  type RepoLock,
  type Repository,
  resolveCluster,
  writeBackupRecord,
} from '../repo/index.js'
import { BackupFilesCopier, type CopyBase } from './backup-files-copier.js'
import { BlobMapper } from './blob-mapper.js'
import { WalCopier } from './wal-copier.js'

/** Options of {@link copyBackups}. Choose at most one of `backups`, `cluster` and `all`. */
export interface CopyOptions extends OperationOptions {
  /** Where the backups are. */
  source: Repository
  /** Where they go: an existing repository (plain or encrypted, with its own keys), not the source. */
  target: Repository
  /** These backups (ids, of any cluster). */
  backups?: readonly string[]
  /** Every backup of this cluster (name or system identifier). */
  cluster?: string
  /** Every backup of every cluster. Without `backups`, `cluster` or `all`: every backup of the source's only cluster. */
  all?: boolean
  /** Also every WAL file stored for the clusters concerned (for point-in-time recovery from the copy). */
  withWal?: boolean
  /** Blobs read from the source at once (default 16; about 1 MiB each). */
  maxReads?: number
  /** Worker threads decoding source blobs (default: as restore chooses). */
  workers?: number
  /** Timing of the locks on both repositories (defaults: stale after 30 min, refreshed every 5 min). */
  lockTiming?: LockTiming
}

/** One backup of a copy. */
export interface CopiedBackup {
  id: string
  systemId: string
  /** `copied` now, or `present`: the target held it already (and nothing of it was read). */
  result: 'copied' | 'present'
}

/** What {@link copyBackups} did. */
export interface CopyResult {
  source: string
  target: string
  backups: CopiedBackup[]
  /** WAL files written to the target, and those it held already. */
  wal: { copied: number; present: number }
  /** Blobs and plain bytes read from the source (file data, metadata and WAL). */
  read: { blobs: number; bytes: number }
  /** What the target grew by: blobs and their plain bytes, bytes as stored (compressed, encrypted), packs. */
  stored: { blobs: number; plainBytes: number; storedBytes: number; packs: number }
  durationMs: number
}

/**
 * Copies backups with their WAL from `source` to `target` (see the module comment). Progress phases: `wal` (the
 * WAL of a backup, or of a cluster with `withWal`; items are WAL files) and `files` (a backup's file list; items
 * are entries, `detail.backup` names it).
 * @throws UsageError for a bad selection or when source and target are one repository; NotFoundError for an
 *   unknown backup or a backup whose WAL the source lacks; LockedError when a lock cannot be taken or is lost
 */
export async function copyBackups(o: CopyOptions): Promise<CopyResult> {
  const started = Date.now()
  const { source, target } = o
  const events = new OperationEvents('copy', o.onEvent)
  const statsBefore = target.sessionStats
  if (source.config.id === target.config.id) {
    throw new UsageError(`'${source.location}' and '${target.location}' are the same repository`, { hint: 'copy to another repository: --to URL' })
  }
  if ([o.backups !== undefined && o.backups.length > 0, o.cluster !== undefined, o.all === true].filter(Boolean).length > 1) {
    throw new UsageError('choose the backups to copy in one way: --backup, --cluster or --all', { hint: "see 'pgkeep copy --help'" })
  }
  const targetLock = await target.acquireLock('shared', {
    purpose: 'copy',
    signal: o.signal,
    ...o.lockTiming,
    onStateChange: (c) => c.state !== 'lost' && events.say(c.state === 'held' ? 'info' : 'warning', c.message),
  })
  let sourceLock: RepoLock | undefined
  let mapper: BlobMapper | undefined
  try {
    sourceLock = await source.acquireReaderLock({
      purpose: 'copy',
      signal: o.signal,
      ...o.lockTiming,
      onStateChange: (c) => c.state === 'at-risk' && events.say('warning', c.message),
    })
    if (!sourceLock) {
      events.say(
        'warning',
        `no write access to repository '${source.location}': copying without a lock on it, so maintenance started there meanwhile would not wait`,
      )
    }
    const signal = AbortSignal.any([o.signal, targetLock.signal, sourceLock?.signal].filter((s): s is AbortSignal => s !== undefined))
    // Every blob read in flight listens on it: not a leak.
    setMaxListeners(0, signal)
    const sourceBackups = await listBackups(source, undefined, { signal })
    const { backups: selected, clusters } = await selectBackups(source, sourceBackups, o, signal)
    if (selected.length === 0 && !o.withWal) events.say('info', `repository '${source.location}' holds no backup to copy`)

    const inTarget = new Map<string, BackupRecord>()
    for (const b of await listBackups(target, undefined, { signal })) inTarget.set(`${b.systemId}/${b.id}`, b)
    // A record is written after the index objects of its blobs: loaded now, the indexes cover every backup listed
    // above, also those written since the repositories were opened.
    await source.refreshIndex({ signal })
    await target.refreshIndex({ signal })
    const inSource = new Map(sourceBackups.map((b) => [`${b.systemId}/${b.id}`, b]))
    mapper = await BlobMapper.open(source, target, { signal, maxReads: o.maxReads, workers: o.workers })
    const wal = new WalCopier(source, target, { signal, onFile: () => events.progress(walCounters()) })
    const walCounters = () => ({ bytesDone: wal.stats.bytesRead, bytesTotal: null, itemsDone: wal.stats.copied + wal.stats.present, itemsTotal: null })
    const copied: CopiedBackup[] = []
    const clustersDone = new Set<string>()

    for (const [i, b] of selected.entries()) {
      const key = `${b.systemId}/${b.id}`
      if (inTarget.has(key)) {
        copied.push({ id: b.id, systemId: b.systemId, result: 'present' })
        events.say('info', `backup ${b.id} is in '${target.location}' already`)
        continue
      }
      assertSoundBackupRecord(b)
      events.say('info', `copying backup ${b.id} (${i + 1} of ${selected.length}) to '${target.location}'`)
      if (!clustersDone.has(b.systemId)) {
        await copyClusterRecord(source, target, b.systemId, events, signal)
        clustersDone.add(b.systemId)
      }
      events.phase('wal', walCounters())
      await wal.copyForBackup(b)
      const base = chooseBase(b, inSource, inTarget)
      if (base) events.say('info', `backup ${base.source.id}, in both repositories, gives the ids of the blobs the two share`)
      let entries = 0
      const filesCounters = () => ({
        bytesDone: mapper!.stats.bytesRead,
        bytesTotal: null,
        itemsDone: entries,
        itemsTotal: b.files.count,
        detail: { backup: b.id, storedBytes: target.sessionStats.storedBytes - statsBefore.storedBytes },
      })
      events.phase('files', filesCounters())
      const copier = new BackupFilesCopier(source, target, mapper, b, base, {
        signal,
        onEntries: (n) => {
          entries += n
          events.progress(filesCounters())
        },
      })
      const { files, serverManifest } = await copier.copy()
      events.flush()
      const rec = targetRecord(b, files, serverManifest, events)
      // Written last: it flushes first, so every blob it references (and the WAL above) is durable before it.
      await writeBackupRecord(target, rec, { signal })
      inTarget.set(key, rec)
      copied.push({ id: b.id, systemId: b.systemId, result: 'copied' })
    }
    if (o.withWal) {
      for (const systemId of clusters) {
        events.phase('wal', walCounters())
        await wal.copyAll(systemId)
      }
    }
    await target.flush({ signal })
    const s = target.sessionStats
    return {
      source: source.location,
      target: target.location,
      backups: copied,
      wal: { copied: wal.stats.copied, present: wal.stats.present },
      read: { blobs: mapper.stats.blobsRead, bytes: mapper.stats.bytesRead + wal.stats.bytesRead },
      stored: {
        blobs: s.blobsStored - statsBefore.blobsStored,
        plainBytes: s.plainBytesStored - statsBefore.plainBytesStored,
        storedBytes: s.storedBytes - statsBefore.storedBytes,
        packs: s.packsWritten - statsBefore.packsWritten,
      },
      durationMs: Date.now() - started,
    }
  } finally {
    await mapper?.close().catch(() => {})
    // What reached the target is indexed while the lock still guards it (a run that failed or was stopped leaves
    // its blobs findable for the next one); once released, an index object could race a gc.
    await target.flush().catch(() => {})
    await sourceLock?.release().catch(() => {})
    await targetLock.release().catch(() => {})
  }
}

/**
 * The record of the copy: the source's, field by field as docs/backup-format.md §2 defines them, with the target's
 * ids. Members this version does not know are left out (and said): they might name blobs by their source ids.
 * `storedBytes` stays what the backup stored when it was taken.
 */
function targetRecord(b: BackupRecord, files: FileListSummary, serverManifest: BlobId[], events: OperationEvents): BackupRecord {
  const rec: BackupRecord = {
    formatVersion: b.formatVersion,
    id: b.id,
    systemId: b.systemId,
    clusterName: b.clusterName,
    type: b.type,
    parent: b.parent,
    incrementalMode: b.incrementalMode,
    label: b.label,
    server: b.server,
    timeline: b.timeline,
    startLsn: b.startLsn,
    endLsn: b.endLsn,
    startedAt: b.startedAt,
    finishedAt: b.finishedAt,
    durationMs: b.durationMs,
    walSegmentSizeBytes: b.walSegmentSizeBytes,
    tablespaces: b.tablespaces,
    files,
    serverManifest,
    backupLabel: b.backupLabel,
    tablespaceMap: b.tablespaceMap,
    storedBytes: b.storedBytes,
    checksumFailures: b.checksumFailures,
  }
  const unknown = Object.keys(b).filter((k) => !(k in rec))
  if (unknown.length > 0)
    events.say('warning', `backup ${b.id}: its record's members ${unknown.map((k) => `'${k}'`).join(', ')} are unknown to this pgkeep and not copied`)
  return rec
}

/**
 * The backups `o` selects in `source`, sorted by cluster and then by id (so a parent comes before its children),
 * and the clusters concerned (whose WAL `withWal` copies: with --cluster or none, also a cluster that has WAL only).
 */
async function selectBackups(
  source: Repository,
  all: readonly BackupRecord[],
  o: CopyOptions,
  signal: AbortSignal,
): Promise<{ backups: BackupRecord[]; clusters: string[] }> {
  let out: BackupRecord[]
  let clusters: string[] | undefined
  if (o.backups !== undefined && o.backups.length > 0) {
    out = []
    for (const id of new Set(o.backups)) {
      const found = all.filter((b) => b.id === id)
      if (found.length === 0) {
        throw new NotFoundError(`backup '${id}' is not in repository '${source.location}'`, { hint: "run 'pgkeep info --repo …' to list the backups" })
      }
      out.push(...found)
    }
  } else if (o.all) {
    out = [...all]
    clusters = (await listClusters(source, { signal })).map((c) => c.systemId)
  } else {
    const cluster = await resolveCluster(source, o.cluster, { signal })
    out = all.filter((b) => b.systemId === cluster.systemId)
    clusters = [cluster.systemId]
  }
  out.sort((a, b) => (a.systemId !== b.systemId ? (a.systemId < b.systemId ? -1 : 1) : a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  return { backups: out, clusters: clusters ?? [...new Set(out.map((b) => b.systemId))] }
}

/**
 * The backup of the same cluster that both repositories hold and whose pairs of ids the copy of `b` relies on:
 * its parent if copied, else the newest older one, else none. The target's copy of it is complete (its record
 * exists).
 */
function chooseBase(b: BackupRecord, inSource: Map<string, BackupRecord>, inTarget: Map<string, BackupRecord>): CopyBase | undefined {
  const both = (id: string) => {
    const s = inSource.get(`${b.systemId}/${id}`)
    const t = inTarget.get(`${b.systemId}/${id}`)
    return s && t ? { source: s, target: t } : undefined
  }
  if (b.parent) {
    const p = both(b.parent)
    if (p) return p
  }
  const older = [...inTarget.values()].filter((t) => t.systemId === b.systemId && t.id < b.id && inSource.has(`${t.systemId}/${t.id}`))
  const newest = older.sort((x, y) => (x.id < y.id ? 1 : -1))[0]
  return newest ? both(newest.id) : undefined
}

/** Copies the cluster record (name and creation time) unless the target has one; a different name there is said. */
async function copyClusterRecord(source: Repository, target: Repository, systemId: string, events: OperationEvents, signal: AbortSignal): Promise<void> {
  let rec: ClusterRecord
  try {
    rec = (await source.readRecord<ClusterRecord>(CLUSTER_RECORD_KIND, systemId, { signal })).value
  } catch (err) {
    if (err instanceof NotFoundError) return
    throw err
  }
  const value: ClusterRecord = { systemId, name: rec.name, createdAt: rec.createdAt }
  try {
    await target.writeRecord(CLUSTER_RECORD_KIND, systemId, value, { signal })
  } catch (err) {
    if (!(err instanceof AlreadyExistsError)) throw err
    const there = (await target.readRecord<ClusterRecord>(CLUSTER_RECORD_KIND, systemId, { signal })).value
    if (there.name !== rec.name) {
      events.say(
        'warning',
        `cluster ${systemId} is named '${there.name}' in '${target.location}' and '${rec.name}' in '${source.location}': the target keeps its name`,
      )
    }
  }
}
