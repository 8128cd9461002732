// BASE_BACKUP, both eras, as one version-independent stream of events:
// PG 15+: one CopyOut of typed messages ('n' new archive, 'd' data, 'p' progress, 'm' manifest follows);
// PG 13/14: one CopyOut of raw tar bytes per tablespace (without the tar trailer), then one for the manifest.
// protocol.md §4 has the byte-level sequences.

import { ProtocolError, type ServerMessageFields } from '../errors.js'
import { type Lsn, parseLsn } from '../lsn.js'
import { decodeBaseBackupMessage } from '../messages/base-backup.js'
import type { BackendMessage } from '../messages/backend.js'
import type { ReplicationConnection, ResultSet } from '../session/connection.js'
import { type ResultLimits, SMALL_RESULT, TABLESPACE_LIST_RESULT } from '../session/result-limits.js'
import { frontend } from '../wire/frontend.js'
import { onlyRow, quoteLiteral, requiredText, text } from './text.js'

export const MANIFEST_CHECKSUM_ALGORITHMS = ['NONE', 'CRC32C', 'SHA224', 'SHA256', 'SHA384', 'SHA512'] as const
export type ManifestChecksumAlgorithm = (typeof MANIFEST_CHECKSUM_ALGORITHMS)[number]

export interface BaseBackupOptions {
  /** Written into backup_label (at most 1024 bytes). */
  label?: string
  /** `fast` requests an immediate checkpoint; `spread` (the server's default) waits for a paced one. */
  checkpoint?: 'fast' | 'spread'
  /** Ask the server to compute sizes first, so progress has a total. */
  progress?: boolean
  /** Throttle in kB/s (32 … 1048576). Omit for unlimited. */
  maxRateKbps?: number
  /** Ask for a backup_manifest (default true). */
  manifest?: boolean | 'force-encode'
  manifestChecksums?: ManifestChecksumAlgorithm
  /** Send a tablespace_map file instead of pg_tblspc symlinks. */
  tablespaceMap?: boolean
  /** Verify page checksums while sending (the server's default: on). */
  verifyChecksums?: boolean
  /** Include the WAL needed by the backup in base.tar (default false: stream it on a second connection). */
  wal?: boolean
  /** Wait for WAL archiving of the end segment (default false, as pg_basebackup does when it collects WAL itself). */
  wait?: boolean
  /** PG 17+: send only blocks changed since the manifest given to UPLOAD_MANIFEST on this connection. */
  incremental?: boolean
  /**
   * The bytes of a `data` or `manifest` event are valid only until the next event is asked for: the consumer copies
   * what it keeps, and the connection reads into the same memory again instead of new memory for every message
   * (ReplicationConnection.releaseReceived). Default false: the consumer owns the bytes.
   */
  transientData?: boolean
  signal?: AbortSignal
}

/** One row of the tablespace list; the main data directory is the row with oid null, always last. */
export interface TablespaceRow {
  readonly oid: number | null
  /** Symlink target; null for the main data directory. */
  readonly location: string | null
  /** Estimated size in bytes (only with `progress`). */
  readonly sizeBytes: number | null
}

export type BaseBackupEvent =
  | { type: 'start'; startLsn: Lsn; timeline: number; tablespaces: TablespaceRow[] }
  /** A tar archive begins: `base.tar` for the data directory, `<oid>.tar` for a tablespace. */
  | { type: 'archive'; name: string; tablespace: TablespaceRow }
  /**
   * Tar bytes of the current archive; owned by the consumer (with `transientData`, until it asks for the next event).
   * On PG 14 the tar trailer is added by pgkeep.
   */
  | { type: 'data'; data: Buffer }
  | { type: 'archive-end'; name: string }
  /** Bytes received so far of all archives, and the server's estimate of the total when known. */
  | { type: 'progress'; bytesDone: number; bytesTotal: number | null }
  /** Bytes of the server's backup_manifest. */
  | { type: 'manifest'; data: Buffer }
  /** A NoticeResponse the server sent during the backup (checksum failure warnings among them). */
  | { type: 'notice'; notice: ServerMessageFields }
  /**
   * The backup finished. `checksumFailure` is set when the server reported page checksum failures (XX001) at the
   * end: all data was sent, but the backup is flagged.
   */
  | { type: 'end'; endLsn: Lsn; timeline: number; checksumFailure?: ServerMessageFields }

