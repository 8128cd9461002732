// `pgkeep check`: the first command a user runs, and the one cron, Nagios and Kubernetes probes run. Against a
// server it prints what the server is and whether pgkeep can back it up; with --max-*-age it checks that a
// repository's backups, WAL and drills are recent enough, one line per violation. Both at once when asked.

import { checkFreshness, type FreshnessLimits, type FreshnessReport } from '../../check/check-freshness.js'
import { checkServer, type CheckReport } from '../../check/check-server.js'
import { formatLockAge as formatAge } from '../../repo/index.js'
import type { CliContext, Command } from '../command.js'
import { cliConfig } from '../config-file.js'
import { CONNECTION_USAGE, connectionOptions, serverFrom } from '../connection-args.js'
import { parseCommandArgs, parseDuration } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'

export const checkCommand: Command = {
  usage: `usage: pgkeep check -d CONNINFO [--json]
       pgkeep check --repo URL --max-backup-age AGE [--max-wal-age AGE] [--max-drill-age AGE] [--cluster C] [--json]

Against a server (connection options): connects over the replication protocol and reports the server version,
cluster (system identifier), timeline, whether it is a standby, wal_level, WAL senders, replication rights, data
checksums, full_page_writes, summarize_wal, archive_mode and tablespaces. Exits 0 when the server is ready for
pgkeep, 1 when it is not (each problem is printed with a hint).

Freshness of a repository (--max-*-age, for cron, Nagios and Kubernetes probes): exits 0 with one line 'OK: …'
when every cluster (or the one --cluster names) has a backup that finished at most --max-backup-age ago, WAL
stored at most --max-wal-age ago and a restore drill that passed at most --max-drill-age ago (and a newest drill
that passed); else exits 1 with one line per violation, 'CODE: cluster …: what is late, by how much' (codes
NO_CLUSTER, NO_BACKUP, BACKUP_STALE, NO_WAL, WAL_STALE, NO_DRILL, DRILL_STALE, DRILL_FAILED). Ages are like 90s, 5m,
26h, 8d, 1w, 1h30m. A limit not given as an option comes from the config file's [check] table (unless connection
options are given without any --max-*-age: that checks the server only).

Given both connection options and --max-*-age, it does both and exits 0 only when the server is ready and the
repository fresh. Errors (a repository that cannot be opened, a server that cannot be reached in freshness mode)
keep their own exit statuses (see the README), which a probe takes as "unknown".

  --max-backup-age AGE    the newest backup must have finished at most AGE ago
  --max-wal-age AGE       the newest WAL must have been stored at most AGE ago (with 'wal stream' running, a few
                          minutes; with archive_command, more than archive_timeout)
  --max-drill-age AGE     the newest restore drill that passed must be at most AGE old, and the newest must have passed
  --cluster NAME|SYSTEMID freshness: only this cluster of the repository; server: this cluster of the config file
  --json                  print one JSON object: the server report ({ ready, serverVersion, systemId, standby,
                          problems, … }), the freshness report ({ ok, clusters, violations: [{ code, systemId,
                          message, ageMs, limitMs }] }), or { ok, server, freshness } for both

${REPO_USAGE}

${CONNECTION_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('check', {
      args,
      options: {
        ...connectionOptions,
        ...repoOptions,
        cluster: { type: 'string' },
        'max-backup-age': { type: 'string' },
        'max-wal-age': { type: 'string' },
        'max-drill-age': { type: 'string' },
        json: { type: 'boolean' },
      },
    })
    const connectionGiven = [values.dbname, values.host, values.port, values.username].some((v) => v !== undefined)
    const limits = await limitsFrom(values, ctx, connectionGiven)
    const freshness = Object.values(limits).some((v) => v !== undefined)
    const server = connectionGiven || !freshness ? await serverReport(values, ctx) : undefined
    const fresh = freshness ? await freshnessReport(values, ctx, limits) : undefined
    const ok = (server?.ready ?? true) && (fresh?.ok ?? true)
    if (values.json) {
      const out = server && fresh ? { ok, server, freshness: fresh } : (server ?? fresh)
      ctx.stdout.write(JSON.stringify(out, null, 2) + '\n')
      return ok ? 0 : 1
    }
    if (server) {
      ctx.stdout.write(formatReport(server))
      if (!server.ready)
        for (const p of server.problems.filter((x) => x.severity === 'error')) ctx.stderr.write(`pgkeep: error: ${p.message}\nHINT: ${p.hint}\n`)
    }
    if (fresh) ctx.stdout.write(formatFreshness(fresh))
    return ok ? 0 : 1
  },
}

type Values = { [k: string]: string | boolean | undefined }

/**
 * The limits: each --max-*-age option, else the same key of the config file's [check] table. The file's limits are
 * left out when connection options are given without any --max-*-age (that asks about a server only).
 */
async function limitsFrom(values: Values, ctx: CliContext, connectionGiven: boolean): Promise<FreshnessLimits> {
  const flag = (name: string) => (typeof values[name] === 'string' ? parseDuration(values[name] as string, `--${name}`) : undefined)
  const given: FreshnessLimits = { maxBackupAgeMs: flag('max-backup-age'), maxWalAgeMs: flag('max-wal-age'), maxDrillAgeMs: flag('max-drill-age') }
  if (connectionGiven && Object.values(given).every((v) => v === undefined)) return given
  const file = (await cliConfig(ctx)).file
  const key = (text: string | undefined, name: string) => (text === undefined ? undefined : parseDuration(text, `${name} in config file '${file!.path}'`))
  return {
    maxBackupAgeMs: given.maxBackupAgeMs ?? key(file?.check.maxBackupAge, 'max_backup_age'),
    maxWalAgeMs: given.maxWalAgeMs ?? key(file?.check.maxWalAge, 'max_wal_age'),
    maxDrillAgeMs: given.maxDrillAgeMs ?? key(file?.check.maxDrillAge, 'max_drill_age'),
  }
}

async function serverReport(values: Values, ctx: CliContext): Promise<CheckReport> {
  const { server } = await serverFrom(values as Parameters<typeof serverFrom>[0], ctx, 'check')
  return checkServer({ server, signal: ctx.signal })
}

async function freshnessReport(values: Values, ctx: CliContext, limits: FreshnessLimits): Promise<FreshnessReport> {
  const { repo, storage } = await openRepoForCommand(values as { repo?: string }, ctx, 'check')
  try {
    return await checkFreshness({ repo, cluster: values.cluster as string | undefined, ...limits, signal: ctx.signal })
  } finally {
    await repo.close().catch(() => {})
    await storage.close().catch(() => {})
  }
}

/** `OK: …` in one line, or one `CODE: message` line per violation. */
function formatFreshness(r: FreshnessReport): string {
  if (!r.ok) return r.violations.map((v) => `${v.code}: ${v.message}\n`).join('')
  const ago = (ms: number | null) => (ms === null ? 'none' : `${formatAge(ms)} ago`)
  const parts = r.clusters.map((c) => {
    const facts = [
      r.limits.maxBackupAgeMs !== undefined ? `last backup ${ago(c.backupAgeMs)}` : '',
      r.limits.maxWalAgeMs !== undefined ? `newest WAL ${ago(c.walAgeMs)}` : '',
      r.limits.maxDrillAgeMs !== undefined ? `last good drill ${ago(c.drillAgeMs)}` : '',
    ].filter(Boolean)
    return `cluster ${c.systemId}${c.name !== c.systemId ? ` (${c.name})` : ''}: ${facts.join(', ')}`
  })
  return `OK: ${parts.join('; ')}\n`
}

const show = (v: unknown) => (v === null || v === undefined ? 'unknown' : String(v))
const onOff = (v: boolean | null) => (v === null ? 'unknown' : v ? 'on' : 'off')

function formatReport(r: CheckReport): string {
  // Nothing was learned when no connection was possible; the errors say why.
  if (r.systemId === null && r.serverVersion === null) return `  ${'server'.padEnd(18)}  ${r.target}\nNOT READY: see the errors below\n`
  const rows: [string, string][] = [
    ['server', r.target],
    ['server version', r.serverVersion === null ? 'unknown' : `${r.serverVersion} (${r.serverVersionNum})`],
    ['cluster', show(r.systemId)],
    ['timeline', show(r.timeline)],
    ['standby', r.standby === null ? 'unknown' : r.standby ? 'yes (in recovery): backups are taken from this standby' : 'no (primary)'],
    ['wal_level', show(r.walLevel)],
    ['max_wal_senders', r.maxWalSenders === null ? 'unknown' : `${r.maxWalSenders}${r.walSendersFree === null ? '' : ` (${r.walSendersFree} free)`}`],
    ['replication role', `${r.role.name}: ${r.role.mayReplicate === null ? 'unknown' : r.role.mayReplicate ? 'may replicate' : 'may NOT replicate'}`],
    ['data checksums', onOff(r.dataChecksums)],
    ['full_page_writes', onOff(r.fullPageWrites)],
    ['summarize_wal', r.serverVersionNum !== null && r.serverVersionNum < 170000 ? 'n/a (before 17)' : onOff(r.summarizeWal)],
    ['archive_mode', show(r.archiveMode)],
    ['WAL segment size', r.walSegmentSizeBytes === null ? 'unknown' : `${r.walSegmentSizeBytes / (1 << 20)} MB`],
    [
      'tablespaces',
      r.tablespaces === null
        ? 'unknown (no SQL connection allowed)'
        : r.tablespaces.length === 0
          ? 'none besides pg_default'
          : r.tablespaces.map((t) => `${t.name} (oid ${t.oid}) at ${t.location}`).join('\n' + ' '.repeat(22)),
    ],
  ]
  let out = rows.map(([k, v]) => `  ${k.padEnd(18)}  ${v}`).join('\n') + '\n'
  for (const p of r.problems.filter((x) => x.severity === 'warning')) out += `warning: ${p.message}\n  hint: ${p.hint}\n`
  out += r.ready ? `ready: pgkeep can back up this ${r.standby ? 'standby' : 'server'}\n` : 'NOT READY: see the errors below\n'
  return out
}
