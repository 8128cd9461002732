// `pgkeep unlock`: lists the repository's locks with their state, and with --remove-stale removes the stale ones
// (expired, dead, unreadable), never a live one.

import type { Command } from '../command.js'
import { lockForJson, lockTable } from '../lock-list.js'
import { parseCommandArgs } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'

export const unlockCommand: Command = {
  usage: `usage: pgkeep unlock --repo URL [--remove-stale] [--json]

Lists every lock in the repository: its state, kind (shared: backup, WAL, restore, verify, expire, forget,
copy, gc; exclusive: an index rebuild), what holds it, host, pid, age and expiry. States, judged by this host's clock:
  live        refreshed in time: it blocks conflicting locks, and is never removed here
  expired     not refreshed by its expiry (its holder was cut off from the repository, suspended, or is on
              another host and gone): it no longer blocks shared locks; an exclusive lock removes it, and
              gc removes it when it has not acknowledged the packs gc is about to delete
  dead        its holder ran on this host and that process no longer exists
  unreadable  not a lock this pgkeep can read (damaged, or written by a newer version): it blocks exclusive locks

  --remove-stale          remove the expired, dead and unreadable locks (never a live one) and list them; a
                          holder whose expired lock is removed finds out and stops, it never goes on under it
  --json                  print { repository, locks: [...], removed: [...] }

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('unlock', {
      args,
      options: { ...repoOptions, 'remove-stale': { type: 'boolean' }, json: { type: 'boolean' } },
    })
    const { repo, storage } = await openRepoForCommand(values, ctx, 'unlock')
    try {
      const removed = values['remove-stale'] ? await repo.removeStaleLocks({ signal: ctx.signal }) : []
      const locks = await repo.listLocks({ signal: ctx.signal })
      const now = Date.now()
      if (values.json) {
        ctx.stdout.write(
          JSON.stringify(
            { repository: repo.location, locks: locks.map((l) => lockForJson(l, now)), removed: removed.map((l) => lockForJson(l, now)) },
            null,
            2,
          ) + '\n',
        )
        return 0
      }
      const lines: string[] = []
      if (values['remove-stale']) {
        lines.push(removed.length === 0 ? 'no stale locks to remove' : `removed ${removed.length} stale lock${removed.length === 1 ? '' : 's'}:`)
        for (const l of removed) lines.push(`  ${l.state}: ${l.description}`)
      }
      if (locks.length === 0) lines.push(`repository ${repo.location} holds no locks`)
      else lines.push(`locks in ${repo.location}:`, ...lockTable(locks, '  ', now))
      const stale = locks.filter((l) => l.state !== 'live').length
      if (stale > 0) lines.push(`${stale} stale; remove ${stale === 1 ? 'it' : 'them'} with 'pgkeep unlock --repo ${repo.location} --remove-stale'`)
      ctx.stdout.write(lines.join('\n') + '\n')
      return 0
    } finally {
      await repo.close().catch(() => {})
      await storage.close().catch(() => {})
    }
  },
}