/** Notices kept until the consumer pulls the next event; more are counted, not kept. */
const MAX_PENDING_NOTICES = 100

/** The two 512-byte zero blocks that end a tar archive; PG 13/14 leave them out. */
const TAR_TRAILER = Buffer.alloc(1024)

/** Builds the BASE_BACKUP command text for the server's era. */
export function baseBackupCommand(serverMajor: number, o: BaseBackupOptions): string {
  const manifest = o.manifest ?? true
  const checks = o.verifyChecksums ?? true
  if (o.maxRateKbps !== undefined && (o.maxRateKbps < 32 || o.maxRateKbps > 1048576)) {
    throw new ProtocolError(`max rate ${o.maxRateKbps} kB/s is out of range`, { hint: 'use 32 to 1048576 kB/s, or no limit' })
  }
  if (serverMajor >= 15) {
    const opts: string[] = []
    if (o.label !== undefined) opts.push(`LABEL ${quoteLiteral(o.label)}`)
    if (o.progress) opts.push('PROGRESS')
    opts.push(`CHECKPOINT ${quoteLiteral(o.checkpoint ?? 'spread')}`)
    if (o.wal) opts.push('WAL')
    opts.push(`WAIT ${o.wait ? 1 : 0}`)
    if (o.maxRateKbps !== undefined) opts.push(`MAX_RATE ${Math.floor(o.maxRateKbps)}`)
    if (manifest) opts.push(`MANIFEST ${quoteLiteral(manifest === 'force-encode' ? 'force-encode' : 'yes')}`)
    if (manifest && o.manifestChecksums) opts.push(`MANIFEST_CHECKSUMS ${quoteLiteral(o.manifestChecksums)}`)
    if (o.tablespaceMap) opts.push('TABLESPACE_MAP')
    if (!checks) opts.push('VERIFY_CHECKSUMS 0')
    if (o.incremental) {
      if (serverMajor < 17) throw new ProtocolError(`incremental BASE_BACKUP needs PostgreSQL 17 or later (server is ${serverMajor})`)
      opts.push('INCREMENTAL')
    }
    return `BASE_BACKUP (${opts.join(', ')})`
  }
  if (o.incremental) throw new ProtocolError(`incremental BASE_BACKUP needs PostgreSQL 17 or later (server is ${serverMajor})`)
  const parts = ['BASE_BACKUP']
  if (o.label !== undefined) parts.push(`LABEL ${quoteLiteral(o.label)}`)
  if (o.progress) parts.push('PROGRESS')
  if (o.checkpoint === 'fast') parts.push('FAST')
  if (o.wal) parts.push('WAL')
  if (!o.wait) parts.push('NOWAIT')
  if (o.maxRateKbps !== undefined) parts.push(`MAX_RATE ${Math.floor(o.maxRateKbps)}`)
  if (o.tablespaceMap) parts.push('TABLESPACE_MAP')
  if (!checks) parts.push('NOVERIFY_CHECKSUMS')
  if (manifest) parts.push(`MANIFEST ${quoteLiteral(manifest === 'force-encode' ? 'force-encode' : 'yes')}`)
  if (manifest && o.manifestChecksums) parts.push(`MANIFEST_CHECKSUMS ${quoteLiteral(o.manifestChecksums)}`)
  return parts.join(' ')
}

/**
 * Runs BASE_BACKUP and yields its events in order. Consume it with `for await`; the socket is read only as fast as
 * the consumer pulls. Leaving the loop early abandons the backup and closes the connection (a running BASE_BACKUP
 * cannot be cancelled in-band).
 */
