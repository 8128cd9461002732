// `pgkeep policy show | set | clear`: retention policies stored in the repository, per cluster or as the default
// for every cluster without its own. `pgkeep expire` without rules and `pgkeep backup --expire` apply them.

import { UsageError } from '../../errors.js'
import { clearRetentionPolicy, setRetentionPolicy } from '../../expire/policy.js'
import { DEFAULT_POLICY_SCOPE, describePolicy, listClusters, listStoredPolicies, type StoredPolicy } from '../../repo/index.js'
import type { Command } from '../command.js'
import { parseCommandArgs } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'
import { policyFromArgs, RETENTION_USAGE, retentionOptions, shortTime } from '../retention-args.js'

const SCOPE_USAGE = `  --cluster NAME|SYSTEMID the cluster's own policy; without it, the default for every cluster without its own`

export const policyShowCommand: Command = {
  usage: `usage: pgkeep policy show --repo URL [--json]

Lists the stored retention policies (the default one and each cluster's own) and which one applies to each
cluster. Reads only.

  --json                  print { policies: [{ scope, policy, setAt }], clusters: [{ systemId, name, scope }] }

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('policy show', { args, options: { ...repoOptions, json: { type: 'boolean' } } })
    const { repo } = await openRepoForCommand(values, ctx, 'policy show')
    try {
      const policies = await listStoredPolicies(repo, { signal: ctx.signal })
      const clusters = (await listClusters(repo, { signal: ctx.signal })).map((c) => ({
        ...c,
        scope: policies.find((p) => p.scope === c.systemId)?.scope ?? policies.find((p) => p.scope === DEFAULT_POLICY_SCOPE)?.scope ?? null,
      }))
      if (values.json) {
        const out = { policies: policies.map(({ scope, policy, setAt }) => ({ scope, policy, setAt })), clusters }
        ctx.stdout.write(JSON.stringify(out, null, 2) + '\n')
        return 0
      }
      const name = (p: StoredPolicy) =>
        p.scope === DEFAULT_POLICY_SCOPE ? 'default' : `cluster ${clusters.find((c) => c.systemId === p.scope)?.name ?? p.scope}`
      const lines =
        policies.length === 0 ? ['no retention policy is stored'] : policies.map((p) => `${name(p)}: ${describePolicy(p.policy)} (set ${shortTime(p.setAt)})`)
      for (const c of clusters) {
        lines.push(
          `cluster ${c.name}: ${c.scope === null ? 'no policy applies' : c.scope === DEFAULT_POLICY_SCOPE ? 'the default policy applies' : 'its own policy applies'}`,
        )
      }
      ctx.stdout.write(lines.join('\n') + '\n')
      return 0
    } finally {
      await repo.close().catch(() => {})
    }
  },
}

export const policySetCommand: Command = {
  usage: `usage: pgkeep policy set --repo URL [--cluster NAME|SYSTEMID] rules

Stores a retention policy in the repository, replacing the one stored before for the same cluster (or the default).
'pgkeep expire' without rules and 'pgkeep backup --expire' apply it. A stored policy must keep backups (at least one
of the count rules or --keep-within). Takes a shared lock.

${SCOPE_USAGE}
  --json                  print the stored policy as JSON

${RETENTION_USAGE}

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('policy set', {
      args,
      options: { ...repoOptions, ...retentionOptions, cluster: { type: 'string' }, json: { type: 'boolean' } },
    })
    const policy = policyFromArgs(values)
    if (!policy) throw new UsageError('pgkeep policy set needs rules', { hint: 'give e.g. --keep-last 7 --keep-daily 14 --keep-monthly 6' })
    const { repo } = await openRepoForCommand(values, ctx, 'policy set')
    try {
      const stored = await setRetentionPolicy({ repo, cluster: values.cluster, policy, signal: ctx.signal })
      ctx.stdout.write(
        values.json
          ? JSON.stringify({ scope: stored.scope, policy: stored.policy, setAt: stored.setAt }, null, 2) + '\n'
          : `stored the ${stored.scope === DEFAULT_POLICY_SCOPE ? 'default' : `cluster ${stored.scope}`} retention policy: ${describePolicy(stored.policy)}\n`,
      )
      return 0
    } finally {
      await repo.close().catch(() => {})
    }
  },
}

export const policyClearCommand: Command = {
  usage: `usage: pgkeep policy clear --repo URL [--cluster NAME|SYSTEMID] [--json]

Removes the retention policy stored for a cluster (it then follows the default one, if any), or the default one.
Takes a shared lock.

${SCOPE_USAGE}
  --json                  print { scope, removedRecords }

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('policy clear', { args, options: { ...repoOptions, cluster: { type: 'string' }, json: { type: 'boolean' } } })
    const { repo } = await openRepoForCommand(values, ctx, 'policy clear')
    try {
      const { scope, removed } = await clearRetentionPolicy({ repo, cluster: values.cluster, signal: ctx.signal })
      const what = values.cluster === undefined ? 'default policy' : `policy of cluster ${values.cluster}`
      if (values.json) ctx.stdout.write(JSON.stringify({ scope, removedRecords: removed }, null, 2) + '\n')
      else ctx.stdout.write(removed === 0 ? `no ${what} was stored\n` : `removed the ${what}\n`)
      return 0
    } finally {
      await repo.close().catch(() => {})
    }
  },
}
