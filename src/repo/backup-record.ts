// Backup records: one immutable record per completed backup (invariant 1: it exists only once everything it
// references is durable), keyed `backup` / `<systemId>/<backupId>`, and one `cluster` / `<systemId>` record per
// cluster with its readable name. Backups are ordered by the time they started (ids carry only whole seconds).

import { randomBytes } from 'node:crypto'
import { AlreadyExistsError, IntegrityError, NotFoundError } from '../errors.js'
import { absoluteLocationProblem, printableName, tablespaceOidProblem } from '../pg/data-dir-entry.js'
import { parseLsn } from '../pg/lsn.js'
import type { BlobId } from './blob.js'
import type { FileListSummary } from './file-list.js'
import { utcStamp } from './layout.js'
import type { Repository } from './repository.js'

export const BACKUP_RECORD_KIND = 'backup'
export const CLUSTER_RECORD_KIND = 'cluster'
export const BACKUP_FORMAT_VERSION = 1

export interface BackupRecord {
  formatVersion: typeof BACKUP_FORMAT_VERSION
  id: string
  /** System identifier of the cluster (decimal). */
  systemId: string
  clusterName: string
  type: 'full' | 'incremental'
  /** The backup whose blobs this one reuses; null for a full backup. */
  parent: string | null
  /** How changes were found: by the server's WAL summaries (17+) or by comparing page hashes on the client. */
  incrementalMode: 'server' | 'client' | null
  label: string
  server: { version: string; versionNum: number; major: number; fromStandby: boolean }
  timeline: number
  startLsn: string
  endLsn: string
  startedAt: string
  finishedAt: string
  durationMs: number
  walSegmentSizeBytes: number
  tablespaces: { oid: number; location: string }[]
  files: FileListSummary
  /** The server's backup_manifest, as pieces of meta blobs in order. */
  serverManifest: BlobId[]
  backupLabel: string
  tablespaceMap: string | null
  /** Plain bytes of blobs this backup added to the repository (file data and metadata, not WAL). */
  storedBytes: number
  /** Page checksum failures the server reported while sending. */
  checksumFailures: { message: string; detail?: string }[]
}

export interface ClusterRecord {
  systemId: string
  name: string
  createdAt: string
}

/** A new backup id: UTC time to the second, then random hex (`20261121T055301Z-3fa9c2`). */
export function newBackupId(now = new Date()): string {
  return `${utcStamp(now)}-${randomBytes(3).toString('hex')}`
}

export const backupKey = (systemId: string, id: string) => `${systemId}/${id}`

export async function writeBackupRecord(repo: Repository, rec: BackupRecord, o: { signal?: AbortSignal } = {}): Promise<void> {
  const refs = [...rec.files.chunks.map((c) => c.blob), ...rec.serverManifest]
  await repo.writeRecord(BACKUP_RECORD_KIND, backupKey(rec.systemId, rec.id), rec, { blobRefs: refs, signal: o.signal })
}

/**
 * Oldest first: by the time a backup started (to the millisecond), then by id. Ids alone are not enough: they carry
 * whole seconds, so two backups started within one second would sort by their random suffix.
 */
