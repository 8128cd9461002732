// `pgkeep check`: can this server be backed up by pgkeep, and if not, exactly why and how to fix it.
// Everything essential is learned over the replication protocol; an ordinary SQL connection, when the server
// allows one, adds what the replication protocol cannot tell (free WAL senders, tablespace names, wal_level when
// no WAL sender can be started at all).

import pg from 'pg'
import {
  AuthError,
  type ConnectOptions,
  ConnectionError,
  connect,
  describeHost,
  identifySystem,
  isPgkeepError,
  lookupPgpass,
  type ReplicationConnection,
  resolveConnectOptions,
  ServerError,
  show,
} from '../../protocol/index.js'
import type { OperationOptions } from '../events.js'
import { parseSizeSetting } from '../pg/lsn.js'
import { SUPPORTED_MAJORS } from '../pg/versions.js'
import type { ServerTarget } from '../server-target.js'

/** Stable codes of the problems `check` reports; scripts may branch on them. */
export const CheckProblemCodes = {
  SERVER_UNREACHABLE: 'SERVER_UNREACHABLE',
  AUTH_FAILED: 'AUTH_FAILED',
  HBA_REJECTED: 'HBA_REJECTED',
  ROLE_NO_REPLICATION: 'ROLE_NO_REPLICATION',
  WAL_LEVEL_MINIMAL: 'WAL_LEVEL_MINIMAL',
  NO_FREE_WAL_SENDER: 'NO_FREE_WAL_SENDER',
  TOO_FEW_WAL_SENDERS: 'TOO_FEW_WAL_SENDERS',
  UNSUPPORTED_VERSION: 'UNSUPPORTED_VERSION',
  DATA_CHECKSUMS_OFF: 'DATA_CHECKSUMS_OFF',
  SUMMARIZE_WAL_OFF: 'SUMMARIZE_WAL_OFF',
  CONNECTION_FAILED: 'CONNECTION_FAILED',
} as const

export interface CheckProblem {
  readonly code: string
  /** `error` makes the server not ready; `warning` is worth knowing but does not block backups. */
  readonly severity: 'error' | 'warning'
  readonly message: string
  readonly hint: string
}

export interface CheckReport {
  /** True when pgkeep can take backups of this server (no error-severity problem). */
  ready: boolean
  /** Where we connected (host and port, or socket), without credentials. */
  target: string
  serverVersion: string | null
  serverVersionNum: number | null
  systemIdentifier: string | null
  timeline: number | null
  walLevel: string | null
  maxWalSenders: number | null
  /** Free WAL senders, when an SQL connection could count them; null when unknown. */
  walSendersFree: number | null
  role: { name: string; mayReplicate: boolean | null }
  dataChecksums: boolean | null
  fullPageWrites: boolean | null
  /** null before PostgreSQL 17, which has no WAL summarizer. */
  summarizeWal: boolean | null
  archiveMode: string | null
  walSegmentSizeBytes: number | null
  /** User tablespaces; null when no SQL connection was possible to list them. */
  tablespaces: { oid: number; name: string; location: string }[] | null
  problems: CheckProblem[]
}

export interface CheckOptions extends OperationOptions {
  /** The server to inspect (the role pgkeep would back up with). */
  server: ServerTarget
}

