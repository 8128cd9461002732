// CLI entry: takes the global options off the arguments (--config F, --no-config), finds the command named by the
// leading words (or shows help: `pgkeep help CMD`, `pgkeep CMD --help`, `pgkeep wal`), runs it, and turns errors
// into a message, a hint and an exit status: as text on stderr, or with --json as one object on stdout.
// Only src/cli/ reads process.env or prints.

import type { CliContext, CommandListing } from './command.js'
import { commands } from './commands/index.js'
import { closestWord } from './did-you-mean.js'
import { exitCodeFor } from './exit-codes.js'
import { takeGlobalOptions } from './global-options.js'
import { AbortedError, isPgkeepError, UsageError } from '../errors.js'

export async function main(argv: string[], ctx: CliContext = processContext()): Promise<number> {
  // Errors are JSON when the command line asks for JSON, even when it is wrong otherwise.
  const json = optionWords(argv).includes('--json')
  try {
    const global = takeGlobalOptions(argv)
    const args = global.args
    const run: CliContext = { ...ctx, argv, ...(global.configFile === undefined ? {} : { configFile: global.configFile }) }
    if (args.length === 0 || args[0] === '--help' || args[0] === '-h') {
      run.stdout.write(globalUsage())
      return args.length === 0 ? 2 : 0
    }
    if (args[0] === '--version' || args[0] === '-V') {
      run.stdout.write(`pgkeep ${await packageVersion()}\n`)
      return 0
    }
    if (args[0] === 'help') {
      run.stdout.write(await helpFor(args.slice(1)))
      return 0
    }
    const found = findCommand(args)
    if (!found) {
      // A group's first word alone (`pgkeep wal`, `pgkeep wal --help`): its commands.
      const group = groupOf(args[0]!)
      if (group && (args.length === 1 || args[1] === '--help' || args[1] === '-h')) {
        run.stdout.write(groupUsage(args[0]!, group))
        return args.length === 1 ? 2 : 0
      }
      throw unknownCommand(args)
    }
    const rest = args.slice(found.path.length)
    const command = await found.load()
    // Only --help: inside a command -h is the server host, as in libpq tools.
    if (rest.includes('--help')) {
      run.stdout.write(usageOf(command))
      return 0
    }
    return await command.run(rest, run)
  } catch (err) {
    return reportError(err, ctx, { json })
  }
}

/**
 * Prints an error and returns its exit status: as `pgkeep: error: …` with DETAIL and HINT lines on stderr, or with
 * `json` as one line `{"error":{"code","message","hint"}}` on stdout (the status is the same).
 */
export function reportError(err: unknown, ctx: Pick<CliContext, 'stderr' | 'env'> & Partial<Pick<CliContext, 'stdout'>>, o: { json?: boolean } = {}): number {
  const known = isPgkeepError(err)
  const e = err as Error & { code?: string; hint?: string; detail?: string }
  if (o.json && ctx.stdout) {
    const error = known
      ? { code: e.code, message: e.message, hint: e.hint ?? null, ...(e.detail ? { detail: e.detail } : {}) }
      : { code: 'UNEXPECTED', message: e?.message ?? String(err), hint: 'this is a bug in pgkeep; please report it with PGKEEP_DEBUG=1 set' }
    ctx.stdout.write(`${JSON.stringify({ error })}\n`)
    if (ctx.env.PGKEEP_DEBUG && e?.stack) ctx.stderr.write(`${e.stack}\n`)
    return exitCodeFor(known ? e.code : undefined)
  }
  if (known) {
    let text = `pgkeep: error: ${e.message}\n`
    if (e.detail) text += `DETAIL: ${e.detail}\n`
    if (e.hint) text += `HINT: ${e.hint}\n`
    if (ctx.env.PGKEEP_DEBUG && e.stack) text += e.stack + '\n'
    ctx.stderr.write(text)
    return exitCodeFor(e.code)
  }
  ctx.stderr.write(`pgkeep: unexpected error: ${e?.message ?? String(err)}\n${e?.stack ?? ''}\n`)
  ctx.stderr.write('HINT: this is a bug in pgkeep; please report it with the output above\n')
  return exitCodeFor(undefined)
}

/** The arguments before `--` (after it, every word is a value). */
function optionWords(argv: readonly string[]): readonly string[] {
  const end = argv.indexOf('--')
  return end < 0 ? argv : argv.slice(0, end)
}

function findCommand(argv: readonly string[]): CommandListing | undefined {
  // Longest match first, so `wal push` wins over a hypothetical `wal`.
  const sorted = [...commands].sort((a, b) => b.path.length - a.path.length)
  return sorted.find((c) => c.path.every((word, i) => argv[i] === word))
}

/** The commands whose first word is `word`, when it names a group (`wal` → wal stream, wal push, wal get). */
function groupOf(word: string): CommandListing[] | undefined {
  const members = commands.filter((c) => c.path.length > 1 && c.path[0] === word)
  return members.length > 0 ? members : undefined
}

/** Every way to name a command: its full path, for did-you-mean. */
const commandNames = () => commands.map((c) => c.path.join(' '))

function unknownCommand(args: readonly string[]): UsageError {
  const group = groupOf(args[0]!)
  const given = group ? args.slice(0, 2).join(' ') : args[0]!
  const near = closestWord(given, group ? group.map((c) => c.path.join(' ')) : [...new Set(commands.map((c) => c.path[0]!))])
  return new UsageError(`unknown command '${given}'`, {
    hint: `${near ? `did you mean 'pgkeep ${near}'? ` : ''}run 'pgkeep help' for the list of commands`,
  })
}

/** `pgkeep help [WORDS]`: the list of commands, a group's commands, or one command's usage. */
async function helpFor(words: readonly string[]): Promise<string> {
  if (words.length === 0) return globalUsage()
  const found = findCommand(words)
  if (found && found.path.length === words.length) return usageOf(await found.load())
  const group = groupOf(words[0]!)
  if (group && words.length === 1) return groupUsage(words[0]!, group)
  const near = closestWord(words.join(' '), [...commandNames(), ...new Set(commands.filter((c) => c.path.length > 1).map((c) => c.path[0]!))])
  throw new UsageError(`no help for '${words.join(' ')}': there is no such command`, {
    hint: `${near ? `did you mean 'pgkeep help ${near}'? ` : ''}run 'pgkeep help' for the list of commands`,
  })
}

const usageOf = (c: { usage: string }) => (c.usage.endsWith('\n') ? c.usage : c.usage + '\n')

function commandLines(list: readonly CommandListing[]): string[] {
  const width = Math.max(...list.map((c) => c.path.join(' ').length))
  return list.map((c) => `  ${c.path.join(' ').padEnd(width)}  ${c.summary}`)
}

function globalUsage(): string {
  return [
    'pgkeep: PostgreSQL physical backups over the replication protocol',
    '',
    'usage: pgkeep [--config FILE | --no-config] <command> [options]',
    '',
    'commands:',
    ...commandLines(commands),
    '',
    "run 'pgkeep help <command>' (or 'pgkeep <command> --help') for a command's options; every command takes",
    '--json (errors too: one {"error": {code, message, hint}} object on stdout) and --config FILE',
    '',
  ].join('\n')
}

function groupUsage(word: string, group: readonly CommandListing[]): string {
  return [
    `usage: pgkeep ${word} <command> [options]`,
    '',
    'commands:',
    ...commandLines(group),
    '',
    `run 'pgkeep help ${word} <command>' for a command's options`,
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
