// Argument parsing for commands: node:util parseArgs with pgkeep's error style (UsageError with a hint).

import { parseArgs, type ParseArgsConfig } from 'node:util'
import { UsageError } from '../errors.js'

/** parseArgs (strict), turning its errors into UsageError with a hint naming the command's help. */
export function parseCommandArgs<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs<T>({ strict: true, ...config })
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\.$/, '').replace(/^./, (c) => c.toLowerCase()), {
      hint: `run 'pgkeep ${command} --help' for its options`,
      cause: err,
    })
  }
}
