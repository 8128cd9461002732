// `pgkeep info`: the clusters in a repository, their backups, the WAL stored for each timeline, and its locks.

import { summarizeRepository, type ClusterSummary } from '../../repo/index.js'
import type { Command } from '../command.js'
import { formatBytes, formatDuration } from '../format.js'
import { lockForJson, lockTable } from '../lock-list.js'
import { parseCommandArgs } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'

export const infoCommand: Command = {
  path: ['info'],
  summary: 'list the clusters, backups and WAL in a repository',
  usage: `usage: pgkeep info --repo URL [--json]

Lists every cluster in the repository with its backups (id, type, parent, times, LSNs, sizes, stored bytes) and
the WAL stored for each timeline as ranges, with the gaps between them (recovery cannot cross a gap), then the
repository's locks with their state (see 'pgkeep unlock --help'). Reads only: read-only access is enough.

  --json                  print { repository, clusters: [...], locks: [...] } as JSON

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('info', { args, options: { ...repoOptions, json: { type: 'boolean' } } })
    const { repo } = await openRepoForCommand(values, ctx, 'info')
    try {
      const clusters = await summarizeRepository(repo, { signal: ctx.signal })
      const locks = await repo.listLocks({ signal: ctx.signal })
      const now = Date.now()
      if (values.json) {
        ctx.stdout.write(
          JSON.stringify({ repository: repo.location, clusters: clusters.map(forJson), locks: locks.map((l) => lockForJson(l, now)) }, null, 2) + '\n',
        )
      } else {
        ctx.stdout.write(clusters.length === 0 ? `repository ${repo.location} is empty\n` : clusters.map(describe).join('\n'))
        if (locks.length > 0) ctx.stdout.write(['locks:', ...lockTable(locks, '  ', now)].join('\n') + '\n')
      }
      return 0
    } finally {
      await repo.close().catch(() => {})
    }
  },
}

function forJson(c: ClusterSummary) {
  return {
    systemId: c.systemId,
    name: c.name,
    backups: c.backups.map((b) => ({
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
      checksumFailures: b.checksumFailures.length,
    })),
    wal: c.wal,
  }
}

function describe(c: ClusterSummary): string {
  const lines = [`cluster ${c.systemId}${c.name !== c.systemId ? ` (${c.name})` : ''}`]
  if (c.backups.length === 0) lines.push('  no backups')
  for (const b of c.backups) {
    lines.push(
      `  ${b.id}  ${b.type.padEnd(11)} ${formatBytes(b.files.sizeBytes).padStart(8)}  stored ${formatBytes(b.storedBytes).padStart(8)}  ` +
        `${b.startLsn}..${b.endLsn} tl ${b.timeline}  ${b.finishedAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}  ${formatDuration(b.durationMs)}` +
        (b.parent ? `  on ${b.parent}` : '') +
        (b.checksumFailures.length ? `  ${b.checksumFailures.length} CHECKSUM FAILURES` : ''),
    )
  }
  for (const t of c.wal) {
    const ranges = t.ranges.map((r) => `${r.start}..${r.end}${r.endsPartial ? ' (partial)' : ''} [${r.segments} seg]`).join(', ')
    lines.push(`  WAL timeline ${t.timeline}: ${ranges}${t.historyStored ? '' : t.timeline > 1 ? ' (history file missing)' : ''}`)
    for (const g of t.gaps) lines.push(`    GAP ${g.from} .. ${g.to}: recovery cannot pass here`)
  }
  return lines.join('\n') + '\n'
}
