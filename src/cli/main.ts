// CLI entry: finds the command named by the leading words, runs it, and turns errors into a message, a hint and
// an exit status. Only src/cli/ reads process.env or prints.

import type { CliContext, Command } from './command.js'
import { commands } from './commands/index.js'
import { exitCodeFor } from './exit-codes.js'
import { AbortedError, isPgkeepError, UsageError } from '../errors.js'

export async function main(argv: string[], ctx: CliContext = processContext()): Promise<number> {
  try {
    if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
      ctx.stdout.write(globalUsage())
      return argv.length === 0 ? 2 : 0
    }
    if (argv[0] === '--version' || argv[0] === '-V') {
      ctx.stdout.write(`pgkeep ${await packageVersion()}\n`)
      return 0
    }
    const found = findCommand(argv)
    if (!found) {
      throw new UsageError(`unknown command '${argv.slice(0, 2).join(' ')}'`, {
        hint: `run 'pgkeep --help' for the list of commands`,
      })
    }
    const rest = argv.slice(found.path.length)
    // Only --help: inside a command -h is the server host, as in libpq tools.
    if (rest.includes('--help')) {
      ctx.stdout.write(found.usage.endsWith('\n') ? found.usage : found.usage + '\n')
      return 0
    }
    return await found.run(rest, ctx)
  } catch (err) {
    return reportError(err, ctx)
  }
}

/** Prints an error as `pgkeep: error: …` with DETAIL and HINT lines, and returns its exit status. */
export function reportError(err: unknown, ctx: Pick<CliContext, 'stderr' | 'env'>): number {
  if (isPgkeepError(err)) {
    let text = `pgkeep: error: ${err.message}\n`
    const detail = (err as { detail?: string }).detail
    if (detail) text += `DETAIL: ${detail}\n`
    if (err.hint) text += `HINT: ${err.hint}\n`
    if (ctx.env.PGKEEP_DEBUG && err.stack) text += err.stack + '\n'
    ctx.stderr.write(text)
    return exitCodeFor(err.code)
  }
  const e = err as Error
  ctx.stderr.write(`pgkeep: unexpected error: ${e?.message ?? String(err)}\n${e?.stack ?? ''}\n`)
  ctx.stderr.write('HINT: this is a bug in pgkeep; please report it with the output above\n')
  return exitCodeFor(undefined)
}

function findCommand(argv: string[]): Command | undefined {
  // Longest match first, so `wal push` wins over a hypothetical `wal`.
  const sorted = [...commands].sort((a, b) => b.path.length - a.path.length)
  return sorted.find((c) => c.path.every((word, i) => argv[i] === word))
}

function globalUsage(): string {
  const width = Math.max(...commands.map((c) => c.path.join(' ').length))
  const lines = commands.map((c) => `  ${c.path.join(' ').padEnd(width)}  ${c.summary}`)
  return [
    'pgkeep: PostgreSQL physical backups over the replication protocol',
    '',
    'usage: pgkeep <command> [options]',
    '',
    'commands:',
    ...lines,
    '',
    "run 'pgkeep <command> --help' for a command's options",
    '',
  ].join('\n')
}

async function packageVersion(): Promise<string> {
  const { readFile } = await import('node:fs/promises')
  const url = new URL('../../../package.json', import.meta.url)
  return (JSON.parse(await readFile(url, 'utf8')) as { version: string }).version
}

function processContext(): CliContext {
  // The AWS SDK warns once per process (process.emitWarning, on stderr) that its releases after January 2027 need
  // Node 22; through `wal get` and `wal push` that lands in PostgreSQL's log for every WAL file. This variable is
  // the SDK's own switch for it (@aws-sdk/core, emitWarningIfUnsupportedVersion); pgkeep pins the SDK version.
  // A user who set it keeps their value. Tests that run main() in-process do not come through here.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
  const controller = new AbortController()
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(130) // second Ctrl-C: leave now
    controller.abort(new AbortedError(`interrupted by ${sig}`, { hint: 'run the same command again to resume' }))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  return { env: process.env, stdout: process.stdout, stderr: process.stderr, signal: controller.signal }
}
