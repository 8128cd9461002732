// The shape of one CLI command. Each command lives in its own file under src/cli/commands/ and is listed, with the
// words that select it and its summary, in src/cli/commands/index.ts. Commands parse their own options (node:util
// parseArgs), call the library, print.

import type { Writable } from 'node:stream'

/** What a command may touch from the outside world; tests and main() fill it. */
export interface CliContext {
  readonly env: NodeJS.ProcessEnv
  readonly stdout: Writable & { isTTY?: boolean }
  readonly stderr: Writable & { isTTY?: boolean }
  /** Aborted on SIGINT/SIGTERM. */
  readonly signal: AbortSignal
  /**
   * The configuration file `--config F` named (main takes it off the arguments), false for `--no-config`;
   * undefined: PGKEEP_CONFIG, else the default locations (config-file.ts).
   */
  readonly configFile?: string | false
  /**
   * The whole command line main() was given, global options included: when this process runs one command (the
   * `pgkeep` command), what the launcher passed it. Set by main().
   */
  readonly argv?: readonly string[]
}

/** A command as `pgkeep --help` lists it; its module is loaded only to run it or show its usage. */
export interface CommandListing {
  /** Words that select the command, e.g. ['check'] or ['wal', 'push']. */
  readonly path: readonly string[]
  /** One line for `pgkeep --help`. */
  readonly summary: string
  /** Imports the command's module. */
  load(): Promise<Command>
}

/** What a command's module exports. */
export interface Command {
  /** Full usage text for `pgkeep <command> --help`. */
  readonly usage: string
  /** Runs the command and resolves to the process exit code. Throws BaseError subclasses for failures. */
  run(args: string[], ctx: CliContext): Promise<number>
}
