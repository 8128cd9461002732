// The global options every command takes (--config FILE, --no-config), wherever they stand on the command line:
// taken off the arguments by main() and by the lean `wal get` path (wal-get-lean.ts), with one reading for both.

import { UsageError } from '../errors.js'

/** Takes `--config F`, `--config=F` and `--no-config` off the arguments, wherever they are (before `--`). */
export function takeGlobalOptions(argv: readonly string[]): { args: string[]; configFile: string | false | undefined } {
  const args: string[] = []
  let configFile: string | false | undefined
  const set = (v: string | false) => {
    if (configFile !== undefined) throw new UsageError('give one of --config and --no-config, once', { hint: "run 'pgkeep help config show'" })
    configFile = v
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--') {
      args.push(...argv.slice(i))
      break
    }
    if (a === '--no-config') set(false)
    else if (a === '--config') {
      const v = argv[++i]
      if (v === undefined || v === '' || v.startsWith('-')) throw new UsageError("option '--config' needs a file", { hint: 'give --config FILE' })
      set(v)
    } else if (a.startsWith('--config=')) {
      const v = a.slice('--config='.length)
      if (v === '') throw new UsageError("option '--config' needs a file", { hint: 'give --config FILE' })
      set(v)
    } else args.push(a)
  }
  return { args, configFile }
}
