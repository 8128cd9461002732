// `pgkeep copy`: backups with their WAL from the repository --repo names into a second, existing one (--to).

import { type CopyResult, copyBackups } from '../../copy/copy-backups.js'
import { UsageError } from '../../errors.js'
import type { Command } from '../command.js'
import { formatBytes, formatDuration } from '../format.js'
import { parseCommandArgs, parseWorkers } from '../parse.js'
import { readPassphrase, rejectPassphraseArgument, TO_PASSPHRASE } from '../passphrase.js'
import { eventView } from '../progress.js'
import { openRepoAt, openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'

export const copyCommand: Command = {
  usage: `usage: pgkeep copy --repo URL --to URL [--backup ID]... [--cluster NAME | --all] [--with-wal] [options]

Copies backups, each with the WAL from its start to its end (what it needs to become consistent) and the
cluster's timeline histories, into a second repository. The second repository must exist ('pgkeep init --repo
URL' it first); it may be plain or encrypted with a passphrase of its own, and is complete on its own: it
verifies and restores without the first. Only what it lacks crosses (every blob read is verified first), so a
copy after each backup moves about what that backup stored. A backup appears there only once all of it is
stored; an interrupted copy lists nothing half-copied, and running it again goes on where it stopped. Both
repositories are held under shared locks (a copy runs beside backups, WAL archiving and gc).

  --to URL                the repository to copy into: a directory or s3://bucket/prefix (the same AWS_*
                          variables serve both repositories)
  --to-passphrase-file F  read its passphrase from file F; without it: the file named by
                          PGKEEP_TO_PASSPHRASE_FILE, else PGKEEP_TO_PASSPHRASE
  --backup ID             copy this backup (repeatable)
  --cluster NAME          copy every backup of this cluster (name or system identifier)
  --all                   copy every backup of every cluster
                          (without --backup, --cluster or --all: every backup of the repository's only cluster)
  --with-wal              also copy all WAL stored for those clusters, for point-in-time recovery from the copy
  --workers N             threads decoding what is read (default: the cores beyond two, at most 8; 0: none)
  --progress              show progress even when stderr is not a terminal
  --json                  print the result as one JSON object

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('copy', {
      args,
      options: {
        ...repoOptions,
        to: { type: 'string' },
        'to-passphrase-file': { type: 'string' },
        backup: { type: 'string', multiple: true },
        cluster: { type: 'string' },
        all: { type: 'boolean' },
        'with-wal': { type: 'boolean' },
        workers: { type: 'string' },
        progress: { type: 'boolean' },
        json: { type: 'boolean' },
      },
    })
    if (!values.to) {
      throw new UsageError('pgkeep copy needs --to', {
        hint: "give the repository to copy into: --to /path or --to s3://bucket/prefix ('pgkeep init' it first)",
      })
    }
    const workers = parseWorkers(values.workers)
    const toPassphrase = (await readPassphrase(values['to-passphrase-file'], ctx.env, ctx.stderr, TO_PASSPHRASE))?.passphrase
    const source = await openRepoForCommand(values, ctx, 'copy')
    const view = eventView(ctx.stderr, {
      progress: values.progress === true,
      describe: (e) =>
        e.phase === 'files' ? `backup ${String(e.detail?.backup)}: ${e.itemsDone ?? 0} of ${e.itemsTotal ?? '?'} files` : `WAL: ${e.itemsDone ?? 0} files`,
    })
    try {
      const target = await openRepoAt(values.to, toPassphrase, ctx, 'copy', { option: '--to' })
      try {
        const result = await copyBackups({
          source: source.repo,
          target: target.repo,
          backups: values.backup,
          cluster: values.cluster,
          all: values.all,
          withWal: values['with-wal'],
          workers,
          signal: ctx.signal,
          onEvent: view.onEvent,
        })
        view.done()
        ctx.stdout.write(values.json ? JSON.stringify(result, null, 2) + '\n' : describe(result))
        return 0
      } finally {
        await target.repo.close().catch(() => {})
        await target.storage.close().catch(() => {})
      }
    } finally {
      view.done()
      await source.repo.close().catch(() => {})
      await source.storage.close().catch(() => {})
    }
  },
}

function describe(r: CopyResult): string {
  const copied = r.backups.filter((b) => b.result === 'copied').length
  const present = r.backups.length - copied
  return [
    `copied ${copied} backup${copied === 1 ? '' : 's'}${present > 0 ? ` (${present} already there)` : ''} and ${r.wal.copied} WAL file${r.wal.copied === 1 ? '' : 's'}${r.wal.present > 0 ? ` (${r.wal.present} already there)` : ''} from '${r.source}' to '${r.target}'`,
    ...r.backups.filter((b) => b.result === 'copied').map((b) => `  ${b.id}`),
    `  read ${formatBytes(r.read.bytes)} (${r.read.blobs} blobs); the target grew by ${formatBytes(r.stored.storedBytes)} (${r.stored.blobs} blobs, ${r.stored.packs} packs); took ${formatDuration(r.durationMs)}`,
    '',
  ].join('\n')
}
