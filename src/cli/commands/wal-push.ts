// `pgkeep wal push`: archive_command. Stores one WAL file (segment, partial segment, timeline or backup history
// file) in the repository; idempotent, loud on conflicting content.

import { UsageError } from '../../errors.js'
import { pushWalFile } from '../../wal/wal-push.js'
import type { Command } from '../command.js'
import { parseCommandArgs } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'

/** `pgkeep wal push PATH`. */
export const walPushCommand: Command = {
  usage: `usage: pgkeep wal push --repo URL [--cluster SYSTEMID] PATH

For archive_command = 'pgkeep wal push --repo URL %p'. Stores the segment, partial segment, timeline history
file or backup history file at PATH in the repository. Pushing a file that is already stored with the same
content succeeds; with different content it fails (two clusters writing one timeline must be noticed). It takes
a shared repository lock; if the lock is lost while the file is stored, it fails with exit status 24 and
PostgreSQL keeps the file and retries.

A segment names its cluster in its first page. History and backup history files do not: the cluster is
--cluster, else the one whose data directory holds PATH (archive_command runs there: its global/pg_control),
else the only cluster the repository knows.

The repository must exist ('pgkeep init'): a location that holds none (an unmounted file system, a mistyped
path or prefix) is an error, so PostgreSQL keeps the file and tries again instead of recycling it.

options:
  --cluster SYSTEMID      the cluster's system identifier (see 'pgkeep check' or pg_controldata)
  --verbose               print one line per file stored
  --json                  print { name, systemId, result: stored|exists } on stdout

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values, positionals } = parseCommandArgs('wal push', {
      args,
      allowPositionals: true,
      options: { ...repoOptions, cluster: { type: 'string' }, verbose: { type: 'boolean' }, json: { type: 'boolean' } },
    })
    if (positionals.length !== 1) {
      throw new UsageError(`pgkeep wal push takes one PATH, got ${positionals.length}`, { hint: "use archive_command = 'pgkeep wal push --repo URL %p'" })
    }
    // No repository at the location is an error (exit 22): PostgreSQL keeps the file and tries again.
    const opened = await openRepoForCommand(values, ctx, 'wal push')
    try {
      // Shared: a concurrent GC must not take the new blobs for garbage before their record exists. The record is
      // written only while the lock is held; a lost lock fails the push (exit 24), so PostgreSQL keeps the file
      // and retries.
      const lock = await opened.repo.acquireLock('shared', {
        purpose: 'wal push',
        signal: ctx.signal,
        waitMs: 60_000,
        onStateChange: (c) => c.state === 'at-risk' && ctx.stderr.write(`pgkeep: warning: ${c.message}\n`),
      })
      try {
        const signal = AbortSignal.any([ctx.signal, lock.signal])
        const r = await pushWalFile(opened.repo, positionals[0]!, { cluster: values.cluster, signal })
        if (values.verbose) ctx.stderr.write(`pgkeep: ${r.result === 'stored' ? 'stored' : 'already stored'} ${r.name} of cluster ${r.systemId}\n`)
        if (values.json) ctx.stdout.write(`${JSON.stringify({ name: r.name, systemId: r.systemId, result: r.result })}\n`)
      } finally {
        await lock.release().catch(() => {})
      }
      return 0
    } finally {
      await opened.repo.close().catch(() => {})
    }
  },
}
