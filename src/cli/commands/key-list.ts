// `pgkeep key list`: the key objects (passphrases) of an encrypted repository, and which one this passphrase opens.

import type { KeyInfo } from '../../repo/index.js'
import type { Command } from '../command.js'
import { parseCommandArgs } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'

export const keyListCommand: Command = {
  usage: `usage: pgkeep key list --repo URL [--json]

Lists the key objects of an encrypted repository: each wraps the one master key with a passphrase, so each
passphrase opens the whole repository. Shows each key's id, when it was created and its scrypt cost, marks the
one the given passphrase opened with '*', and names damaged ones. Reads only.

  --json                  print { repository, encrypted, keys: [{ id, createdAt, scrypt, current, problem? }] }

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('key list', { args, options: { ...repoOptions, json: { type: 'boolean' } } })
    const { repo, storage } = await openRepoForCommand(values, ctx, 'key list')
    try {
      const keys = await repo.listKeys({ signal: ctx.signal })
      if (values.json) ctx.stdout.write(JSON.stringify({ repository: repo.location, encrypted: repo.encrypted, keys }, null, 2) + '\n')
      else if (!repo.encrypted) ctx.stdout.write(`repository '${repo.location}' is not encrypted: it has no keys\n`)
      else ctx.stdout.write([`keys of repository '${repo.location}':`, ...keys.map(describe)].join('\n') + '\n')
      return 0
    } finally {
      await repo.close().catch(() => {})
      await storage.close().catch(() => {})
    }
  },
}

function describe(k: KeyInfo): string {
  const mark = k.current ? '*' : ' '
  if (k.problem !== undefined) return `${mark} ${k.id}  UNUSABLE: ${k.problem}`
  const created = k.createdAt?.replace('T', ' ').replace(/\.\d+Z$/, 'Z') ?? 'unknown time'
  const cost = k.scrypt ? `scrypt N=${k.scrypt.N} r=${k.scrypt.r} p=${k.scrypt.p}` : ''
  return `${mark} ${k.id}  created ${created}  ${cost}${k.current ? '  (this passphrase)' : ''}`
}