export async function* baseBackup(c: ReplicationConnection, o: BaseBackupOptions = {}): AsyncGenerator<BaseBackupEvent> {
  const release = c.begin('BASE_BACKUP')
  const notices: ServerMessageFields[] = []
  const restoreNotices = c.captureNotices((n) => {
    // Notices are drained at every event; a server that floods them between two events must not grow memory, so
    // the excess is dropped (a real server sends a few per file at most: checksum warnings).
    if (notices.length < MAX_PENDING_NOTICES) notices.push(n)
  })
  const onAbort = () => c.destroy(o.signal?.reason)
  let completed = false
  try {
    o.signal?.throwIfAborted()
    o.signal?.addEventListener('abort', onAbort, { once: true })
    const major = c.serverMajor
    c.send(frontend.query(baseBackupCommand(major, o)))

    // Result set 1: start position and timeline. Result set 2: the tablespaces, data directory last.
    const start = onlyRow([await readResultSet(c, 'BASE_BACKUP start position', SMALL_RESULT)], 'BASE_BACKUP')
    const startLsn = parseLsn(requiredText(start[0], 'start LSN'))
    const timeline = decimal(requiredText(start[1], 'start timeline'), 'start timeline')
    const tablespaces: TablespaceRow[] = (await readResultSet(c, 'BASE_BACKUP tablespace list', TABLESPACE_LIST_RESULT)).rows.map((r) => ({
      oid: r[0] === null ? null : decimal(requiredText(r[0], 'tablespace oid'), 'tablespace oid'),
      location: text(r[1]),
      sizeBytes: r[2] === null ? null : decimal(requiredText(r[2], 'tablespace size'), 'tablespace size') * 1024,
    }))
    const total = tablespaces.every((t) => t.sizeBytes !== null) ? tablespaces.reduce((s, t) => s + t.sizeBytes!, 0) : null
    yield* drain(notices)
    yield { type: 'start', startLsn, timeline, tablespaces }

    // With transientData, coming back to read the next message means every event yielded so far was consumed.
    const settle = o.transientData ? () => c.releaseReceived() : () => {}
    let bytesDone = 0
    const archiveName = (t: TablespaceRow) => (t.oid === null ? 'base.tar' : `${t.oid}.tar`)

    if (major >= 15) {
      const first = await c.read()
      if (first.type === 'ErrorResponse') await c.failWith(first.fields)
      if (first.type !== 'CopyOutResponse') throw new ProtocolError(`expected CopyOutResponse, got ${first.type}`)
      let current: string | undefined
      let inManifest = false
      for (;;) {
        settle()
        const msg = c.readBuffered() ?? (await c.read())
        if (notices.length > 0) yield* drain(notices)
        if (msg.type === 'CopyDone') break
        if (msg.type === 'ErrorResponse') await c.failWith(msg.fields)
        if (msg.type !== 'CopyData') throw new ProtocolError(`unexpected ${msg.type} during BASE_BACKUP`)
        const m = decodeBaseBackupMessage(msg.data)
        switch (m.type) {
          case 'Data':
            if (inManifest) yield { type: 'manifest', data: m.data }
            else if (current === undefined) throw new ProtocolError('BASE_BACKUP data before any archive')
            else {
              bytesDone += m.data.length
              yield { type: 'data', data: m.data }
            }
            break
          case 'NewArchive': {
            if (current !== undefined) yield { type: 'archive-end', name: current }
            const t = tablespaces.find((row) => (row.location ?? '') === m.location)
            if (!t) throw new ProtocolError(`archive '${m.name}' for unknown tablespace location '${m.location}'`)
            current = m.name
            yield { type: 'archive', name: m.name, tablespace: t }
            break
          }
          case 'Progress':
            yield { type: 'progress', bytesDone, bytesTotal: total }
            break
          case 'ManifestFollows':
            if (current !== undefined) yield { type: 'archive-end', name: current }
            current = undefined
            inManifest = true
            break
        }
      }
      if (current !== undefined) yield { type: 'archive-end', name: current }
    } else {
      for (const t of tablespaces) {
        const head = await c.read()
        if (head.type === 'ErrorResponse') await c.failWith(head.fields)
        if (head.type !== 'CopyOutResponse') throw new ProtocolError(`expected CopyOutResponse for ${archiveName(t)}, got ${head.type}`)
        yield { type: 'archive', name: archiveName(t), tablespace: t }
        for (;;) {
          settle()
          const msg = c.readBuffered() ?? (await c.read())
          if (notices.length > 0) yield* drain(notices)
          if (msg.type === 'CopyDone') break
          if (msg.type === 'ErrorResponse') await c.failWith(msg.fields)
          if (msg.type !== 'CopyData') throw new ProtocolError(`unexpected ${msg.type} during BASE_BACKUP`)
          bytesDone += msg.data.length
          yield { type: 'data', data: msg.data }
        }
        bytesDone += TAR_TRAILER.length
        yield { type: 'data', data: Buffer.from(TAR_TRAILER) }
        yield { type: 'archive-end', name: archiveName(t) }
        yield { type: 'progress', bytesDone, bytesTotal: total }
      }
    }

    // After the archives: the manifest's own CopyOut on PG 13/14, then the end position, then the final status.
    let next: BackendMessage = await c.read()
    if (next.type === 'CopyOutResponse') {
      for (;;) {
        settle()
        const msg = await c.read()
        if (msg.type === 'CopyDone') break
        if (msg.type === 'ErrorResponse') await c.failWith(msg.fields)
        if (msg.type !== 'CopyData') throw new ProtocolError(`unexpected ${msg.type} in the manifest`)
        yield { type: 'manifest', data: msg.data }
      }
      settle()
      next = await c.read()
    }
    if (next.type === 'ErrorResponse') await c.failWith(next.fields)
    const endRow = onlyRow([await readResultSet(c, 'BASE_BACKUP end position', SMALL_RESULT, next)], 'BASE_BACKUP')
    const endLsn = parseLsn(requiredText(endRow[0], 'end LSN'))
    const endTimeline = decimal(requiredText(endRow[1], 'end timeline'), 'end timeline')
    let checksumFailure: ServerMessageFields | undefined
    const lift = c.limitResponse('BASE_BACKUP final status', SMALL_RESULT)
    try {
      for (let msg = await c.read(); msg.type !== 'ReadyForQuery'; msg = await c.read()) {
        if (msg.type === 'ErrorResponse') {
          // XX001 replaces the final CommandComplete when page checksums failed: the data is all there, but flagged.
          if (msg.fields.sqlState !== 'XX001') await c.failWith(msg.fields)
          checksumFailure = msg.fields
        } else if (msg.type !== 'CommandComplete') {
          throw new ProtocolError(`unexpected ${msg.type} at the end of BASE_BACKUP`)
        }
      }
    } finally {
      lift()
    }
    completed = true
    yield* drain(notices)
    yield { type: 'end', endLsn, timeline: endTimeline, checksumFailure }
  } finally {
    o.signal?.removeEventListener('abort', onAbort)
    restoreNotices()
    release()
    if (!completed) c.destroy()
  }
}

