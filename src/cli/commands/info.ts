// `pgkeep info`: the clusters in a repository, their backups (with the space each holds alone), the WAL stored for
// each timeline, the window of points in time restore can reach, what the stored retention policy would keep, and
// the repository's locks.

import { isPgkeepError } from '../../errors.js'
import {
  type BackupSpace,
  backupSpace,
  type ClusterSummary,
  describePolicy,
  type DrillRecord,
  planRetention,
  policyInForce,
  type RecoverableWindow,
  type Repository,
  type RetentionPlan,
  recoverableWindow,
  summarizeRepository,
} from '../../repo/index.js'
import type { Command } from '../command.js'
import { formatBytes, formatDuration, plural } from '../format.js'
import { lockForJson, lockTable } from '../lock-list.js'
import { parseCommandArgs } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'
import { shortTime } from '../retention-args.js'

export const infoCommand: Command = {
  usage: `usage: pgkeep info --repo URL [--no-space] [--json]

Lists every cluster in the repository with its backups (id, type, parent, times, LSNs, sizes, stored bytes, and the
space each holds alone: the stored bytes of blobs no other backup references, what forgetting it and 'pgkeep gc'
would give back), the WAL stored for each timeline as ranges with the gaps between them (recovery cannot cross a
gap), the recoverable window (the earliest and latest point restore can reach: from the oldest backup's end to
where the WAL after the newest backup stops, with any holes), and what the stored retention policy would keep
('pgkeep policy set'), and the last restore drill (and the last good one, when the last
failed); then the repository's locks with their state (see 'pgkeep unlock --help'). Reads only:
read-only access is enough.

  --no-space              skip the space each backup holds alone (it reads every file list and file map once:
                          the slow part on a large repository)
  --json                  print { repository, clusters: [...], locks: [...] } as JSON

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('info', { args, options: { ...repoOptions, json: { type: 'boolean' }, 'no-space': { type: 'boolean' } } })
    const { repo } = await openRepoForCommand(values, ctx, 'info')
    try {
      const signal = ctx.signal
      const clusters: ClusterInfo[] = []
      for (const summary of await summarizeRepository(repo, { signal })) {
        clusters.push({
          summary,
          window: await recoverableWindow(repo, summary.backups, { signal, summary: summary.wal }),
          retention: await retentionOf(repo, summary, signal),
        })
      }
      const space = values['no-space']
        ? undefined
        : await backupSpace(
            repo,
            clusters.flatMap((c) => c.summary.backups),
            { signal },
          )
      const locks = await repo.listLocks({ signal })
      const now = Date.now()
      if (values.json) {
        const out = {
          repository: repo.location,
          clusters: clusters.map((c) => forJson(c, space?.backups)),
          ...(space ? { spaceUnreadable: space.unreadable } : {}),
          locks: locks.map((l) => lockForJson(l, now)),
        }
        ctx.stdout.write(JSON.stringify(out, null, 2) + '\n')
      } else {
        ctx.stdout.write(clusters.length === 0 ? `repository ${repo.location} is empty\n` : clusters.map((c) => describe(c, space?.backups)).join('\n'))
        if (space && space.unreadable > 0) {
          ctx.stdout.write(
            `warning: ${space.unreadable} file lists or file maps could not be read, so the space held alone may be shown low; run 'pgkeep verify'\n`,
          )
        }
        if (locks.length > 0) ctx.stdout.write(['locks:', ...lockTable(locks, '  ', now)].join('\n') + '\n')
      }
      return 0
    } finally {
      await repo.close().catch(() => {})
    }
  },
}

interface ClusterInfo {
  summary: ClusterSummary
  window: RecoverableWindow | undefined
  retention: { plan: RetentionPlan; scope: string } | { error: string } | undefined
}

/** What the policy in force would do now, or undefined when none is stored (an unusable one: its error). */
async function retentionOf(repo: Repository, c: ClusterSummary, signal: AbortSignal): Promise<ClusterInfo['retention']> {
  try {
    const stored = await policyInForce(repo, c.systemId, { signal })
    if (!stored) return undefined
    return { plan: await planRetention(repo, { systemId: c.systemId, name: c.name }, stored.policy, { signal }), scope: stored.scope }
  } catch (err) {
    if (!isPgkeepError(err) || signal.aborted) throw err
    return { error: err.message }
  }
}

function forJson(c: ClusterInfo, space: ReadonlyMap<string, BackupSpace> | undefined) {
  const s = c.summary
  const r = c.retention
  return {
    systemId: s.systemId,
    name: s.name,
    backups: s.backups.map((b) => ({
      id: b.id,
      type: b.type,
      parent: b.parent,
      incrementalMode: b.incrementalMode,
      label: b.label,
      serverVersion: b.server.version,
      timeline: b.timeline,
      startLsn: b.startLsn,
      endLsn: b.endLsn,
      startedAt: b.startedAt,
      finishedAt: b.finishedAt,
      durationMs: b.durationMs,
      files: b.files.count,
      sizeBytes: b.files.sizeBytes,
      storedBytes: b.storedBytes,
      aloneBytes: space?.get(b.id)?.aloneBytes ?? null,
      checksumFailures: b.checksumFailures.length,
    })),
    wal: s.wal,
    recoverable: c.window ?? null,
    retention:
      r === undefined
        ? null
        : 'error' in r
          ? { error: r.error }
          : {
              scope: r.scope,
              policy: r.plan.policy,
              keep: r.plan.backups.filter((b) => b.decision.keep).map((b) => ({ id: b.record.id, keptBy: b.decision.keptBy })),
              remove: r.plan.backups.filter((b) => !b.decision.keep).map((b) => b.record.id),
              walWindowStart: r.plan.wal.windowStart ?? null,
              walFilesRemoved: r.plan.wal.files.filter((f) => !f.keep).length,
            },
    drills: { count: s.drills.count, last: drillForJson(s.drills.last), lastPassed: drillForJson(s.drills.lastPassed) },
  }
}

function drillForJson(d: DrillRecord | null) {
  if (!d) return null
  return {
    id: d.id,
    passed: d.passed,
    failure: d.failure,
    backupId: d.backupId,
    target: d.target,
    serverVersion: d.serverVersion,
    startedAt: d.startedAt,
    finishedAt: d.finishedAt,
    rtoMs: d.timings.rtoMs,
    restoreMs: d.timings.restoreMs,
    recoveryMs: d.timings.recoveryMs,
    checksMs: d.timings.checksMs,
  }
}

/** One line of a drill for `info`: when, the result, the backup and the RTO. */
function describeDrill(d: DrillRecord): string {
  const when = d.finishedAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z')
  const rto = d.timings.rtoMs === null ? '' : `, RTO ${formatDuration(d.timings.rtoMs)}`
  return `${when} ${d.passed ? 'passed' : `FAILED (${d.failure})`}: backup ${d.backupId ?? '?'} to ${d.target}${rto}`
}

function describe(c: ClusterInfo, space: ReadonlyMap<string, BackupSpace> | undefined): string {
  const s = c.summary
  const lines = [`cluster ${s.name}${s.name !== s.systemId ? ` (system identifier ${s.systemId})` : ''}`]
  if (s.backups.length === 0) lines.push('  no backups')
  for (const b of s.backups) {
    const alone = space?.get(b.id)
    lines.push(
      `  ${b.id}  ${b.type.padEnd(11)} ${formatBytes(b.files.sizeBytes).padStart(8)}  stored ${formatBytes(b.storedBytes).padStart(8)}  ` +
        (alone ? `alone ${formatBytes(alone.aloneBytes).padStart(8)}  ` : '') +
        `${b.startLsn}..${b.endLsn} tl ${b.timeline}  ${shortTime(b.finishedAt)}  ${formatDuration(b.durationMs)}` +
        (b.parent ? `  on ${b.parent}` : '') +
        (b.checksumFailures.length ? `  ${b.checksumFailures.length} CHECKSUM FAILURES` : ''),
    )
  }
  for (const t of s.wal) {
    const ranges = t.ranges.map((r) => `${r.start}..${r.end}${r.endsPartial ? ' (partial)' : ''} [${r.segments} seg]`).join(', ')
    lines.push(`  WAL timeline ${t.timeline}: ${ranges}${t.historyStored ? '' : t.timeline > 1 ? ' (history file missing)' : ''}`)
    for (const g of t.gaps) lines.push(`    GAP ${g.from} .. ${g.to}: recovery cannot pass here`)
  }
  const w = c.window
  if (w) {
    lines.push(
      `  recoverable: from ${shortTime(w.from.time)} (${w.from.lsn}, end of backup ${w.from.backupId}) to ${w.to.lsn} on timeline ${w.to.timeline} ` +
        `(WAL stored by ${shortTime(w.to.storedBy)}: no commit in it is later)`,
    )
    for (const h of w.holes) lines.push(`    HOLE ${h.from} .. ${h.to}: no backup and no stored WAL reach these points`)
  }
  const r = c.retention
  if (r === undefined) lines.push("  retention: no policy stored ('pgkeep policy set')")
  else if ('error' in r) lines.push(`  retention: the stored policy cannot be used: ${r.error}`)
  else {
    const p = r.plan
    const going = p.backups.filter((b) => !b.decision.keep)
    const wal = p.wal.files.filter((f) => !f.keep).length
    lines.push(
      `  retention (${r.scope === s.systemId ? "this cluster's policy" : 'the default policy'}: ${describePolicy(p.policy)}): ` +
        `keeps ${p.backups.length - going.length} of ${plural(p.backups.length, 'backup')}` +
        (going.length > 0 || wal > 0 ? `; 'pgkeep expire' would remove ${plural(going.length, 'backup')} and ${plural(wal, 'WAL file')}` : ''),
    )
    for (const b of going) lines.push(`    would remove ${b.record.id}: ${b.decision.why.join('; ')}`)
  }
  const { last, lastPassed } = s.drills
  if (!last) lines.push('  restore drills: none (pgkeep drill)')
  else {
    lines.push(`  last drill: ${describeDrill(last)}`)
    if (!last.passed) lines.push(`  last good drill: ${lastPassed ? describeDrill(lastPassed) : 'none'}`)
  }
  return lines.join('\n') + '\n'
}