/** Inspects a server. Resolves with a report for every server-side problem; rejects only for bad options. */
export async function checkServer(o: CheckOptions): Promise<CheckReport> {
  const s = o.server
  const opts = resolveConnectOptions(s.conninfo, { env: s.env ? { ...s.env } : undefined, overrides: s.overrides, fallbackApplicationName: 'pgkeep check' })
  const report: CheckReport = {
    ready: false,
    target: opts.hosts.map(describeHost).join(', '),
    serverVersion: null,
    serverVersionNum: null,
    systemIdentifier: null,
    timeline: null,
    walLevel: null,
    maxWalSenders: null,
    walSendersFree: null,
    role: { name: opts.user, mayReplicate: null },
    dataChecksums: null,
    fullPageWrites: null,
    summarizeWal: null,
    archiveMode: null,
    walSegmentSizeBytes: null,
    tablespaces: null,
    problems: [],
  }
  const problem = (code: keyof typeof CheckProblemCodes, severity: CheckProblem['severity'], message: string, hint: string) =>
    report.problems.push({ code, severity, message, hint })

  let first: ReplicationConnection | undefined
  /** SHOW data_checksums: `on`/`off`, or a transition state when checksums are being turned on or off online. */
  let checksumState: string | null = null
  try {
    first = await connect(s.conninfo, {
      env: s.env ? { ...s.env } : undefined,
      overrides: s.overrides,
      fallbackApplicationName: 'pgkeep check',
      signal: o.signal,
    })
  } catch (err) {
    explainConnectFailure(err, opts, problem)
  }

  if (first) {
    try {
      report.role.mayReplicate = true
      report.serverVersion = first.parameters.get('server_version') ?? null
      report.serverVersionNum = first.serverVersionNum
      const id = await identifySystem(first, o)
      report.systemIdentifier = id.systemId.toString()
      report.timeline = id.timeline
      const setting = (name: string) => show(first!, name, o).catch(() => null)
      report.walLevel = await setting('wal_level')
      const senders = await setting('max_wal_senders')
      report.maxWalSenders = senders === null ? null : Number(senders)
      checksumState = await setting('data_checksums')
      report.dataChecksums = checksumState === 'on'
      report.fullPageWrites = (await setting('full_page_writes')) === 'on'
      report.archiveMode = await setting('archive_mode')
      report.walSegmentSizeBytes = parseSize(await setting('wal_segment_size'))
      if (first.serverMajor >= 17) report.summarizeWal = (await setting('summarize_wal')) === 'on'

      // A backup needs two WAL senders at once: one for BASE_BACKUP, one for the WAL stream. Prove a second one.
      try {
        const second = await connect(s.conninfo, { env: s.env ? { ...s.env } : undefined, overrides: s.overrides, signal: o.signal })
        await second.close()
      } catch (err) {
        if (err instanceof ServerError && err.sqlState === '53300') {
          problem(
            'NO_FREE_WAL_SENDER',
            'error',
            `no free WAL sender for a second replication connection: ${err.message}`,
            'a backup needs two WAL senders at once; raise max_wal_senders (restart needed) or stop other replication clients',
          )
        } else throw err
      }
    } catch (err) {
      problem(
        'CONNECTION_FAILED',
        'error',
        `inspecting the server failed: ${(err as Error).message}`,
        isPgkeepError(err) && err.hint ? err.hint : 'check the server log',
      )
    } finally {
      await first.close()
    }
  }

  await addSqlFacts(report, opts, o)

  const major = report.serverVersionNum === null ? null : Math.floor(report.serverVersionNum / 10000)
  if (major !== null && (major < SUPPORTED_MAJORS.min || major > SUPPORTED_MAJORS.max)) {
    problem(
      'UNSUPPORTED_VERSION',
      major < SUPPORTED_MAJORS.min ? 'error' : 'warning',
      `PostgreSQL ${report.serverVersion} is outside the versions pgkeep supports (${SUPPORTED_MAJORS.min} to ${SUPPORTED_MAJORS.max})`,
      major < SUPPORTED_MAJORS.min ? 'upgrade the server, or use pg_basebackup of the same major' : 'newer versions are untested; check the release notes',
    )
  }
  if (report.walLevel === 'minimal' && !report.problems.some((p) => p.code === 'WAL_LEVEL_MINIMAL')) {
    problem(
      'WAL_LEVEL_MINIMAL',
      'error',
      'wal_level is minimal: the server keeps no WAL for physical backups',
      "set wal_level = 'replica' and max_wal_senders = 10 in postgresql.conf, then restart the server",
    )
  }
  if (report.maxWalSenders !== null && report.maxWalSenders < 2 && report.walLevel !== 'minimal') {
    problem(
      'TOO_FEW_WAL_SENDERS',
      'error',
      `max_wal_senders is ${report.maxWalSenders}, but a backup uses two WAL senders at once`,
      'set max_wal_senders = 10 in postgresql.conf and restart the server',
    )
  }
  if (checksumState !== null && checksumState !== 'on' && checksumState !== 'off') {
    // Online enabling of checksums (proposed for PostgreSQL 19, absent from 19rc1) shows `inprogress-on` while
    // pages are being rewritten: those without a checksum yet are not verified by the server during a backup.
    problem(
      'DATA_CHECKSUMS_OFF',
      'warning',
      `data checksums are in state '${checksumState}': pages not yet rewritten carry no checksum, and the server verifies none until the state is on`,
      'wait for checksum enabling to finish before relying on backup-time checksum checks',
    )
  } else if (report.dataChecksums === false) {
    problem(
      'DATA_CHECKSUMS_OFF',
      'warning',
      'data checksums are off: corrupted pages cannot be detected during backups',
      'enable them with pg_checksums --enable on the stopped cluster (or initdb --data-checksums for new clusters)',
    )
  }
  if (report.summarizeWal === false) {
    problem(
      'SUMMARIZE_WAL_OFF',
      'warning',
      'summarize_wal is off: incremental backups will read every page from the server and compare on the client',
      'set summarize_wal = on (reload is enough) so that incremental backups transfer only changed blocks',
    )
  }
  report.ready = report.systemIdentifier !== null && !report.problems.some((p) => p.severity === 'error')
  return report
}