/**
 * The notices collected so far, as events. In the loops over messages it runs only when there are some: `yield*` of
 * a generator inside an async generator costs an awaited step and its allocations even when it yields nothing, and
 * those loops run once per CopyData message.
 */
function* drain(notices: ServerMessageFields[]): Generator<BaseBackupEvent> {
  while (notices.length > 0) yield { type: 'notice', notice: notices.shift()! }
}

/** An unsigned decimal integer column (oid, timeline, size in kB), as the server prints it. */
function decimal(value: string, what: string): number {
  if (!/^[0-9]{1,15}$/.test(value)) {
    throw new ProtocolError(`${what} '${value.slice(0, 40)}' is not a decimal number`, {
      hint: 'PostgreSQL sends decimal numbers here: check that the connection leads to a genuine PostgreSQL server',
    })
  }
  return Number(value)
}

/** Reads one RowDescription, its DataRows and CommandComplete, the response bounded by `limits`. */
async function readResultSet(c: ReplicationConnection, what: string, limits: ResultLimits, first?: BackendMessage): Promise<ResultSet> {
  const lift = c.limitResponse(what, limits)
  try {
    let msg = first ?? (await c.read())
    if (msg.type === 'ErrorResponse') await c.failWith(msg.fields)
    if (msg.type !== 'RowDescription') throw new ProtocolError(`expected RowDescription, got ${msg.type}`)
    const set: ResultSet = { fields: msg.fields, rows: [] }
    for (msg = await c.read(); msg.type === 'DataRow'; msg = await c.read()) set.rows.push(msg.values)
    if (msg.type === 'ErrorResponse') await c.failWith(msg.fields)
    if (msg.type !== 'CommandComplete') throw new ProtocolError(`expected CommandComplete, got ${msg.type}`)
    set.tag = msg.tag
    return set
  } finally {
    lift()
  }
}
