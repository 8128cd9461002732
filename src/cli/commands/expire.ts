// `pgkeep expire`: applies a retention policy (given as options, or stored in the repository) to one cluster or all
// of them, removing the backup records and WAL records no rule keeps. Blobs stay until `pgkeep gc`.

import { type ExpireClusterResult, type ExpireResult, expireBackups } from '../../expire/expire.js'
import { describePolicy } from '../../repo/index.js'
import type { Command } from '../command.js'
import { plural } from '../format.js'
import { parseCommandArgs } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'
import { describeWalRuns, policyFromArgs, RETENTION_USAGE, retentionOptions, shortTime } from '../retention-args.js'
import { UsageError } from '../../errors.js'

export const expireCommand: Command = {
  usage: `usage: pgkeep expire --repo URL [--cluster NAME|SYSTEMID | --all-clusters] [rules] [--dry-run] [--json]

Applies a retention policy to a cluster: the rules given here, or without rules the policy stored in the repository
('pgkeep policy set'). Lists every backup with the rules that keep it, or why none does, and the WAL that goes,
then removes those backup records and WAL records. Removing a backup never breaks another: every backup restores
on its own. WAL that a kept backup needs is always kept, and so is WAL for point-in-time recovery from the oldest
kept backup (or for --keep-wal-within). Only records are removed: the space comes back with 'pgkeep gc'.

Refuses a policy that would remove every backup of a cluster (add --keep-last 1, or --allow-empty). Takes a shared
lock: it runs beside 'wal stream' and backups (WAL is not removed while a backup runs; the next expire removes it),
and gc. Backups and WAL stored while it runs are never removed by it.

  --cluster NAME|SYSTEMID the cluster (needed when the repository holds several)
  --all-clusters          every cluster (each with the rules given, or its stored policy)
  --dry-run               show what would go, remove nothing
  --allow-empty           allow a policy that keeps no backup of a cluster (its WAL stays)
  --json                  print { dryRun, clusters: [{ systemId, name, policy, backups: [...], wal: {...} }] }

${RETENTION_USAGE}

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('expire', {
      args,
      options: {
        ...repoOptions,
        ...retentionOptions,
        cluster: { type: 'string' },
        'all-clusters': { type: 'boolean' },
        'dry-run': { type: 'boolean' },
        'allow-empty': { type: 'boolean' },
        json: { type: 'boolean' },
      },
    })
    if (values.cluster !== undefined && values['all-clusters']) {
      throw new UsageError('--cluster and --all-clusters exclude each other', { hint: 'give one of them' })
    }
    const policy = policyFromArgs(values)
    const { repo } = await openRepoForCommand(values, ctx, 'expire')
    try {
      const result = await expireBackups({
        repo,
        cluster: values.cluster,
        allClusters: values['all-clusters'],
        policy,
        dryRun: values['dry-run'],
        allowEmpty: values['allow-empty'],
        signal: ctx.signal,
        onEvent: (e) => {
          if (e.type === 'message') ctx.stderr.write(`pgkeep: ${e.level === 'warning' ? 'warning: ' : ''}${e.text}\n`)
        },
      })
      ctx.stdout.write(values.json ? JSON.stringify(result, null, 2) + '\n' : describeExpire(result))
      return 0
    } finally {
      await repo.close().catch(() => {})
    }
  },
}

const SOURCE = { given: 'given', cluster: 'stored for this cluster', default: "the repository's default" } as const

/** The human form of an expire result (also what `backup --expire` prints). */
export function describeExpire(r: ExpireResult): string {
  return r.clusters.map((c) => describeCluster(c, r.dryRun)).join('\n')
}

function describeCluster(c: ExpireClusterResult, dryRun: boolean): string {
  const lines = [
    `cluster ${c.name}${c.name !== c.systemId ? ` (system identifier ${c.systemId})` : ''}: ${describePolicy(c.policy)} [${SOURCE[c.policySource]}]`,
  ]
  if (c.backups.length === 0) lines.push('  no backups')
  for (const b of c.backups) {
    const head = `  ${b.keep ? 'keep  ' : dryRun ? 'would remove' : 'remove'} ${b.id}  ${shortTime(b.startedAt)}`
    lines.push(`${head}  ${b.keep ? b.keptBy.map((k) => k.text).join('; ') : b.why.join('; ')}`)
  }
  const w = c.wal
  if (w.note) lines.push(`  WAL: ${w.note}`)
  else if (w.windowStart) lines.push(`  WAL: point-in-time recovery window from ${w.windowStart.lsn} (the start of backup ${w.windowStart.backupId})`)
  if (w.removedFiles > 0) {
    lines.push(
      `  WAL ${w.deferred ? 'left for the next expire' : dryRun ? 'that would go' : 'removed'}: ${w.removedFiles} of ${w.removedFiles + w.keptFiles} files`,
    )
    for (const run of describeWalRuns(w.removed)) lines.push(`    ${run}`)
  }
  const going = c.backups.filter((b) => !b.keep).length
  const kept = c.backups.length - going
  lines.push(
    dryRun
      ? `  would remove ${going} of ${plural(c.backups.length, 'backup')} and ${plural(w.deferred ? 0 : w.removedFiles, 'WAL file')} (dry run: nothing removed)`
      : `  removed ${plural(c.removedBackups, 'backup')} and ${plural(c.removedWalFiles, 'WAL file')}; ${plural(kept, 'backup')} kept${c.removedBackups + c.removedWalFiles > 0 ? "; 'pgkeep gc' frees their space" : ''}`,
  )
  return lines.join('\n') + '\n'
}
