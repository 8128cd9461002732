// Starting the prefetch daemon of `wal get` (the same command with --daemon, detached), shared by its two entry
// points: the lean path starts one on the first call of a recovery without loading the CLI, and the full command
// when the lean path could not (src/cli/wal-get-lean.ts, commands/wal-get.ts).

import { spawn } from 'node:child_process'
import { resolve } from 'node:path'
import type { SpoolPaths } from '../wal/prefetch-spool.js'
import type { CliContext } from './command.js'
import { pgkeepInvocation } from './installation.js'
import { resolvePassphraseFile } from './repo-location.js'
import type { WalGetTarget } from './wal-get-args.js'

/**
 * What starts a daemon for `target` (for getViaSpool's `spawnDaemon`): the repository and passphrase file resolved
 * here, the cluster as asked for, the prefetch settings of this call.
 */
export function daemonStarter(
  target: WalGetTarget,
  values: { 'passphrase-file'?: string },
  ctx: CliContext,
  o: { prefetch: number; concurrency: number; lingerMs: number },
): () => Promise<void> {
  return async () =>
    spawnDaemon(target.paths, { repo: target.repo, 'passphrase-file': await resolvePassphraseFile(values, ctx) }, ctx, { cluster: target.cluster, ...o })
}

/**
 * Starts the daemon detached from this process (and from PostgreSQL's wait for restore_command); resolves when
 * that process ends (which this process does not wait for otherwise). It runs through the `pgkeep` command, so with
 * its process settings: without them (glibc handing freed memory back at once) a fetch of a segment took a third
 * more CPU (docs/wal.md §5). PGKEEP_WAL_GET_FAST=0: the launcher need not look for a fast path for it.
 */
function spawnDaemon(
  paths: SpoolPaths,
  values: { repo?: string; 'passphrase-file'?: string },
  ctx: CliContext,
  o: { cluster: string | null; prefetch: number; concurrency: number; lingerMs: number },
): Promise<void> {
  const pgkeep = pgkeepInvocation()
  const args = [
    ...pgkeep.command.slice(1),
    'wal',
    'get',
    '--daemon',
    // Everything it needs is on its command line (the repository and passphrase file resolved here): it reads no
    // config file, which might have changed meanwhile.
    '--no-config',
    '--repo',
    values.repo ?? '',
    '--spool',
    paths.dir,
    '--prefetch',
    String(o.prefetch),
    '--concurrency',
    String(o.concurrency),
    '--linger',
    String(Math.round(o.lingerMs / 1000)),
    ...(o.cluster !== null ? ['--cluster', o.cluster] : []),
    ...(values['passphrase-file'] !== undefined ? ['--passphrase-file', resolve(values['passphrase-file'])] : []),
  ]
  const env = { ...(ctx.env as NodeJS.ProcessEnv), ...pgkeep.env, PGKEEP_WAL_GET_FAST: '0' }
  const child = spawn(pgkeep.command[0]!, args, { detached: true, stdio: 'ignore', env })
  child.unref()
  // An error (it could not start) ends it too: the client notices that no daemon comes and fetches on its own.
  return new Promise((done) => {
    child.once('exit', () => done())
    child.once('error', () => done())
  })
}
