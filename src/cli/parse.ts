// Argument parsing for commands: node:util parseArgs with pgkeep's error style (UsageError with a hint).

import { parseArgs, type ParseArgsConfig } from 'node:util'
import { UsageError } from '../errors.js'

/** parseArgs (strict), turning its errors into UsageError with a hint naming the command's help. */
export function parseCommandArgs<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs<T>({ strict: true, ...config })
  } catch (err) {
    throw new UsageError(
      (err as Error).message.replace(/\.$/, '').replace(/^./, (c) => c.toLowerCase()),
      {
        hint: `run 'pgkeep ${command} --help' for its options`,
        cause: err,
      },
    )
  }
}

/** `--workers N`: worker threads for per-byte work, 0 to 64; undefined leaves the choice to the library. */
export function parseWorkers(text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const n = Number(text)
  if (!/^[0-9]+$/.test(text) || n > 64) throw new UsageError(`invalid --workers '${text}'`, { hint: 'give a number from 0 to 64' })
  return n
}
