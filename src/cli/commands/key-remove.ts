// `pgkeep key remove`: removes a key object, so its passphrase no longer opens the repository; never the last one.

import { UsageError } from '../../errors.js'
import type { Command } from '../command.js'
import { parseCommandArgs } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'

export const keyRemoveCommand: Command = {
  usage: `usage: pgkeep key remove --repo URL ID [--force] [--json]

Removes the key object ID (as 'pgkeep key list' shows it; its first 8 or more hex digits are enough): its
passphrase no longer opens the repository. No data is rewritten. Refused for the last readable key, whatever
--force says (nothing could ever open the repository again), and for the key the given passphrase opened unless
--force is given (use 'pgkeep key passwd' to replace a passphrase).

  --force                 remove the key this passphrase opened too (you know the passphrase of another key)
  --json                  print { repository, removedKeyId }

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values, positionals } = parseCommandArgs('key remove', {
      args,
      allowPositionals: true,
      options: { ...repoOptions, force: { type: 'boolean' }, json: { type: 'boolean' } },
    })
    if (positionals.length !== 1) {
      throw new UsageError(positionals.length === 0 ? 'pgkeep key remove needs the id of the key to remove' : 'pgkeep key remove takes one key id', {
        hint: "'pgkeep key list' shows the ids",
      })
    }
    const { repo, storage } = await openRepoForCommand(values, ctx, 'key remove')
    try {
      const { removedKeyId } = await repo.removeKey(positionals[0]!, { force: values.force === true, signal: ctx.signal })
      ctx.stdout.write(
        values.json
          ? JSON.stringify({ repository: repo.location, removedKeyId }, null, 2) + '\n'
          : `removed key ${removedKeyId}: its passphrase no longer opens repository '${repo.location}'\n`,
      )
      return 0
    } finally {
      await repo.close().catch(() => {})
      await storage.close().catch(() => {})
    }
  },
}
