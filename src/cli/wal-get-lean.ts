// The lean entry point of `pgkeep wal get`: PostgreSQL runs restore_command once per WAL file, and loading the
// whole CLI (every command, the repository and storage code, the S3 SDK) cost each call far more than serving a
// prefetched segment. bin/pgkeep.js tries this path first; it serves the file through the prefetch daemon's spool
// with the same shared pieces the full command uses (argument parsing, repository location, the cluster of the
// data directory, the spool's checks, starting a daemon when none serves the spool), and imports nothing else.
// Whenever it is not certain to answer as the full command would (a daemon bound to another repository or
// cluster, --json, --help, a usage error, a daemon that does not start or fails to answer, any error at all) it
// answers nothing and the full command runs from the start: it alone reports errors (exit 255), replaces daemons
// and fetches directly.

import { Writable } from 'node:stream'
import { leaveFastPathKey } from '../wal/fast-path.js'
import { foreignRequest, getViaSpool, prepareSpool, readLiveDaemon } from '../wal/prefetch-spool.js'
import type { CliContext } from './command.js'
import { takeGlobalOptions } from './global-options.js'
import { notInRepositoryLine, parseWalGetArgs, resolveWalGetTarget } from './wal-get-args.js'
import { daemonStarter } from './wal-get-spawn.js'

/** What the lean path may touch: the environment and stderr (it never prints on stdout: --json is the full command's). */
export interface LeanContext {
  readonly env: NodeJS.ProcessEnv
  readonly stderr: Writable
}

/**
 * Runs `pgkeep ARGV` when it is a `wal get` that a live prefetch daemon of the same spool, repository and cluster
 * can serve. Resolves the exit status (0 served, 1 not in the repository), or undefined when the full command must
 * run instead; then nothing was printed (what the config file's reading said is held back, as the full command
 * says it again).
 */
export async function leanWalGet(argv: string[], ctx: LeanContext): Promise<number | undefined> {
  const held: Buffer[] = []
  const hold = new Writable({
    write(chunk: Buffer, _encoding, done) {
      held.push(Buffer.from(chunk))
      done()
    },
  })
  let code: number | undefined
  try {
    code = await serve(argv, ctx, hold)
  } catch {
    code = undefined // the full command meets the same error and reports it
  }
  if (code !== undefined) for (const b of held) ctx.stderr.write(b)
  return code
}

async function serve(argv: string[], ctx: LeanContext, held: Writable): Promise<number | undefined> {
  const global = takeGlobalOptions(argv)
  const [group, command, ...rest] = global.args
  if (group !== 'wal' || command !== 'get' || rest.includes('--help')) return undefined
  const { values, prefetch, concurrency, lingerMs, name, dest } = parseWalGetArgs(rest)
  // The spool's lock is Linux's (see prefetch-spool.ts); --prefetch 0 fetches directly: the full command's cases.
  if (name === undefined || dest === undefined || values.json || prefetch === 0 || process.platform !== 'linux') return undefined
  const cli: CliContext = { env: ctx.env, stdout: held, stderr: held, signal: new AbortController().signal, configFile: global.configFile }
  const target = await resolveWalGetTarget(values, dest, cli)
  await prepareSpool(target.paths)
  // A daemon bound to another repository or cluster retires when asked: the full command asks, and starts the one
  // that replaces it. With none, this call starts one as the full command would (the first call of a recovery).
  const daemon = await readLiveDaemon(target.paths)
  if (daemon !== undefined && foreignRequest(daemon, target) !== undefined) return undefined
  const r = await getViaSpool({
    ...target,
    name,
    dest,
    client: 'lean',
    spawnDaemon: daemon === undefined ? daemonStarter(target, values, cli, { prefetch, concurrency, lingerMs }) : undefined,
    // One: a daemon that does not start is the full command's to retry, and to report.
    maxSpawns: 1,
    // Said at once: the bad copy is gone whichever path goes on to fetch the file.
    onWarning: (text) => ctx.stderr.write(`pgkeep: warning: ${text}\n`),
    // The next calls may then be answered by the launcher without starting node (src/wal/fast-path.ts).
    onAnswered: (response) => leaveFastPathKey({ paths: target.paths, argv, name, dest, request: target, response, cwd: process.cwd() }),
  })
  if (r === 'served') return 0
  if (r === 'missing') {
    held.write(notInRepositoryLine(name))
    return 1
  }
  return undefined
}
