// `pgkeep key add`: another passphrase for an encrypted repository (a new key object wrapping the same master key).

import type { Command } from '../command.js'
import { parseCommandArgs } from '../parse.js'
import { NEW_PASSPHRASE_USAGE, newPassphraseOptions, rejectPassphraseArgument, requireNewPassphrase } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'

export const keyAddCommand: Command = {
  usage: `usage: pgkeep key add --repo URL [--new-passphrase-file F] [--json]

Adds a passphrase: writes a new key object that wraps the repository's master key with it. Every passphrase that
opened the repository still does, and no data is rewritten. The current passphrase (to open the repository) and
the new one come from files or the environment, never from the command line.

${NEW_PASSPHRASE_USAGE}
  --json                  print { repository, keyId }

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('key add', { args, options: { ...repoOptions, ...newPassphraseOptions, json: { type: 'boolean' } } })
    const newPassphrase = await requireNewPassphrase(values['new-passphrase-file'], ctx.env, ctx.stderr)
    const { repo, storage } = await openRepoForCommand(values, ctx, 'key add')
    try {
      const { keyId } = await repo.addKey(newPassphrase, { signal: ctx.signal })
      ctx.stdout.write(
        values.json
          ? JSON.stringify({ repository: repo.location, keyId }, null, 2) + '\n'
          : `added key ${keyId}: the new passphrase opens repository '${repo.location}', and so does every other one\n`,
      )
      return 0
    } finally {
      await repo.close().catch(() => {})
      await storage.close().catch(() => {})
    }
  },
}
