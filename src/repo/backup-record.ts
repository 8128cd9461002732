// Backup records: one immutable record per completed backup (invariant 1: it exists only once everything it
// references is durable), keyed `backup` / `<systemId>/<backupId>`, and one `cluster` / `<systemId>` record per
// cluster with its readable name. Backup ids sort by time, so the newest backup of a cluster is the greatest key.

import { randomBytes } from 'node:crypto'
import { AlreadyExistsError, NotFoundError } from '../errors.js'
import type { BlobId } from './blob.js'
import type { FileListSummary } from './file-list.js'
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
  const t = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
  return `${t}-${randomBytes(3).toString('hex')}`
}

export const backupKey = (systemId: string, id: string) => `${systemId}/${id}`

export async function writeBackupRecord(repo: Repository, rec: BackupRecord, o: { signal?: AbortSignal } = {}): Promise<void> {
  const refs = [...rec.files.chunks.map((c) => c.blob), ...rec.serverManifest]
  await repo.writeRecord(BACKUP_RECORD_KIND, backupKey(rec.systemId, rec.id), rec, { blobRefs: refs, signal: o.signal })
}

/** Backups of one cluster (or of all), oldest first. */
export async function listBackups(repo: Repository, systemId?: string, o: { signal?: AbortSignal } = {}): Promise<BackupRecord[]> {
  const keys: string[] = []
  for await (const r of repo.listRecords(BACKUP_RECORD_KIND, systemId ? `${systemId}/` : '', o)) keys.push(r.key)
  const out: BackupRecord[] = []
  for (const key of keys) out.push((await repo.readRecord<BackupRecord>(BACKUP_RECORD_KIND, key, o)).value)
  return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
}

/** Finds a backup by id (of any cluster), or the newest with 'latest'. NotFoundError with a hint otherwise. */
export async function findBackup(repo: Repository, idOrLatest: string, systemId?: string, o: { signal?: AbortSignal } = {}): Promise<BackupRecord> {
  const all = await listBackups(repo, systemId, o)
  const found = idOrLatest === 'latest' ? all[all.length - 1] : all.find((b) => b.id === idOrLatest)
  if (!found) {
    throw new NotFoundError(idOrLatest === 'latest' ? `repository '${repo.location}' has no backup` : `backup '${idOrLatest}' is not in repository '${repo.location}'`, {
      hint: "run 'pgkeep info --repo …' to list the backups",
    })
  }
  return found
}

/** The cluster record, written on the first backup of a cluster; the first name given sticks. */
export async function ensureClusterRecord(repo: Repository, systemId: string, name: string | undefined, o: { signal?: AbortSignal } = {}): Promise<ClusterRecord> {
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
