// `pgkeep restore`: a backup back into a data directory that starts, to any point in time the repository's WAL
// reaches, with tablespaces where the user wants them; or an existing copy brought up to date with --delta.

import { isAbsolute, resolve } from 'node:path'
import { UsageError } from '../../errors.js'
import { parseRecoveryTargetTime, type RecoveryTarget, type RecoveryTargetAction } from '../../pg/recovery-conf.js'
import type { RecoveryOptions } from '../../restore/recovery-config.js'
import { restoreBackup, type RestoreResult } from '../../restore/restore.js'
import { walGetRestoreCommand } from '../../restore/restore-command.js'
import { parseTablespaceMapping } from '../../restore/tablespace-mapping.js'
import type { Command } from '../command.js'
import { formatBytes, formatDuration } from '../format.js'
import { parseCommandArgs, parseWorkers } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { pgkeepInvocation } from '../installation.js'
import { eventView } from '../progress.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'
import { unreachableBy } from '../../local-server/os-user.js'
import { handOverRestored, probeRestoreCommand, resolveOwner, startCommandLine } from '../restore-start.js'

export const restoreCommand: Command = {
  usage: `usage: pgkeep restore --repo URL --pgdata DIR [options]

Writes a backup into DIR (which must be missing or empty, unless --delta), with the WAL it needs in pg_wal, a
backup_manifest for pg_verifybackup, and recovery settings in postgresql.auto.conf: recovery.signal and a
restore_command that runs 'pgkeep wal get' on this repository. Without a target the server replays all the WAL
the repository holds. Files are written as the current user (as root, --owner gives them to the server's user).
At the end it prints a command line that starts the copy on a free port with archiving off.
An interrupted or failed restore leaves DIR without global/pg_control, so no server starts on it; run the same
command again with --delta to finish it.

options:
  -D, --pgdata DIR                  the data directory to create (or to update with --delta)
  --backup ID|latest                the backup to restore (default: latest, or with a target the newest one
                                    that ends before it)
  --cluster NAME|SYSTEMID           the cluster to restore; needed when the repository holds more than one
  --tablespace-mapping OLD=NEW      restore the tablespace at OLD (its original location, or its oid) into NEW;
                                    repeatable; unmapped tablespaces go back to their original location
  --target-time TIME                stop at a time, with its zone as UTC or an offset ('2026-11-21 05:27:37+00';
                                    written for the server in UTC)
  --target-lsn LSN                  stop at a WAL location ('0/3000028')
  --target-xid XID                  stop at the commit of a transaction
  --target-name NAME                stop at a restore point made by pg_create_restore_point()
  --target-immediate                stop as soon as the backup is consistent
  --target-action pause|promote|shutdown   what the server does at the target (server default: pause)
  --target-timeline current|latest|N       the timeline to follow (server default: latest)
  --target-exclusive                stop just before the target instead of just after it
  --standby                         write standby.signal instead of recovery.signal
  --primary-conninfo CONNINFO       with --standby: the primary to stream from
  --owner USER                      when run as root: give the restored files to USER (the user the server
                                    runs as, e.g. postgres) and check that USER can run restore_command; as USER
                                    itself it changes nothing (so the same line works for root and for USER)
  --delta                           update an existing copy of the same cluster in place, writing only the
                                    files and pages that differ and removing what the backup does not have
  --jobs N                          files written at once (default 4)
  --workers N                       threads decoding blobs (default: the cores beyond two, at most --jobs; 0: none)
  --no-sync                         do not fsync what was written (faster; the copy may be lost on a crash)
  --progress                        show progress even when stderr is not a terminal
  --json                            print the result as one JSON object

The restored server runs 'pgkeep wal get' itself: it needs the passphrase of an encrypted repository in its own
environment (PGKEEP_PASSPHRASE or PGKEEP_PASSPHRASE_FILE; --passphrase-file is written into restore_command as
a path), and AWS_* variables for an s3:// repository. The passphrase itself is never written into the directory.

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('restore', {
      args,
      options: {
        ...repoOptions,
        pgdata: { type: 'string', short: 'D' },
        backup: { type: 'string' },
        cluster: { type: 'string' },
        'tablespace-mapping': { type: 'string', multiple: true },
        ...recoveryTargetOptions,
        'target-action': { type: 'string' },
        standby: { type: 'boolean' },
        'primary-conninfo': { type: 'string' },
        owner: { type: 'string' },
        delta: { type: 'boolean' },
        jobs: { type: 'string' },
        workers: { type: 'string' },
        'no-sync': { type: 'boolean' },
        progress: { type: 'boolean' },
        json: { type: 'boolean' },
      },
    })
    if (!values.pgdata) throw new UsageError('pgkeep restore needs --pgdata', { hint: 'give the data directory to restore into: --pgdata DIR' })
    const pgdata = resolve(values.pgdata)
    const jobs = values.jobs === undefined ? 4 : Number(values.jobs)
    if (!Number.isInteger(jobs) || jobs < 1 || jobs > 128) throw new UsageError(`invalid --jobs '${values.jobs}'`, { hint: 'give a number from 1 to 128' })
    const recovery = recoveryFrom(values)
    const tablespaceMapping = (values['tablespace-mapping'] ?? []).map(parseTablespaceMapping)

    const owner = await resolveOwner(values.owner)
    const opened = await openRepoForCommand(values, ctx, 'restore')
    recovery.restoreCommand = walGetRestoreCommand({
      ...restoreCommandPgkeep(),
      repoUrl: absoluteRepoUrl(opened.url),
      passphraseFile: opened.passphraseFile,
    })
    const messages: string[] = []
    const progress = eventView(ctx.stderr, {
      progress: values.progress === true,
      // Which backup is said at once, before anything is written; other info (what was disabled) goes into the
      // summary, and with --json into nothing.
      onInfo: (m) => {
        if (m.code === 'backup-chosen') {
          progress.done()
          ctx.stderr.write(`pgkeep: ${m.text}\n`)
        } else if (!values.json) messages.push(m.text)
      },
      describe: (p) => (values.delta && typeof p.detail?.bytesWritten === 'number' ? `${formatBytes(p.detail.bytesWritten)} written` : ''),
    })
    let result: RestoreResult
    try {
      result = await restoreBackup({
        repo: opened.repo,
        pgdata,
        backup: values.backup,
        cluster: values.cluster,
        tablespaceMapping,
        recovery,
        delta: values.delta === true,
        jobs,
        workers: parseWorkers(values.workers),
        sync: values['no-sync'] !== true,
        signal: ctx.signal,
        onEvent: progress.onEvent,
      })
    } catch (err) {
      // The engine has said whether the directory was left incomplete (a warning above the error).
      progress.done()
      throw err
    } finally {
      await opened.repo.close().catch(() => {})
      await opened.storage.close().catch(() => {})
    }
    progress.done()
    const hints: string[] = []
    if (owner) {
      await handOverRestored(
        result.pgdata,
        result.tablespaces.map((t) => t.location),
        owner,
      )
      for (const dir of [result.pgdata, ...result.tablespaces.map((t) => t.location)]) {
        const why = await unreachableBy(dir, owner)
        if (why) hints.push(`${owner.name} cannot reach '${dir}', so the server will not start: ${why}`)
      }
      const first = result.walSegments[0]
      const failed = recovery.restoreCommand && first ? await probeRestoreCommand(recovery.restoreCommand, first, result.pgdata, owner, ctx.env) : undefined
      if (failed) {
        hints.push(
          `restore_command fails when run as ${owner.name}, as the server will run it: ${failed}; ${owner.name} must be able to run this node and pgkeep, ` +
            `read the repository (pgkeep init --group ${owner.name} makes a new one readable) and get its passphrase (see docs/restore.md)`,
        )
      }
    } else hints.push(...ownershipHints(result))
    if (opened.repo.encrypted && opened.passphraseFile === undefined) {
      hints.push('the repository is encrypted: the server needs PGKEEP_PASSPHRASE or PGKEEP_PASSPHRASE_FILE in its environment to run restore_command')
    }
    if (/^s3:\/\//.test(opened.url)) hints.push('restore_command reads an s3:// repository: the server needs the AWS_* variables in its environment')
    const startCommand = await startCommandLine({
      pgdata: result.pgdata,
      major: Number.parseInt(result.serverVersion, 10),
      owner: owner?.name ?? 'postgres',
      searchPath: ctx.env.PATH,
    })
    if (values.json) {
      ctx.stdout.write(JSON.stringify({ ...result, restoreCommand: recovery.restoreCommand, owner: owner?.name ?? null, startCommand, hints }, null, 2) + '\n')
      return 0
    }
    ctx.stdout.write(formatResult(result, recovery, messages, hints))
    ctx.stdout.write(`start the copy: ${startCommand}\n`)
    return 0
  },
}

type Values = Record<string, string | boolean | string[] | undefined>

/** The recovery target options restore and drill share (parseArgs). */
export const recoveryTargetOptions = {
  'target-time': { type: 'string' },
  'target-lsn': { type: 'string' },
  'target-xid': { type: 'string' },
  'target-name': { type: 'string' },
  'target-immediate': { type: 'boolean' },
  'target-timeline': { type: 'string' },
  'target-exclusive': { type: 'boolean' },
} as const

/** The recovery options from the command line (restore, drill); exactly one target at most. */
export function recoveryFrom(v: Values): RecoveryOptions {
  const targets: RecoveryTarget[] = []
  // Read (and refused when it has no zone or is no real date) before the repository is opened; the UTC form is
  // what pgkeep compares and what the server gets.
  if (v['target-time'] !== undefined) targets.push({ type: 'time', time: parseRecoveryTargetTime(v['target-time'] as string).text })
  if (v['target-lsn'] !== undefined) targets.push({ type: 'lsn', lsn: v['target-lsn'] as string })
  if (v['target-xid'] !== undefined) targets.push({ type: 'xid', xid: v['target-xid'] as string })
  if (v['target-name'] !== undefined) targets.push({ type: 'name', name: v['target-name'] as string })
  if (v['target-immediate']) targets.push({ type: 'immediate' })
  if (targets.length > 1)
    throw new UsageError('more than one recovery target given', {
      hint: 'give at most one of --target-time, --target-lsn, --target-xid, --target-name, --target-immediate',
    })
  const action = v['target-action'] as string | undefined
  if (action !== undefined && !['pause', 'promote', 'shutdown'].includes(action)) {
    throw new UsageError(`invalid --target-action '${action}'`, { hint: 'use pause, promote or shutdown' })
  }
  let timeline: RecoveryOptions['targetTimeline']
  const tl = v['target-timeline'] as string | undefined
  if (tl !== undefined) {
    if (tl === 'latest' || tl === 'current') timeline = tl
    else if (/^[0-9]+$/.test(tl) && Number(tl) >= 1) timeline = Number(tl)
    else throw new UsageError(`invalid --target-timeline '${tl}'`, { hint: 'use current, latest or a timeline number' })
  }
  if (v['primary-conninfo'] !== undefined && !v.standby) throw new UsageError('--primary-conninfo needs --standby')
  return {
    mode: v.standby ? 'standby' : 'recovery',
    target: targets[0],
    targetAction: action as RecoveryTargetAction | undefined,
    targetTimeline: timeline,
    targetExclusive: v['target-exclusive'] === true ? true : undefined,
    primaryConninfo: v['primary-conninfo'] as string | undefined,
  }
}

/**
 * How restore_command runs this installation's pgkeep: through its launcher, whose fast path serves prefetched
 * segments without starting node (installation.ts).
 */
export function restoreCommandPgkeep(): { pgkeep: string[]; env?: Record<string, string> } {
  const { command, env } = pgkeepInvocation()
  return { pgkeep: command, env }
}

/** The repository as the restored server's restore_command must name it: absolute. */
export function absoluteRepoUrl(url: string): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return url
  return isAbsolute(url) ? url : resolve(url)
}

function ownershipHints(r: RestoreResult): string[] {
  if (process.getuid?.() !== 0) return []
  const dirs = [r.pgdata, ...r.tablespaces.map((t) => t.location)].map((d) => `'${d}'`).join(' ')
  return [
    `the files belong to root, and PostgreSQL refuses to run as root: before starting the server, run  chown -R postgres:postgres ${dirs}  (or the user that will run it), or restore with --owner postgres`,
  ]
}

function formatResult(r: RestoreResult, recovery: RecoveryOptions, messages: string[], hints: string[]): string {
  const lines: string[] = [...messages]
  lines.push(
    `restored backup ${r.backupId} (${r.backupType}, PostgreSQL ${r.serverVersion}, ${r.startLsn}..${r.endLsn}) into '${r.pgdata}' in ${formatDuration(r.durationMs)}`,
  )
  if (r.delta) {
    lines.push(
      `  delta: ${r.filesWritten} files written, ${r.filesUnchanged} already right, ${r.removed} entries removed; ${formatBytes(r.bytesWritten)} written of ${formatBytes(r.sizeBytes)}`,
    )
  } else {
    lines.push(`  ${r.files} files, ${formatBytes(r.bytesWritten)} written (${formatBytes(r.sizeBytes)} with holes)`)
  }
  for (const t of r.tablespaces) lines.push(`  tablespace ${t.oid} in '${t.location}'`)
  lines.push(
    `  pg_wal: ${r.walSegments.length} segment${r.walSegments.length === 1 ? '' : 's'} (${r.walSegments[0] ?? ''}${r.walSegments.length > 1 ? ` .. ${r.walSegments[r.walSegments.length - 1]}` : ''}), enough to reach consistency`,
  )
  const t = recovery.target
  const target = !t
    ? 'to the end of the archived WAL'
    : t.type === 'immediate'
      ? 'until the backup is consistent'
      : `to ${t.type} ${String(t.type === 'time' ? t.time : t.type === 'lsn' ? t.lsn : t.type === 'xid' ? t.xid : t.name)}`
  lines.push(
    `  ${r.signalFile}: the server ${r.signalFile === 'standby.signal' ? 'starts as a standby' : `recovers ${target}`}${recovery.targetAction ? `, then ${recovery.targetAction}s` : ''}`,
  )
  if (r.disabledSettings.length > 0) lines.push(`  postgresql.auto.conf: the backup's ${r.disabledSettings.join(', ')} commented out`)
  for (const h of hints) lines.push(`hint: ${h}`)
  return lines.join('\n') + '\n'
}