type ProblemFn = (code: keyof typeof CheckProblemCodes, severity: CheckProblem['severity'], message: string, hint: string) => void

function explainConnectFailure(err: unknown, opts: ConnectOptions, problem: ProblemFn): void {
  const hint = isPgkeepError(err) && err.hint ? err.hint : ''
  const message = (err as Error).message
  if (err instanceof AuthError) {
    if (err.sqlState === '28000') return problem('HBA_REJECTED', 'error', message, hint)
    if (err.sqlState === '42501') return problem('ROLE_NO_REPLICATION', 'error', message, hint)
    return problem('AUTH_FAILED', 'error', message, hint || 'check the user name and password')
  }
  if (err instanceof ServerError && err.sqlState === '53300') {
    return problem(
      'NO_FREE_WAL_SENDER',
      'error',
      message,
      'raise max_wal_senders (restart needed) or stop other replication clients; with wal_level = minimal it must be 0, so set wal_level = replica too',
    )
  }
  if (err instanceof ConnectionError) {
    return problem('SERVER_UNREACHABLE', 'error', message, hint || `is the server running at ${opts.hosts.map(describeHost).join(', ')}?`)
  }
  problem('CONNECTION_FAILED', 'error', message, hint || 'check the connection string and the server log')
}

/**
 * Facts the replication protocol cannot give, from an ordinary SQL connection (best effort: pg_hba.conf may allow
 * only replication connections for this role, and then these stay unknown).
 */
async function addSqlFacts(report: CheckReport, opts: ConnectOptions, o: CheckOptions): Promise<void> {
  const hp = opts.hosts[0]
  const password = opts.password ?? (opts.passfile ? await lookupPgpass(opts.passfile, hp, opts.user) : undefined)
  const client = new pg.Client({
    host: hp.host,
    port: hp.port,
    user: opts.user,
    password: password ?? '',
    database: 'postgres',
    application_name: 'pgkeep check',
    connectionTimeoutMillis: 5000,
    ssl: opts.sslmode === 'require' || opts.sslmode.startsWith('verify') ? { rejectUnauthorized: opts.sslmode.startsWith('verify') } : false,
  })
  client.on('error', () => {})
  try {
    o.signal?.throwIfAborted()
    await client.connect()
    const q = async <T>(text: string) => (await client.query(text)).rows as T[]
    const [s] = await q<{ wal_level: string; max_wal_senders: string; version: string; num: string }>(
      `select current_setting('wal_level') wal_level, current_setting('max_wal_senders') max_wal_senders,
              current_setting('server_version') version, current_setting('server_version_num') num`,
    )
    report.walLevel ??= s.wal_level
    report.maxWalSenders ??= Number(s.max_wal_senders)
    report.serverVersion ??= s.version
    report.serverVersionNum ??= Number(s.num)
    const [{ n }] = await q<{ n: string }>(`select count(*)::text n from pg_stat_activity where backend_type = 'walsender'`)
    report.walSendersFree = Math.max(0, Number(s.max_wal_senders) - Number(n))
    const [role] = await q<{ rolreplication: boolean; rolsuper: boolean }>(`select rolreplication, rolsuper from pg_roles where rolname = current_user`)
    if (role && report.role.mayReplicate === null) report.role.mayReplicate = role.rolreplication || role.rolsuper
    report.tablespaces = (
      await q<{ oid: number; spcname: string; location: string }>(
        `select oid::int, spcname, pg_tablespace_location(oid) location from pg_tablespace
          where spcname not in ('pg_default', 'pg_global') order by oid`,
      )
    ).map((r) => ({ oid: r.oid, name: r.spcname, location: r.location }))
    if (s.wal_level === 'minimal') {
      report.problems = report.problems.filter((p) => p.code !== 'NO_FREE_WAL_SENDER')
      report.problems.push({
        code: CheckProblemCodes.WAL_LEVEL_MINIMAL,
        severity: 'error',
        message: 'wal_level is minimal: the server keeps no WAL for physical backups and allows no WAL senders',
        hint: "set wal_level = 'replica' and max_wal_senders = 10 in postgresql.conf, then restart the server",
      })
    }
  } catch {
    // Not allowed or not reachable: the report keeps what replication told us.
  } finally {
    await client.end().catch(() => {})
  }
}

function parseSize(text: string | null): number | null {
  try {
    return text === null ? null : parseSizeSetting(text)
  } catch {
    return null
  }
}
