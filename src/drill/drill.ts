// The drill engine: proves a backup restores. It restores the backup into a scratch directory (tablespaces under
// it, never their original locations) with the restore function its caller gives it (restoreBackup: engines do
// not import each other), starts the copy with PostgreSQL binaries of the backup's major on a socket of its own
// (as the server's user when run as root), waits until recovery reached its target and the copy promoted, runs the
// checks (server-checks.ts), stops the copy, records the drill in the repository and removes the scratch
// directory. Restore and recovery are timed apart from the checks: their sum is the recovery time objective
// measured. docs/drill.md describes it.
// Longer than 400 lines on purpose: a drill is one sequence whose steps share the scratch directory, the copy's
// server process, the timings and the cleanup; the checks and the check file live apart (server-checks.ts,
// check-file.ts).

import { existsSync } from 'node:fs'
import { chmod, lstat, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type pg from 'pg'
import { AccessDeniedError, Codes, isPgkeepError, UsageError } from '../errors.js'
import { type EventListener, OperationEvents, type OperationOptions } from '../events.js'
import { freePort } from '../local-server/free-port.js'
import { LocalServer } from '../local-server/local-server.js'
import { chownTree, currentUser, type OsUser, serverUserForRoot, unreachableBy } from '../local-server/os-user.js'
import { findPgBinaries } from '../local-server/pg-binaries.js'
import { bootstrapSuperuserNames, mappedFileNumber, PG_AUTHID_OID } from '../pg/bootstrap-superuser.js'
import { formatLsn, parseLsn } from '../pg/lsn.js'
import type { RecoveryTarget } from '../pg/recovery-conf.js'
import {
  type BackupRecord,
  type DrillCheckRecord,
  type DrillRecord,
  DRILL_FORMAT_VERSION,
  findBackup,
  newDrillId,
  type Repository,
  resolveCluster,
  writeDrillRecord,
} from '../repo/index.js'
import type { UserCheck } from './check-file.js'
import { runServerChecks } from './server-checks.js'

/** What a drill asks of the restore it is given (a subset of restoreBackup's options). */
export interface DrillRestoreRequest {
  repo: Repository
  pgdata: string
  backup?: string
  cluster?: string
  tablespaceRoot: string
  recovery: {
    mode: 'recovery'
    restoreCommand: string
    target?: RecoveryTarget
    /** With a target; without one, the copy promotes at the end of the archived WAL on its own. */
    targetAction?: 'promote'
    targetTimeline?: 'latest' | 'current' | number
    targetExclusive?: boolean
  }
  jobs?: number
  workers?: number
  signal?: AbortSignal
  onBackupChosen?: (backup: BackupRecord) => void | Promise<void>
  /** The restore's own events; the drill reports them as its 'restore' phase. */
  onEvent?: EventListener
}

/** What a drill needs from the restore's result. */
export interface DrillRestoreOutcome {
  backupId: string
  backupType: 'full' | 'incremental'
  systemId: string
  files: number
  sizeBytes: number
  bytesWritten: number
  walSegments: readonly string[]
  durationMs: number
}

/** The restore a drill runs: `restoreBackup` (src/index.ts and the CLI pass it in). */
export type DrillRestoreFunction = (o: DrillRestoreRequest) => Promise<DrillRestoreOutcome>

export interface DrillOptions extends OperationOptions {
  repo: Repository
  restore: DrillRestoreFunction
  /** restore_command of the copy (walGetRestoreCommand); it runs as the copy's user, in `serverEnv`. */
  restoreCommand: string
  /** A backup id or 'latest' (default; with a target, the newest backup before it). */
  backup?: string
  /** The cluster, by name or system identifier; needed when the repository holds more than one. */
  cluster?: string
  /** Where recovery stops; default: the end of the archived WAL. */
  target?: RecoveryTarget
  targetTimeline?: 'latest' | 'current' | number
  targetExclusive?: boolean
  /** The scratch directory is made in here (default: the system's temporary directory). */
  scratchParent?: string
  /** Server binaries: only this directory (`--pg-bin`). */
  pgBin?: string
  /** PATH to search for server binaries (the CLI passes its environment's). */
  searchPath?: string
  /** When this process is root: the user the copy runs as (default postgres). */
  owner?: string
  /** The copy's whole environment: restore_command runs in it (PGKEEP_PASSPHRASE, AWS_* variables). */
  serverEnv?: Readonly<Record<string, string>>
  /** bt_index_check on every B-tree index (amcheck). */
  amcheck?: boolean
  /** The user's checks (parseCheckFile). */
  checks?: readonly UserCheck[]
  /** Leave the scratch directory (the stopped copy) in place. */
  keep?: boolean
  /** Store a drill record in the repository (default true). */
  record?: boolean
  /** Restore parallelism (restoreBackup's `jobs` and `workers`). */
  jobs?: number
  workers?: number
}

export interface DrillResult {
  drillId: string
  passed: boolean
  /** `<check>: <what went wrong>` for the first failed check; null when passed. */
  failure: string | null
  systemId: string
  clusterName: string
  backupId: string | null
  backupType: 'full' | 'incremental' | null
  target: string
  /** The binaries the copy ran on. */
  server: { version: string; bin: string; source: string; user: string; port: number | null } | null
  startedAt: string
  finishedAt: string
  timings: DrillRecord['timings']
  recoveredTo: DrillRecord['recoveredTo']
  checks: DrillCheckRecord[]
  restore: { files: number; sizeBytes: number; bytesWritten: number; walSegments: number } | null
  scratchDir: string
  kept: boolean
  /** False when the repository could not be written (read-only access): a warning said so. */
  recorded: boolean
}

/** The order of the checks in every report. */
export const DRILL_CHECKS = ['restore', 'start', 'recovery', 'connections', 'catalog', 'tables', 'amcheck', 'user-checks', 'checksums'] as const

const POLL_MS = 200

/**
 * Runs a restore drill. Resolves with the report whether the drill passed or failed (`passed`, `failure`); a
 * damaged backup, a copy that does not start or recover, or a failed check is a failed drill, recorded as such.
 * @throws UsageError before anything is written: options, no server binaries of the backup's major, a scratch
 *   location the server's user cannot reach or that overlaps a running server (from the restore)
 * @throws the restore's other errors (storage, lock, passphrase) and AbortedError: no drill record then
 */
export async function runDrill(o: DrillOptions): Promise<DrillResult> {
  const startedAt = new Date()
  const events = new OperationEvents('drill', o.onEvent)
  const signal = o.signal
  const repo = o.repo

  // What can be found out before anything is written: the backup a restore will most likely choose (to find
  // binaries of its major now rather than after an hour of restoring), the user, the scratch location.
  const predicted =
    o.backup !== undefined && o.backup !== 'latest'
      ? await findBackup(repo, o.backup, undefined, { signal })
      : await findBackup(repo, 'latest', (await resolveCluster(repo, o.cluster, { signal })).systemId, { signal })
  const find = (major: number) => findPgBinaries({ major, pgBin: o.pgBin, searchPath: o.searchPath })
  let binaries = await find(predicted.server.major)
  const owner = await runAs(o.owner)
  const parent = resolve(o.scratchParent ?? tmpdir())
  if (!(await stat(parent).catch(() => undefined))?.isDirectory()) {
    throw new UsageError(`scratch location '${parent}' is not a directory`, { hint: 'give an existing directory with --scratch DIR' })
  }
  const blocked = await unreachableBy(parent, owner)
  if (blocked) {
    throw new UsageError(`user '${owner.name}', who runs the copy, cannot reach '${parent}': ${blocked}`, {
      hint: 'give a scratch location that user can reach with --scratch DIR',
    })
  }
  const drillId = newDrillId(startedAt)
  const scratch = join(parent, `pgkeep-drill-${drillId}`)
  if (await lstat(scratch).catch(() => undefined)) throw new UsageError(`'${scratch}' exists already`, { hint: 'run the drill again' })
  const pgdata = join(scratch, 'data')

  let chosen: BackupRecord | undefined
  const checks: DrillCheckRecord[] = []
  const timings: DrillRecord['timings'] = { restoreMs: null, recoveryMs: null, checksMs: null, rtoMs: null }
  const recoveredTo: DrillRecord['recoveredTo'] = { lsn: null, lastCommitAt: null }
  let restoreInfo: DrillResult['restore'] = null
  let server: LocalServer | undefined
  let port: number | null = null
  let socketDir: string | undefined
  let mayHaveWritten = false
  const fail = (name: string, detail: string, durationMs: number | null = null) => {
    checks.push({ name, status: 'failed', detail, durationMs })
  }

  try {
    // 1. Restore.
    events.phase('restore', { bytesDone: 0, bytesTotal: null })
    const restoreStarted = Date.now()
    try {
      const r = await o.restore({
        repo,
        pgdata,
        backup: o.backup,
        cluster: o.cluster,
        tablespaceRoot: join(scratch, 'tablespaces'),
        recovery: {
          mode: 'recovery',
          restoreCommand: o.restoreCommand,
          target: o.target,
          targetAction: o.target ? 'promote' : undefined,
          targetTimeline: o.targetTimeline,
          targetExclusive: o.targetExclusive,
        },
        jobs: o.jobs,
        workers: o.workers,
        signal,
        onBackupChosen: async (b) => {
          chosen = b
          if (b.server.major !== binaries.major) binaries = await find(b.server.major)
          mayHaveWritten = true
        },
        onEvent: (e) =>
          e.type === 'progress'
            ? events.progress({
                bytesDone: e.bytesDone,
                bytesTotal: e.bytesTotal,
                itemsDone: e.itemsDone,
                itemsTotal: e.itemsTotal,
                detail: { phase: e.phase },
              })
            : events.say(e.level, e.text, e.code, e.data),
      })
      timings.restoreMs = Date.now() - restoreStarted
      restoreInfo = { files: r.files, sizeBytes: r.sizeBytes, bytesWritten: r.bytesWritten, walSegments: r.walSegments.length }
      checks.push({
        name: 'restore',
        status: 'passed',
        detail: `backup ${r.backupId} (${r.backupType}): ${r.files} files, ${formatMiB(r.bytesWritten)} written, ${r.walSegments.length} WAL segments`,
        durationMs: timings.restoreMs,
      })
    } catch (err) {
      // Damaged or missing data is what a drill is there to find: a failed drill. Anything else (options, a
      // location refused, storage, passphrase, an abort) is an error of this run and is thrown.
      if (!mayHaveWritten || !isPgkeepError(err) || (err.code !== Codes.INTEGRITY && err.code !== Codes.FORMAT)) throw err
      fail('restore', err.message, Date.now() - restoreStarted)
    }
    // The scratch directory is the restore's work: a real directory that did not exist before.
    if (mayHaveWritten && !(await lstat(scratch).catch(() => undefined))?.isDirectory()) {
      throw new UsageError(`'${scratch}' is not the directory the restore made`, { hint: 'run the drill again' })
    }

    if (restoreInfo) {
      // 2. Start the copy on a socket of its own, with settings that keep it to itself.
      events.phase('start')
      socketDir = await socketDirectory(scratch, owner)
      const hba = join(scratch, 'pg_hba.conf')
      const ident = join(scratch, 'pg_ident.conf')
      // Only this socket, in a directory of the server user's with mode 0700: trust is safe there.
      await writeFile(hba, 'local all all trust\n', { mode: 0o600 })
      await writeFile(ident, '', { mode: 0o600 })
      // A cluster configured outside its data directory (Debian's /etc/postgresql) was backed up without one.
      if (!existsSync(join(pgdata, 'postgresql.conf'))) await writeFile(join(pgdata, 'postgresql.conf'), '', { mode: 0o600 })
      const logFile = join(scratch, 'server.log')
      await writeFile(logFile, '', { mode: 0o600 })
      await chmod(scratch, 0o700)
      if (owner.drop) await chownTree([scratch, ...(socketDir.startsWith(scratch) ? [] : [socketDir])], owner)
      const superusers = await superuserCandidates(pgdata, owner.name)
      port = await freePort()
      const recoveryStarted = Date.now()
      server = LocalServer.start({
        binaries,
        pgdata,
        socketDir,
        port,
        logFile,
        user: owner.drop ? owner : undefined,
        env: o.serverEnv ?? {},
        settings: {
          listen_addresses: '',
          hba_file: hba,
          ident_file: ident,
          ssl: false,
          // A restored copy must not archive into the source's repository, nor wait for the source's standbys.
          archive_mode: false,
          synchronous_standby_names: '',
          hot_standby: true,
          cluster_name: 'pgkeep-drill',
        },
      })
      const started = await waitForSocket(server, signal)
      if (!started) {
        fail('start', `PostgreSQL ${binaries.version} did not start: ${await logSummary(server)}`)
      } else {
        checks.push({
          name: 'start',
          status: 'passed',
          detail: `PostgreSQL ${binaries.version} (${binaries.bin}, ${binaries.source}) as user ${owner.name}, port ${port}`,
          durationMs: null,
        })
        // 3. Recovery, to the target; the copy promotes there.
        events.phase('recovery')
        const recovered = await waitForPromotion(server, superusers, signal, (lsn) =>
          events.progress({ bytesDone: 0, bytesTotal: null, detail: { replayedLsn: lsn } }),
        )
        if ('error' in recovered) {
          fail('recovery', recovered.error, Date.now() - recoveryStarted)
        } else {
          timings.recoveryMs = Date.now() - recoveryStarted
          timings.rtoMs = (timings.restoreMs ?? 0) + timings.recoveryMs
          recoveredTo.lsn = recovered.lsn
          recoveredTo.lastCommitAt = recovered.lastCommitAt
          const stop = (await server.logTail(200)).find((l) => /recovery stopping|redo done at/.test(l))
          checks.push({
            name: 'recovery',
            status: 'passed',
            detail: `promoted after replaying WAL to ${recovered.lsn ?? 'the backup end'}${recovered.lastCommitAt ? `, newest commit ${recovered.lastCommitAt}` : ''}${stop ? ` (${stopLine(stop)})` : ''}`,
            durationMs: timings.recoveryMs,
          })

          // 4. The checks.
          events.phase('checks')
          const checksStarted = Date.now()
          const user = recovered.user
          const live = server
          const connect = async (database: string): Promise<pg.Client> => {
            const r = await live.connect(database, user)
            if (!r.ok) throw new Error(r.message)
            return r.client
          }
          checks.push(
            ...(await runServerChecks({
              connect,
              amcheck: o.amcheck === true,
              userChecks: o.checks ?? [],
              major: binaries.major,
              signal,
              onCheck: (name) => events.progress({ bytesDone: 0, bytesTotal: null, detail: { check: name } }, true),
            })),
          )
          timings.checksMs = Date.now() - checksStarted
        }
      }
    }

    if (server) {
      events.phase('stop')
      const exit = await server.stop()
      if (!checks.some((c) => c.status === 'failed') && exit.code !== 0) {
        fail('stop', `the copy did not shut down cleanly (exit ${exit.code ?? exit.signal}): ${await logSummary(server)}`)
      }
    }
    // Checks not reached are skipped, so every report lists them all.
    for (const name of DRILL_CHECKS) {
      if (!checks.some((c) => c.name === name)) checks.push({ name, status: 'skipped', detail: 'not reached: an earlier step failed', durationMs: null })
    }
    checks.sort((a, b) => order(a.name) - order(b.name))
    const failed = checks.find((c) => c.status === 'failed')
    const finishedAt = new Date()
    const result: DrillResult = {
      drillId,
      passed: failed === undefined,
      failure: failed ? `${failed.name}: ${failed.detail}` : null,
      systemId: chosen?.systemId ?? predicted.systemId,
      clusterName: chosen?.clusterName ?? predicted.clusterName,
      backupId: chosen?.id ?? null,
      backupType: chosen?.type ?? null,
      target: describeTarget(o.target),
      server: server ? { version: binaries.version, bin: binaries.bin, source: binaries.source, user: owner.name, port } : null,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      timings,
      recoveredTo,
      checks,
      restore: restoreInfo,
      scratchDir: scratch,
      kept: o.keep === true,
      recorded: false,
    }
    if (o.record !== false) result.recorded = await record(repo, result, events, signal)
    return result
  } finally {
    if (server && !server.exit) await server.stop().catch(() => {})
    if (!o.keep) {
      // The wal get prefetch process the copy's restore_command started leaves when its spool is gone.
      if (mayHaveWritten) await rm(scratch, { recursive: true, force: true, maxRetries: 5 }).catch(() => {})
      if (socketDir && !socketDir.startsWith(scratch)) await rm(socketDir, { recursive: true, force: true }).catch(() => {})
    }
  }
}

/** The user the copy runs as: `owner` (default postgres) when this process is root, else this process's user. */
async function runAs(owner: string | undefined): Promise<OsUser & { drop: boolean }> {
  const forRoot = await serverUserForRoot(owner ?? 'postgres')
  if (forRoot) return { ...forRoot, drop: true }
  const me = await currentUser()
  if (owner !== undefined && owner !== me.name) {
    throw new UsageError(`only root can run the copy as user '${owner}'`, { hint: `run the drill as '${owner}' itself, or leave out --owner` })
  }
  return { ...me, drop: false }
}

/**
 * The socket directory: in the scratch directory, unless that path is too long for a Unix socket (108 bytes with
 * the socket's own name), then a private directory in the system's temporary directory.
 */
async function socketDirectory(scratch: string, owner: OsUser & { drop: boolean }): Promise<string> {
  const inScratch = join(scratch, 'socket')
  if (Buffer.byteLength(join(inScratch, '.s.PGSQL.65535')) < 100) {
    await mkdir(inScratch, { mode: 0o700 })
    return inScratch
  }
  const dir = await mkdtemp(join(tmpdir(), 'pgkeep-sock-'))
  if (owner.drop) await chownTree([dir], owner)
  return dir
}

/** The bootstrap superuser's names from the restored pg_authid, then `postgres` and the server user's name. */
async function superuserCandidates(pgdata: string, osUser: string): Promise<string[]> {
  const names: string[] = []
  try {
    const map = await readFile(join(pgdata, 'global', 'pg_filenode.map'))
    const file = mappedFileNumber(map, PG_AUTHID_OID) ?? PG_AUTHID_OID
    names.push(...bootstrapSuperuserNames(await readFile(join(pgdata, 'global', String(file)))))
  } catch {
    // Not readable: the usual names below.
  }
  for (const n of ['postgres', osUser]) if (!names.includes(n)) names.push(n)
  return names
}

/** Waits until the postmaster listens on its socket (true), or exits first (false). */
async function waitForSocket(server: LocalServer, signal: AbortSignal | undefined): Promise<boolean> {
  const socket = join(server.socketDir, `.s.PGSQL.${server.port}`)
  for (;;) {
    signal?.throwIfAborted()
    if (server.exit) return false
    if (existsSync(socket)) return true
    await sleep(50)
  }
}

/**
 * Connects as a superuser once the copy accepts connections (after reaching consistency, or after promotion when
 * hot_standby is off) and waits until it has left recovery. An exit of the server meanwhile is a failed recovery.
 */
async function waitForPromotion(
  server: LocalServer,
  superusers: readonly string[],
  signal: AbortSignal | undefined,
  onReplay: (lsn: string) => void,
): Promise<{ user: string; lsn: string | null; lastCommitAt: string | null } | { error: string }> {
  let client: pg.Client | undefined
  let user = ''
  try {
    for (;;) {
      signal?.throwIfAborted()
      if (server.exit) return { error: `the server stopped during recovery: ${await logSummary(server)}` }
      if (!client) {
        // Connection attempts before the server accepts them would fill its log with FATAL lines: ask it first.
        const status = await server.status()
        if (status !== 'standby' && status !== 'ready') {
          await sleep(POLL_MS)
          continue
        }
        const attempt = await connectAsSuperuser(server, superusers)
        if ('error' in attempt) return attempt
        if (!attempt.client) {
          await sleep(POLL_MS)
          continue
        }
        client = attempt.client
        user = attempt.user
      }
      let row: { r: boolean; lsn: string | null; at: Date | null }
      try {
        row = (
          await client.query<{ r: boolean; lsn: string | null; at: Date | null }>(
            'select pg_is_in_recovery() as r, pg_last_wal_replay_lsn()::text as lsn, pg_last_xact_replay_timestamp() as at',
          )
        ).rows[0]!
      } catch {
        // The server ended the connection (a FATAL in recovery, a restart): look again.
        await client.end().catch(() => {})
        client = undefined
        await sleep(POLL_MS)
        continue
      }
      if (!row.r) {
        const lsn = row.lsn === null ? null : formatLsn(parseLsn(row.lsn))
        return { user, lsn, lastCommitAt: row.at ? row.at.toISOString() : null }
      }
      if (row.lsn) onReplay(row.lsn)
      await sleep(POLL_MS)
    }
  } finally {
    await client?.end().catch(() => {})
  }
}

/** Tries the candidate superusers on the first database that exists; `client` undefined: not ready yet. */
async function connectAsSuperuser(server: LocalServer, superusers: readonly string[]): Promise<{ client?: pg.Client; user: string } | { error: string }> {
  const refused: string[] = []
  for (const user of superusers) {
    for (const database of ['postgres', 'template1']) {
      const r = await server.connect(database, user)
      if (r.ok) {
        const { rows } = await r.client.query<{ s: boolean }>('select rolsuper as s from pg_roles where rolname = current_user')
        if (rows[0]?.s) return { client: r.client, user }
        await r.client.end().catch(() => {})
        refused.push(`${user}: not a superuser`)
        break
      }
      if (r.retry) return { user }
      // 3D000: no such database, try the next; 28000: no such role, try the next user.
      if (r.code === '3D000') continue
      refused.push(`${user}: ${r.message}`)
      break
    }
  }
  return { error: `cannot connect to the copy as a superuser (${refused.join('; ')})` }
}

/** Stores the drill record; false (with a warning) when the repository cannot be written. */
async function record(repo: Repository, r: DrillResult, events: OperationEvents, signal: AbortSignal | undefined): Promise<boolean> {
  const rec: DrillRecord = {
    formatVersion: DRILL_FORMAT_VERSION,
    id: r.drillId,
    systemId: r.systemId,
    clusterName: r.clusterName,
    backupId: r.backupId,
    backupType: r.backupType,
    serverVersion: r.server?.version ?? null,
    target: r.target,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
    passed: r.passed,
    failure: r.failure,
    timings: r.timings,
    recoveredTo: r.recoveredTo,
    checks: r.checks,
  }
  try {
    await writeDrillRecord(repo, rec, { signal })
    return true
  } catch (err) {
    if (!(err instanceof AccessDeniedError)) throw err
    events.say('warning', `no write access to repository '${repo.location}': the drill is not recorded there`)
    return false
  }
}

/** The recovery target, for a person. */
export function describeTarget(t: RecoveryTarget | undefined): string {
  if (!t) return 'the end of the archived WAL'
  switch (t.type) {
    case 'immediate':
      return 'consistency (immediate)'
    case 'time':
      return `time ${t.time instanceof Date ? t.time.toISOString() : t.time}`
    case 'lsn':
      return `LSN ${typeof t.lsn === 'bigint' ? formatLsn(t.lsn) : t.lsn}`
    case 'xid':
      return `transaction ${String(t.xid)}`
    case 'name':
      return `restore point '${t.name}'`
  }
}

async function logSummary(server: LocalServer): Promise<string> {
  const lines = await server.logTail(40)
  const telling = lines.filter((l) => /FATAL|PANIC|ERROR|could not|invalid|recovery ended/.test(l))
  const pick = (telling.length ? telling : lines).slice(-4).map(stopLine)
  const exit = server.exit ? ` (exit ${server.exit.code ?? server.exit.signal})` : ''
  return `${pick.join(' | ') || 'its log is empty'}${exit}; the log is ${server.logFile}`
}

/** A log line without its timestamp and pid prefix. */
function stopLine(line: string): string {
  return line.replace(/^.*?\b(LOG|FATAL|PANIC|ERROR|WARNING|DETAIL|HINT):\s+/, '$1: ').trim()
}

function order(name: string): number {
  const i = (DRILL_CHECKS as readonly string[]).indexOf(name)
  return i < 0 ? DRILL_CHECKS.length : i
}

function formatMiB(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(1)} MB`
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
