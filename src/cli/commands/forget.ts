// `pgkeep forget`: removes chosen backups by id (their records; blobs stay until `pgkeep gc`, WAL until expire).

import { forgetBackups } from '../../expire/forget.js'
import type { Command } from '../command.js'
import { parseCommandArgs } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'
import { shortTime } from '../retention-args.js'

export const forgetCommand: Command = {
  usage: `usage: pgkeep forget --repo URL [--cluster NAME|SYSTEMID] [--force] [--dry-run] [--json] BACKUP...

Removes the backups named by id ('pgkeep info' lists them). Every backup restores on its own, so the others stay
whole. The newest backup of a cluster is removed only with --force: restore takes it by default and the next
backup builds on it. WAL stays (expire removes WAL); the space comes back with 'pgkeep gc'. Every id is checked
before anything is removed. Takes a shared lock.

  --cluster NAME|SYSTEMID look for the ids in this cluster only (needed when two clusters use one id)
  --force                 allow removing the newest backup of a cluster
  --dry-run               check and list, remove nothing
  --json                  print { dryRun, backups: [{ id, systemId, clusterName, startedAt, finishedAt, newest }] }

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values, positionals } = parseCommandArgs('forget', {
      args,
      allowPositionals: true,
      options: { ...repoOptions, cluster: { type: 'string' }, force: { type: 'boolean' }, 'dry-run': { type: 'boolean' }, json: { type: 'boolean' } },
    })
    const { repo } = await openRepoForCommand(values, ctx, 'forget')
    try {
      const result = await forgetBackups({
        repo,
        backupIds: positionals,
        cluster: values.cluster,
        force: values.force,
        dryRun: values['dry-run'],
        signal: ctx.signal,
        onEvent: (e) => {
          if (e.type === 'message') ctx.stderr.write(`pgkeep: ${e.level === 'warning' ? 'warning: ' : ''}${e.text}\n`)
        },
      })
      if (values.json) ctx.stdout.write(JSON.stringify(result, null, 2) + '\n')
      else {
        const verb = result.dryRun ? 'would remove' : 'removed'
        const lines = result.backups.map(
          (b) => `${verb} backup ${b.id} of cluster ${b.clusterName} (started ${shortTime(b.startedAt)})${b.newest ? ', its newest' : ''}`,
        )
        lines.push(result.dryRun ? 'dry run: nothing removed' : "WAL stays until 'pgkeep expire'; 'pgkeep gc' frees the space")
        ctx.stdout.write(lines.join('\n') + '\n')
      }
      return 0
    } finally {
      await repo.close().catch(() => {})
    }
  },
}
