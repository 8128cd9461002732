// Where the repository passphrase comes from: `--passphrase-file F`, else the file named by PGKEEP_PASSPHRASE_FILE,
// else PGKEEP_PASSPHRASE (a copy's target and a new passphrase: the same with TO_ and NEW_). Never the command
// line, where `ps` and shell history would show it (invariant 7).

import { readFile, stat } from 'node:fs/promises'
import type { Writable } from 'node:stream'
import { ConfigError, UsageError } from '../errors.js'

/** parseArgs option of every command that opens a repository. */
export const passphraseOptions = { 'passphrase-file': { type: 'string' } } as const

/** The usage lines for the passphrase sources. */
export const PASSPHRASE_USAGE = `  --passphrase-file F     read the repository passphrase from file F (one trailing newline is ignored);
                          without it: the file named by PGKEEP_PASSPHRASE_FILE, else PGKEEP_PASSPHRASE`

/**
 * Refuses `--passphrase` (and `--passphrase=…`, and the same of `--to-passphrase` and `--new-passphrase`) before
 * parsing, with a hint naming the safe sources.
 */
export function rejectPassphraseArgument(args: readonly string[]): void {
  for (const a of args) {
    const m = /^--(?:([a-z]+)-)?passphrase(?:=|$)/.exec(a)
    if (!m) continue
    const which = m[1] === undefined ? '' : `${m[1]}-`
    throw new UsageError('the passphrase cannot be given on the command line', {
      hint: `other users can read command lines (ps, shell history): set PGKEEP_${which.replace('-', '_').toUpperCase()}PASSPHRASE or use --${which}passphrase-file`,
    })
  }
}

/** The passphrase and where it came from (for messages; never the value itself). */
export interface PassphraseSource {
  readonly passphrase: string
  readonly source: string
}

/** The environment variables a passphrase may come from: a file's name, or the passphrase itself. */
export interface PassphraseVariables {
  readonly file: string
  readonly value: string
}

/** The repository's passphrase: PGKEEP_PASSPHRASE_FILE, PGKEEP_PASSPHRASE. */
export const REPO_PASSPHRASE: PassphraseVariables = { file: 'PGKEEP_PASSPHRASE_FILE', value: 'PGKEEP_PASSPHRASE' }
/** A copy's target repository (`pgkeep copy --to`): PGKEEP_TO_PASSPHRASE_FILE, PGKEEP_TO_PASSPHRASE. */
export const TO_PASSPHRASE: PassphraseVariables = { file: 'PGKEEP_TO_PASSPHRASE_FILE', value: 'PGKEEP_TO_PASSPHRASE' }
/** A new passphrase (`pgkeep key add|passwd`): PGKEEP_NEW_PASSPHRASE_FILE, PGKEEP_NEW_PASSPHRASE. */
export const NEW_PASSPHRASE: PassphraseVariables = { file: 'PGKEEP_NEW_PASSPHRASE_FILE', value: 'PGKEEP_NEW_PASSPHRASE' }

/**
 * Reads the passphrase from the first source that is set: `file`, PGKEEP_PASSPHRASE_FILE, PGKEEP_PASSPHRASE (or
 * the variables `vars` names).
 * Returns undefined when none is set. An unreadable or empty file is a ConfigError naming it; a file that other
 * users may read gets a warning on `stderr` (the passphrase is still used: refusing would stop WAL archiving).
 */
export async function readPassphrase(
  file: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
  stderr?: Writable,
  vars: PassphraseVariables = REPO_PASSPHRASE,
): Promise<PassphraseSource | undefined> {
  const path = file ?? (env[vars.file] || undefined)
  if (path !== undefined) {
    let text: string
    try {
      const mode = (await stat(path)).mode & 0o777
      if ((mode & 0o077) !== 0) {
        stderr?.write(
          `pgkeep: warning: passphrase file '${path}' can be read or written by other users (mode ${mode.toString(8).padStart(4, '0')})\nHINT: chmod 600 '${path}'\n`,
        )
      }
      text = await readFile(path, 'utf8')
    } catch (cause) {
      throw new ConfigError(`cannot read passphrase file '${path}': ${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message}`, {
        cause,
        hint: 'check the path and that this user may read it',
      })
    }
    const passphrase = text.replace(/\r?\n$/, '')
    if (passphrase === '') throw new ConfigError(`passphrase file '${path}' is empty`, { hint: 'write the passphrase on its first line' })
    return { passphrase, source: `file '${path}'` }
  }
  const fromEnv = env[vars.value]
  if (fromEnv !== undefined && fromEnv !== '') return { passphrase: fromEnv, source: vars.value }
  return undefined
}

/** parseArgs option and usage lines of the commands that set a new passphrase (`key add`, `key passwd`). */
export const newPassphraseOptions = { 'new-passphrase-file': { type: 'string' } } as const
export const NEW_PASSPHRASE_USAGE = `  --new-passphrase-file F read the new passphrase from file F; without it: the file named by
                          PGKEEP_NEW_PASSPHRASE_FILE, else PGKEEP_NEW_PASSPHRASE`

/** The new passphrase (`--new-passphrase-file`, PGKEEP_NEW_PASSPHRASE_FILE, PGKEEP_NEW_PASSPHRASE); a UsageError without one. */
export async function requireNewPassphrase(file: string | undefined, env: Readonly<Record<string, string | undefined>>, stderr?: Writable): Promise<string> {
  const found = await readPassphrase(file, env, stderr, NEW_PASSPHRASE)
  if (!found) {
    throw new UsageError('no new passphrase was given', { hint: 'set PGKEEP_NEW_PASSPHRASE or use --new-passphrase-file (never the command line)' })
  }
  return found.passphrase
}
