// `pgkeep wal get`: restore_command. Writes one WAL file from the repository to DEST (exit 0), or exits 1 at once
// when the repository does not have it. Served through a prefetch spool kept by a background daemon (the same
// command with --daemon), so recovery does not wait one repository round trip per segment.

import { appendFile, chmod, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { UsageError } from '../../errors.js'
import { writeFileAtomic } from '../../storage/durable-file.js'
import { resolveWalGetCluster } from '../../wal/cluster-id.js'
import { leaveFastPathKey } from '../../wal/fast-path.js'
import { acquireSpool, runPrefetchDaemon } from '../../wal/prefetch-daemon.js'
import { getViaSpool, prepareSpool, spoolPaths, type SpoolPaths } from '../../wal/prefetch-spool.js'
import { fetchWalFile } from '../../wal/wal-fetch.js'
import type { CliContext, Command } from '../command.js'
// main.ts lists the commands without importing them (commands/index.ts loads each when it runs): no cycle.
import { reportError } from '../main.js'
import { openRepoForCommand, REPO_USAGE } from '../repo-args.js'
import { DEFAULT_LINGER_S, notInRepositoryLine, parseWalGetArgs, resolveWalGetTarget } from '../wal-get-args.js'
import { daemonStarter } from '../wal-get-spawn.js'

/** Exit status for failures other than "not in the repository": above 125, PostgreSQL stops recovery (FATAL). */
export const WAL_GET_FAILURE_EXIT = 255

/** `pgkeep wal get NAME DEST` (and its hidden `--daemon` mode). Exit 0 served, 1 not in the repository, 255 anything else. */
export const walGetCommand: Command = {
  usage: `usage: pgkeep wal get --repo URL [options] NAME DEST

For restore_command = 'pgkeep wal get --repo URL %f %p'. Writes WAL file NAME (a segment, a timeline history
file or a backup history file) to DEST and exits 0, or exits 1 at once when the repository does not have it, so
recovery ends cleanly at the end of the archive. A segment stored only as a partial segment (the last one a
streamer had when it stopped) is served zero-padded under its plain name, so recovery replays that WAL too.

Any other failure (repository unreachable, damaged data, wrong passphrase, a cluster the repository does not
know) exits ${WAL_GET_FAILURE_EXIT}: PostgreSQL then stops with FATAL instead of taking the failure for the end of the
archive and ending recovery early.

Segments are prefetched: a background process (started by the first call, gone --linger seconds after the last
request) keeps the repository open and fetches the next --prefetch segments in parallel into a spool directory,
from which later calls are served by a rename once each file passed its checks. One such process per spool; it
serves one repository and one cluster, and is replaced when asked for others or when the repository at its
location was replaced. While it serves the repository and cluster asked for, a call loads nothing of pgkeep but
what it needs to ask it (see docs/wal.md, "Lean entry point").

options:
  --cluster NAME|SYSTEMID the cluster (default: the one of DEST's data directory, where restore_command runs, else
                          the only cluster in the repository); it must be one the repository holds
  --prefetch N            segments to fetch ahead (default 8; 0 disables prefetching and the background process)
  --concurrency N         parallel fetches of the background process (default 4)
  --spool DIR             spool directory, the user's own with mode 0700 (default: .pgkeep-prefetch beside DEST,
                          i.e. in pg_wal; created when missing)
  --linger S              the background process exits S seconds after the last request (default ${DEFAULT_LINGER_S})
  --json                  print { name, found, dest } (or { error }) on stdout

${REPO_USAGE}
`,
  async run(args, ctx) {
    try {
      return await runGet(args, ctx)
    } catch (err) {
      // Every failure but "not in the repository", usage errors included: a misconfigured restore_command must
      // stop recovery, not end it as if the archive were exhausted. Printed as for every command; the status is
      // this command's own.
      reportError(err, ctx, { json: args.includes('--json') })
      // The daemon exits 0 or 1 only (see runDaemon).
      return args.includes('--daemon') ? 1 : WAL_GET_FAILURE_EXIT
    }
  },
}

async function runGet(args: string[], ctx: CliContext): Promise<number> {
  const { values, prefetch, concurrency, lingerMs, name, dest } = parseWalGetArgs(args)
  if (name === undefined || dest === undefined) return runDaemon(values, ctx, { prefetch, concurrency, lingerMs })
  const target = await resolveWalGetTarget(values, dest, ctx)
  const { localSystemId, paths } = target
  const notFound = () => {
    if (values.json) ctx.stdout.write(`${JSON.stringify({ name, found: false })}\n`)
    else ctx.stderr.write(notInRepositoryLine(name))
    return 1
  }
  const served = () => {
    if (values.json) ctx.stdout.write(`${JSON.stringify({ name, found: true, dest })}\n`)
    return 0
  }
  // The spool's lock is an abstract Unix socket, which only Linux has; elsewhere every call fetches directly.
  if (prefetch > 0 && process.platform === 'linux') {
    await prepareSpool(paths)
    const r = await getViaSpool({
      ...target,
      name,
      dest,
      spawnDaemon: daemonStarter(target, values, ctx, { prefetch, concurrency, lingerMs }),
      onWarning: (text) => ctx.stderr.write(`pgkeep: warning: ${text}\n`),
      // The next calls may then be answered by the launcher without starting node (src/wal/fast-path.ts): from the
      // second call of a recovery on (the first asks for a timeline history file, seldom there).
      onAnswered: async (response) => {
        if (ctx.argv) await leaveFastPathKey({ paths, argv: ctx.argv, name, dest, request: target, response, cwd: process.cwd() })
      },
    })
    if (r === 'served') return served()
    if (r === 'missing') return notFound()
  }
  const opened = await openRepoForCommand(values, ctx, 'wal get')
  try {
    const { systemId } = await resolveWalGetCluster(opened.repo, { selector: values.cluster, localSystemId, signal: ctx.signal })
    const bytes = await fetchWalFile(opened.repo, systemId, name, { signal: ctx.signal })
    if (!bytes) return notFound()
    const tmp = `${dest}.pgkeep-${randomBytes(4).toString('hex')}`
    await writeFile(tmp, bytes, { mode: 0o600 })
    await rename(tmp, dest).catch(async (err) => {
      await unlink(tmp).catch(() => {})
      throw err
    })
    return served()
  } finally {
    await opened.repo.close().catch(() => {})
  }
}

/** The background process: takes the spool, opens the repository once, serves until idle or retired. */
async function runDaemon(
  values: { repo?: string; cluster?: string; spool?: string; 'passphrase-file'?: string },
  ctx: CliContext,
  o: { prefetch: number; concurrency: number; lingerMs: number },
): Promise<number> {
  if (!values.spool) throw new UsageError('--daemon needs --spool')
  // Orphaned, the daemon is adopted by PID 1, which in a container may be the postmaster itself: it takes any
  // exit status but 0 and 1 of a child for a crashed backend and restarts the whole server. So nothing but 0 or 1.
  const paths = spoolPaths(values.spool)
  let logged = Promise.resolve()
  const log = (line: string) => {
    logged = logged.then(() => appendFile(paths.logFile, `${new Date().toISOString()} ${line}\n`, { mode: 0o600 })).catch(() => {})
  }
  const bail = (err: unknown) => {
    log(`daemon crashed: ${String((err as Error)?.stack ?? err)}`)
    void logged.finally(() => process.exit(1))
  }
  process.on('uncaughtException', bail)
  process.on('unhandledRejection', bail)
  await prepareSpool(paths)
  const binding = { repo: values.repo ?? '', cluster: values.cluster ?? null }
  const lock = await acquireSpool(paths, binding)
  if (!lock) return 0 // another daemon serves this spool
  let opened: Awaited<ReturnType<typeof openRepoForCommand>> | undefined
  let code = 1
  try {
    // Appended to across daemons (one recovery may start several); restarted when it grows large. Private: it
    // names the repository and the WAL served.
    if (((await stat(paths.logFile).catch(() => undefined))?.size ?? 0) > 1 << 20) await writeFile(paths.logFile, '', { mode: 0o600 }).catch(() => {})
    await chmod(paths.logFile, 0o600).catch(() => {})
    opened = await openRepoForCommand(values, ctx, 'wal get')
    const { systemId } = await resolveWalGetCluster(opened.repo, { selector: values.cluster, signal: ctx.signal })
    await runPrefetchDaemon({
      repo: opened.repo,
      paths,
      binding,
      systemId,
      prefetchCount: o.prefetch,
      concurrency: o.concurrency,
      lingerMs: o.lingerMs,
      signal: ctx.signal,
      log,
    })
    code = 0
  } catch (err) {
    log(`daemon failed: ${(err as Error).message}`)
    // Waiting clients fetch on their own (and report the error properly) instead of waiting for a daemon.
    await failPendingRequests(paths, (err as Error).message)
  } finally {
    await opened?.repo.close().catch(() => {})
    await opened?.storage.close().catch(() => {})
    await lock.release({ atExit: true })
    await logged
  }
  // The spool's lock goes with this process (see SpoolLock.release): one daemon process per spool at any moment.
  process.exit(code)
}

async function failPendingRequests(paths: SpoolPaths, message: string): Promise<void> {
  for (const id of await readdir(paths.reqDir).catch(() => [] as string[])) {
    if (id.startsWith('.')) continue
    await writeFileAtomic(join(paths.respDir, id), JSON.stringify({ status: 'error', message }), { tmpDir: paths.tmpDir }).catch(() => {})
    await unlink(join(paths.reqDir, id)).catch(() => {})
  }
}
