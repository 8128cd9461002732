// `pgkeep check`: the first command a user runs. Prints what the server is and whether pgkeep can back it up.

import { checkServer, type CheckReport } from '../../check/check-server.js'
import type { Command } from '../command.js'
import { CONNECTION_USAGE, connectionFrom, connectionOptions } from '../connection-args.js'
import { parseCommandArgs } from '../parse.js'

export const checkCommand: Command = {
  path: ['check'],
  summary: 'check that a server can be backed up, and say how to fix it if not',
  usage: `usage: pgkeep check -d CONNINFO [--json]

Connects over the replication protocol and reports the server version, system identifier, timeline, wal_level,
WAL senders, replication rights, data checksums, full_page_writes, summarize_wal, archive_mode and tablespaces.
Exits 0 when the server is ready for pgkeep, 1 when it is not (each problem is printed with a hint).

  --json                  print one JSON object (ready, serverVersion, systemIdentifier, problems, …)

${CONNECTION_USAGE}
`,
  async run(args, ctx) {
    const { values } = parseCommandArgs('check', { args, options: { ...connectionOptions, json: { type: 'boolean' } } })
    const { conninfo, overrides } = connectionFrom(values)
    const report = await checkServer({ server: { conninfo, overrides, env: ctx.env }, signal: ctx.signal })
    if (values.json) ctx.stdout.write(JSON.stringify(report, null, 2) + '\n')
    else ctx.stdout.write(formatReport(report))
    if (!report.ready && !values.json) {
      for (const p of report.problems.filter((x) => x.severity === 'error')) {
        ctx.stderr.write(`pgkeep: error: ${p.message}\nHINT: ${p.hint}\n`)
      }
    }
    return report.ready ? 0 : 1
  },
}

const show = (v: unknown) => (v === null || v === undefined ? 'unknown' : String(v))
const onOff = (v: boolean | null) => (v === null ? 'unknown' : v ? 'on' : 'off')

function formatReport(r: CheckReport): string {
  // Nothing was learned when no connection was possible; the errors say why.
  if (r.systemIdentifier === null && r.serverVersion === null) return `  ${'server'.padEnd(18)}  ${r.target}\nNOT READY: see the errors below\n`
  const rows: [string, string][] = [
    ['server', r.target],
    ['server version', r.serverVersion === null ? 'unknown' : `${r.serverVersion} (${r.serverVersionNum})`],
    ['system identifier', show(r.systemIdentifier)],
    ['timeline', show(r.timeline)],
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
  out += r.ready ? 'ready: pgkeep can back up this server\n' : 'NOT READY: see the errors below\n'
  return out
}
