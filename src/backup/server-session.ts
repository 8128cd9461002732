// The backup's side of the server conversation before any file arrives: the server's facts (identity, major, page
// and segment size, WAL summaries), the WAL slot, and the start of BASE_BACKUP, incremental on PostgreSQL 17+ when
// the server can (the parent's manifest uploaded first), else plain, saying why.

import {
  baseBackup,
  type BaseBackupEvent,
  connect,
  createReplicationSlot,
  identifySystem,
  type ReplicationConnection,
  ServerError,
  show,
  uploadManifest,
} from '../../protocol/index.js'
import { FormatError, UsageError } from '../errors.js'
import { parseSizeSetting } from '../pg/lsn.js'
import { majorSupport, SUPPORTED_MAJORS } from '../pg/versions.js'
import type { BackupRecord, Repository } from '../repo/index.js'
import type { BackupOptions } from './backup.js'

/** What the server conversation needs of a backup's options. */
export type SessionOptions = Pick<BackupOptions, 'server' | 'repo' | 'signal' | 'label' | 'checkpoint' | 'maxRateKbps'>

/** What a backup needs to know of its server before it starts. */
export interface ServerFacts {
  systemId: string
  major: number
  versionNum: number
  version: string
  segmentSizeBytes: number
  summarizeWal: boolean
}

/** A replication connection to the backup's server. */
export async function openReplication(o: SessionOptions, applicationName: string): Promise<ReplicationConnection> {
  const s = o.server
  return connect(s.conninfo, { env: s.env ? { ...s.env } : undefined, overrides: s.overrides, fallbackApplicationName: applicationName, signal: o.signal })
}

export async function serverFacts(c: ReplicationConnection, signal?: AbortSignal): Promise<ServerFacts> {
  const id = await identifySystem(c, { signal })
  const major = c.serverMajor
  if (majorSupport(major) === 'too-old') {
    throw new UsageError(`PostgreSQL ${c.parameters.get('server_version')} is too old for pgkeep`, {
      hint: `pgkeep supports PostgreSQL ${SUPPORTED_MAJORS.min} and later; use pg_basebackup of the same major`,
    })
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

/**
 * Starts BASE_BACKUP and reads its start position. With a parent on PostgreSQL 17+ and summarize_wal on, it first
 * uploads the parent's manifest and asks for an incremental backup; when the server cannot, it falls back to a
 * plain BASE_BACKUP whose pages are compared on the client, and says so.
 */
export async function beginBaseBackup(
  o: SessionOptions,
  facts: ServerFacts,
  parent: BackupRecord | undefined,
  say: (level: 'info' | 'warning', text: string, code?: string) => void,
) {
  let mode: BackupRecord['incrementalMode'] = parent ? 'client' : null
  let conn = await openReplication(o, 'pgkeep backup')
  try {
    if (parent && facts.major >= 17 && parent.server.major >= 17) {
      if (!facts.summarizeWal) {
        say('info', 'summarize_wal is off on the server: the incremental backup reads every page and compares on the client', 'client-side-incremental')
      } else {
        try {
          await uploadManifest(conn, await readManifestBytes(o.repo, parent, o.signal), { signal: o.signal })
          mode = 'server'
        } catch (err) {
          say(
            'info',
            `the server cannot take an incremental backup (${(err as Error).message}); comparing pages on the client instead`,
            'client-side-incremental',
          )
          conn.destroy()
          conn = await openReplication(o, 'pgkeep backup')
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
      say('info', `the server refused the incremental backup (${err.message}); comparing pages on the client instead`, 'client-side-incremental')
      mode = 'client'
      conn = await openReplication(o, 'pgkeep backup')
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

function startBaseBackup(c: ReplicationConnection, o: SessionOptions, incremental: boolean) {
  return baseBackup(c, {
    label: o.label ?? 'pgkeep',
    checkpoint: o.checkpoint ?? 'fast',
    progress: true,
    maxRateKbps: o.maxRateKbps,
    manifest: true,
    manifestChecksums: 'CRC32C',
    incremental,
    // The engine copies what it keeps of each message before it asks for the next (tar-entries.ts, the ingests,
    // manifest-check.ts), so the connection reads into the same memory again.
    transientData: true,
    signal: o.signal,
  })
}

/** A temporary slot dies with its session; a named one is created when missing and kept. */
export async function ensureSlot(c: ReplicationConnection, slot: string, temporary: boolean, signal?: AbortSignal): Promise<void> {
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