export function compareBackups(a: Pick<BackupRecord, 'startedAt' | 'id'>, b: Pick<BackupRecord, 'startedAt' | 'id'>): number {
  const t = Date.parse(a.startedAt) - Date.parse(b.startedAt)
  if (t !== 0 && Number.isFinite(t)) return t
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

/** Backups of one cluster (or of all), oldest first (compareBackups). */
export async function listBackups(repo: Repository, systemId?: string, o: { signal?: AbortSignal } = {}): Promise<BackupRecord[]> {
  const keys: string[] = []
  for await (const r of repo.listRecords(BACKUP_RECORD_KIND, systemId ? `${systemId}/` : '', o)) keys.push(r.key)
  const out: BackupRecord[] = []
  for (const key of keys) out.push((await repo.readRecord<BackupRecord>(BACKUP_RECORD_KIND, key, o)).value)
  return out.sort(compareBackups)
}

/** Finds a backup by id (of any cluster), or the newest with 'latest'. NotFoundError with a hint otherwise. */
export async function findBackup(repo: Repository, idOrLatest: string, systemId?: string, o: { signal?: AbortSignal } = {}): Promise<BackupRecord> {
  const all = await listBackups(repo, systemId, o)
  const found = idOrLatest === 'latest' ? all[all.length - 1] : all.find((b) => b.id === idOrLatest)
  if (!found) {
    throw new NotFoundError(
      idOrLatest === 'latest' ? `repository '${repo.location}' has no backup` : `backup '${idOrLatest}' is not in repository '${repo.location}'`,
      {
        hint: "run 'pgkeep info --repo …' to list the backups",
      },
    )
  }
  return found
}

/** The cluster record, written on the first backup of a cluster; the first name given sticks. */
export async function ensureClusterRecord(
  repo: Repository,
  systemId: string,
  name: string | undefined,
  o: { signal?: AbortSignal } = {},
): Promise<ClusterRecord> {
  try {
    return (await repo.readRecord<ClusterRecord>(CLUSTER_RECORD_KIND, systemId, o)).value
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err
  }
  const rec: ClusterRecord = { systemId, name: name ?? systemId, createdAt: new Date().toISOString() }
  try {
    await repo.writeRecord(CLUSTER_RECORD_KIND, systemId, rec, o)
  } catch (err) {
    if (!(err instanceof AlreadyExistsError)) throw err
    return (await repo.readRecord<ClusterRecord>(CLUSTER_RECORD_KIND, systemId, o)).value
  }
  return rec
}

const BACKUP_ID = /^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$/
const SYSTEM_ID = /^[1-9][0-9]{0,19}$/
const BLOB_ID = /^[0-9a-f]{64}$/
const MAX_TIMELINE = 0xffff_ffff

/**
 * What is wrong with a backup record read from a repository, or an empty list. A repository is untrusted input
 * (invariant 8): restore derives paths from the tablespaces and the file list's chunks, so those are checked to
 * be what pgkeep writes before anything uses them; `verify` reports the same list.
 */
export function backupRecordProblems(rec: BackupRecord): string[] {
  const problems: string[] = []
  const lsn = (text: unknown) => {
    try {
      return typeof text === 'string' ? parseLsn(text) : undefined
    } catch {
      return undefined
    }
  }
  if (typeof rec.id !== 'string' || !BACKUP_ID.test(rec.id)) problems.push(`its id '${printableName(rec.id)}' is malformed`)
  if (typeof rec.systemId !== 'string' || !SYSTEM_ID.test(rec.systemId)) problems.push(`its system identifier '${printableName(rec.systemId)}' is malformed`)
  if (!Number.isInteger(rec.timeline) || rec.timeline < 1 || rec.timeline > MAX_TIMELINE) problems.push(`its timeline ${String(rec.timeline)} is malformed`)
  const start = lsn(rec.startLsn)
  const end = lsn(rec.endLsn)
  if (start === undefined || end === undefined || end < start)
    problems.push(`its WAL range '${printableName(rec.startLsn)}'..'${printableName(rec.endLsn)}' is malformed`)
  const seg = rec.walSegmentSizeBytes
  if (!Number.isInteger(seg) || seg < 1 << 20 || seg > 1 << 30 || (seg & (seg - 1)) !== 0)
    problems.push(`its WAL segment size ${String(seg)} is not a power of two from 1 MiB to 1 GiB`)
  if (!Array.isArray(rec.tablespaces)) problems.push('its tablespace list is malformed')
  else {
    const oids = new Set<number>()
    const locations = new Set<string>()
    for (const t of rec.tablespaces) {
      const oidProblem = tablespaceOidProblem(t?.oid)
      if (oidProblem || typeof t.oid !== 'number') {
        problems.push(oidProblem ?? `tablespace oid ${JSON.stringify(t?.oid)} is not a number`)
        continue
      }
      const locProblem = absoluteLocationProblem(t.location)
      if (locProblem) problems.push(`tablespace ${t.oid}: ${locProblem} ('${printableName(t.location)}')`)
      if (oids.has(t.oid)) problems.push(`tablespace ${t.oid} is listed twice`)
      if (locations.has(t.location)) problems.push(`two tablespaces share the location '${printableName(t.location)}'`)
      oids.add(t.oid)
      locations.add(t.location)
    }
  }
  const chunks = rec.files?.chunks
  if (!Array.isArray(chunks) || !Number.isSafeInteger(rec.files.count)) problems.push('its file list summary is malformed')
  else {
    let count = 0
    let last: string | undefined
    for (const c of chunks) {
      if (
        typeof c?.first !== 'string' ||
        typeof c.last !== 'string' ||
        !(c.first <= c.last) ||
        !Number.isSafeInteger(c.count) ||
        c.count < 1 ||
        !BLOB_ID.test(String(c.blob))
      ) {
        problems.push('a chunk of its file list summary is malformed')
        break
      }
      if (last !== undefined && !(last < c.first)) {
        problems.push(`the chunks of its file list overlap or are out of order at '${printableName(c.first)}'`)
        break
      }
      last = c.last
      count += c.count
    }
    if (problems.length === 0 && count !== rec.files.count) problems.push(`its file list chunks hold ${count} entries, the record says ${rec.files.count}`)
  }
  if (!Array.isArray(rec.serverManifest) || !rec.serverManifest.every((id) => typeof id === 'string' && BLOB_ID.test(id))) {
    problems.push("its list of the server manifest's blobs is malformed")
  }
  return problems
}

/**
 * Throws when a backup record read from a repository breaks the rules of {@link backupRecordProblems}.
 * @throws IntegrityError naming the backup and the first problem
 */
export function assertSoundBackupRecord(rec: BackupRecord): void {
  const problems = backupRecordProblems(rec)
  if (problems.length > 0) {
    throw new IntegrityError(
      `backup record '${printableName(rec.id)}' is not usable: ${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more problems)` : ''}`,
      {
        hint: "the repository is damaged or was altered; run 'pgkeep verify' and restore another backup with --backup",
      },
    )
  }
}
