// `pgkeep key passwd`: replaces the passphrase that opened the repository (a new key object, then the old one removed).

import type { Command } from '../command.js'
import { parseCommandArgs } from '../parse.js'
import { NEW_PASSPHRASE_USAGE, newPassphraseOptions, rejectPassphraseArgument, requireNewPassphrase } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'

export const keyPasswdCommand: Command = {
  usage: `usage: pgkeep key passwd --repo URL [--new-passphrase-file F] [--json]

Replaces the passphrase that opens the repository: writes a new key object wrapping the same master key with the
new passphrase, then removes the key object the current one opened. No data is rewritten; other keys are kept.
Interrupted in between, both passphrases work. Processes that opened the repository before keep working.

${NEW_PASSPHRASE_USAGE}
  --json                  print { repository, keyId, removedKeyId }

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('key passwd', { args, options: { ...repoOptions, ...newPassphraseOptions, json: { type: 'boolean' } } })
    const newPassphrase = await requireNewPassphrase(values['new-passphrase-file'], ctx.env, ctx.stderr)
    const { repo, storage } = await openRepoForCommand(values, ctx, 'key passwd')
    try {
      const { keyId, removedKeyId } = await repo.changePassphrase(newPassphrase, { signal: ctx.signal })
      ctx.stdout.write(
        values.json
          ? JSON.stringify({ repository: repo.location, keyId, removedKeyId }, null, 2) + '\n'
          : `replaced key ${removedKeyId} with ${keyId}: the old passphrase no longer opens repository '${repo.location}'\n`,
      )
      return 0
    } finally {
      await repo.close().catch(() => {})
      await storage.close().catch(() => {})
    }
  },
}
