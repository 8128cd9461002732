// `pgkeep backup`: a full or incremental base backup with WAL streamed alongside, into the repository.

import { takeBackup, type BackupResult, type BackupType } from '../../backup/backup.js'
import { UsageError } from '../../errors.js'
import { type ExpireResult, expireBackups } from '../../expire/expire.js'
import { listStoredPolicies } from '../../repo/index.js'
import type { Command } from '../command.js'
import { CONNECTION_USAGE, connectionOptions, serverFrom } from '../connection-args.js'
import { formatBytes, formatDuration } from '../format.js'
import { parseCommandArgs, parseWorkers } from '../parse.js'
import { eventView } from '../progress.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'
import { describeExpire } from './expire.js'

export const backupCommand: Command = {
  usage: `usage: pgkeep backup -d CONNINFO --repo URL [options]

Takes a base backup over the replication protocol while streaming its WAL on a second connection. Relation files
are tracked page by page: after the first backup of a cluster, each backup stores only the pages that changed
(found by the server's WAL summaries on PostgreSQL 17+ with summarize_wal = on, else by comparing page hashes).
Every backup restores on its own. The backup is listed only once all its data and WAL are stored. It holds a
shared repository lock; if it cannot keep it (refreshes failing until it expired and maintenance took an
exclusive lock, or it was removed with 'pgkeep unlock --remove-stale'), it stops with exit status 24 and is not
listed.

options:
  --type auto|full|incremental   auto (default): incremental when the cluster has a backup, else full
  --label TEXT            label written into backup_label
  --slot NAME             stream WAL through this physical slot (created when missing) instead of a temporary one
  --checkpoint fast|spread   fast (default) starts at once; spread waits for a paced checkpoint
  --max-rate RATE         limit the server's send rate, e.g. 50M or 800k (bytes per second; 32k to 1G)
  --cluster NAME          a readable name for this cluster, recorded with its first backup; with a config file,
                          also the cluster whose conninfo to use when -d is not given
  --init                  create the repository if the location holds none (encrypted when a passphrase is set);
                          without it, a location without a repository is an error, as for every command but init
  --compress zstd[:LEVEL]|none   with --init: the compression of the repository it creates (default zstd:1)
  --workers N             threads for hashing and compression (default: the cores beyond one for a full backup,
                          beyond two for an incremental, at most 4; 0: none)
  --expire                after the backup, apply the retention policy stored for the cluster ('pgkeep policy
                          set'; see 'pgkeep expire --help') and list what it removed
  --progress              show progress even when stderr is not a terminal
  --json                  print the result as one JSON object

${REPO_USAGE}

${CONNECTION_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('backup', {
      args,
      options: {
        ...connectionOptions,
        ...repoOptions,
        type: { type: 'string' },
        label: { type: 'string' },
        slot: { type: 'string' },
        checkpoint: { type: 'string' },
        'max-rate': { type: 'string' },
        cluster: { type: 'string' },
        init: { type: 'boolean' },
        compress: { type: 'string' },
        workers: { type: 'string' },
        expire: { type: 'boolean' },
        progress: { type: 'boolean' },
        json: { type: 'boolean' },
      },
    })
    const type = (values.type ?? 'auto') as BackupType
    if (!['auto', 'full', 'incremental'].includes(type)) throw new UsageError(`invalid --type '${values.type}'`, { hint: 'use auto, full or incremental' })
    const checkpoint = values.checkpoint ?? 'fast'
    if (checkpoint !== 'fast' && checkpoint !== 'spread') throw new UsageError(`invalid --checkpoint '${checkpoint}'`, { hint: 'use fast or spread' })
    const maxRateKbps = values['max-rate'] === undefined ? undefined : parseRate(values['max-rate'])
    const workers = parseWorkers(values.workers)
    if (values.compress !== undefined && !values.init) {
      throw new UsageError('--compress applies only to a repository this backup creates', {
        hint: "add --init, or leave --compress out (it is chosen at 'pgkeep init')",
      })
    }
    const { server } = await serverFrom(values, ctx, 'backup')
    const opened = await openRepoForCommand(values, ctx, 'backup', { init: values.init === true, compress: values.compress })
    if (opened.created) ctx.stderr.write(`pgkeep: created ${opened.repo.encrypted ? 'an encrypted' : 'an unencrypted'} repository at ${opened.repo.location}\n`)
    // --expire needs a stored policy: say so before the backup rather than after it.
    if (values.expire && (await listStoredPolicies(opened.repo, { signal: ctx.signal })).length === 0) {
      await opened.repo.close().catch(() => {})
      throw new UsageError('backup --expire applies the stored retention policy, and the repository has none', {
        hint: "store one with 'pgkeep policy set --repo URL --keep-…' (or run 'pgkeep expire' with rules after the backup)",
      })
    }
    const view = eventView(ctx.stderr, {
      progress: values.progress === true,
      describe: (p) => (typeof p.detail?.storedBytes === 'number' && p.detail.storedBytes > 0 ? `stored ${formatBytes(p.detail.storedBytes)}` : ''),
    })
    try {
      const result = await takeBackup({
        server,
        repo: opened.repo,
        type,
        label: values.label,
        slot: values.slot,
        checkpoint,
        maxRateKbps,
        clusterName: values.cluster,
        workers,
        signal: ctx.signal,
        onEvent: view.onEvent,
      })
      view.done()
      if (!values.expire) {
        ctx.stdout.write(values.json ? JSON.stringify(result, null, 2) + '\n' : describe(result))
        return 0
      }
      if (!values.json) ctx.stdout.write(describe(result))
      let expired: ExpireResult
      try {
        expired = await expireBackups({ repo: opened.repo, cluster: result.systemId, signal: ctx.signal, onEvent: view.onEvent })
      } catch (err) {
        if (values.json) ctx.stdout.write(JSON.stringify(result, null, 2) + '\n')
        ctx.stderr.write(`pgkeep: backup ${result.id} is stored, but expiring after it failed:\n`)
        throw err
      }
      view.done()
      ctx.stdout.write(values.json ? JSON.stringify({ ...result, expire: expired }, null, 2) + '\n' : describeExpire(expired))
      return 0
    } finally {
      view.done()
      await opened.repo.close().catch(() => {})
    }
  },
}

function describe(r: BackupResult): string {
  const how =
    r.type === 'full'
      ? 'full'
      : `incremental on ${r.parent} (changes found by ${r.incrementalMode === 'server' ? "the server's WAL summaries" : 'comparing pages'})`
  return [
    `backup ${r.id} of cluster ${r.systemId}${r.clusterName !== r.systemId ? ` (${r.clusterName})` : ''}: ${how}`,
    `  ${r.files} files, ${formatBytes(r.sizeBytes)}; the repository grew by ${formatBytes(r.storedBytes)} (+ ${formatBytes(r.walStoredBytes)} WAL)`,
    `  WAL ${r.startLsn} .. ${r.endLsn} on timeline ${r.timeline}; took ${formatDuration(r.durationMs)}`,
    ...(r.checksumFailures > 0 ? [`  WARNING: the server reported ${r.checksumFailures} page checksum failure(s); see the messages above`] : []),
    '',
  ].join('\n')
}

/** `50M`, `800k`, `1G` or plain bytes per second → kB/s as BASE_BACKUP's MAX_RATE wants. */
export function parseRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([kKmMgG]?)$/.exec(text.trim())
  if (!m) throw new UsageError(`invalid --max-rate '${text}'`, { hint: 'give bytes per second with an optional k, M or G suffix, e.g. 50M' })
  const bytes = Number(m[1]) * ({ '': 1, k: 1024, m: 1 << 20, g: 1 << 30 } as Record<string, number>)[m[2].toLowerCase()]
  const kbps = Math.round(bytes / 1024)
  if (kbps < 32 || kbps > 1048576) throw new UsageError(`--max-rate ${text} is out of range`, { hint: 'PostgreSQL accepts 32k to 1G per second' })
  return kbps
}
