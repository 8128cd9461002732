// The command line of `pgkeep wal get`, read one way by both of its entry points: the full command
// (commands/wal-get.ts) and the lean path (wal-get-lean.ts), so they never disagree on what was asked.

import { UsageError } from '../errors.js'
import { isFetchableWalName } from '../pg/wal-names.js'
import { systemIdNearWalPath } from '../wal/local-cluster.js'
import { defaultSpoolDir, type SpoolPaths, spoolPaths } from '../wal/prefetch-spool.js'
import type { CliContext } from './command.js'
import { parseCommandArgs } from './parse.js'
import { rejectPassphraseArgument } from './passphrase.js'
import { repoOptions, resolveRepo } from './repo-location.js'

/** Seconds the prefetch daemon stays after the last request: short, and longer than a standby's 5 s retry. */
export const DEFAULT_LINGER_S = 10

const RESTORE_COMMAND_HINT = "use restore_command = 'pgkeep wal get --repo URL %f %p'"

/** `wal get`'s arguments, parsed and checked; `name` and `dest` are absent with --daemon only. */
export function parseWalGetArgs(args: string[]) {
  rejectPassphraseArgument(args)
  const { values, positionals } = parseCommandArgs('wal get', {
    args,
    allowPositionals: true,
    options: {
      ...repoOptions,
      cluster: { type: 'string' },
      prefetch: { type: 'string' },
      concurrency: { type: 'string' },
      spool: { type: 'string' },
      linger: { type: 'string' },
      daemon: { type: 'boolean' },
      json: { type: 'boolean' },
    },
  })
  const prefetch = count(values.prefetch, 'prefetch', 8, 0, 256)
  const concurrency = count(values.concurrency, 'concurrency', 4, 1, 64)
  const lingerMs = count(values.linger, 'linger', DEFAULT_LINGER_S, 1, 86_400) * 1000
  const common = { values, prefetch, concurrency, lingerMs }
  if (values.daemon) return { ...common, name: undefined, dest: undefined }
  if (positionals.length !== 2) {
    throw new UsageError(`pgkeep wal get takes NAME and DEST, got ${positionals.length} argument(s)`, { hint: RESTORE_COMMAND_HINT })
  }
  const [name, dest] = positionals as [string, string]
  if (!isFetchableWalName(name)) throw new UsageError(`'${name}' is not a WAL file name`, { hint: RESTORE_COMMAND_HINT })
  return { ...common, name, dest }
}

/** Which repository, cluster and spool a `wal get` to `dest` means. */
export interface WalGetTarget {
  /** The repository location (--repo, PGKEEP_REPO or the config file). */
  repo: string
  /** The system identifier of the data directory restore_command runs in (pg_control), when readable. */
  localSystemId: string | undefined
  /** --cluster as given, else localSystemId, else null (the repository's only cluster). */
  cluster: string | null
  paths: SpoolPaths
}

/** The {@link WalGetTarget} of `wal get` to `dest`: one decision for both entry points. */
export async function resolveWalGetTarget(values: { repo?: string; cluster?: string; spool?: string }, dest: string, ctx: CliContext): Promise<WalGetTarget> {
  const { url } = await resolveRepo(values, ctx, 'wal get')
  // The cluster of the data directory restore_command runs in: a --cluster must resolve to that one.
  const localSystemId = await systemIdNearWalPath(dest)
  return { repo: url, localSystemId, cluster: values.cluster ?? localSystemId ?? null, paths: spoolPaths(values.spool ?? defaultSpoolDir(dest)) }
}

/** What `wal get` says on stderr when the repository does not have the file (exit 1). */
export const notInRepositoryLine = (name: string) => `pgkeep: ${name} is not in the repository\n`

function count(text: string | undefined, option: string, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback
  const n = Number(text)
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`invalid --${option} '${text}'`, { hint: `give a whole number from ${min} to ${max}` })
  return n
}
