// The `restore_command` a restored server runs to fetch WAL: `pgkeep wal get --repo URL %f "%p"`, quoted for the
// shell that PostgreSQL runs it through (system()) and escaped for its own `%` placeholders. The passphrase is
// never part of it: the server's environment supplies PGKEEP_PASSPHRASE or PGKEEP_PASSPHRASE_FILE, or a
// `--passphrase-file` path is named.

import { isAbsolute } from 'node:path'
import { UsageError } from '../errors.js'

/** What goes into the restore_command. */
export interface WalGetCommandOptions {
  /** How to run pgkeep, as absolute paths: e.g. `[process.execPath, '/opt/pgkeep/bin/pgkeep.js']`. */
  pgkeep: readonly string[]
  /** The repository as the server's user will reach it: an absolute path, `file:///…` or `s3://…`. */
  repoUrl: string
  /** A passphrase file the server's user can read (its path is written, never its content). */
  passphraseFile?: string
  /** More options of `wal get`, e.g. `['--prefetch', '16']`. */
  extraArgs?: readonly string[]
  /**
   * Environment variables set for the command alone (`NAME=value` before it), e.g. `{ PGKEEP_NODE: '/usr/bin/node' }`
   * with `pgkeep: ['/opt/pgkeep/bin/pgkeep']`: the pgkeep command, whose launcher serves prefetched segments
   * without starting node (docs/wal.md §4.1), with the node it must run.
   */
  env?: Readonly<Record<string, string>>
}

const SAFE_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/

/** Quotes one argument for a POSIX shell: bare when it holds only safe characters, else in single quotes. */
export function shellQuote(arg: string): string {
  if (arg !== '' && SAFE_WORD.test(arg)) return arg
  return `'${arg.replace(/'/g, `'\\''`)}'`
}

/**
 * Doubles `%` in a literal argument: PostgreSQL replaces `%f`, `%p`, `%r` and `%%` in restore_command, so a
 * literal percent sign (an encoded character in a URL or a path) must be written `%%`.
 */
function escapePlaceholders(arg: string): string {
  return arg.replace(/%/g, '%%')
}

/**
 * The restore_command calling `pgkeep wal get` for this repository: `[NAME=value…] <pgkeep…> wal get --repo URL
 * [--passphrase-file F] [extra…] %f "%p"`.
 * @throws UsageError when a path is relative (the server runs the command from its data directory) or the
 *   command would contain a newline
 */
export function walGetRestoreCommand(o: WalGetCommandOptions): string {
  if (o.pgkeep.length === 0) throw new UsageError('no pgkeep command to put into restore_command')
  for (const p of o.pgkeep) {
    if (!isAbsolute(p))
      throw new UsageError(`'${p}' in restore_command is not an absolute path`, { hint: 'the server runs restore_command from its data directory' })
  }
  const url = o.repoUrl
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(url) && !isAbsolute(url)) {
    throw new UsageError(`repository '${url}' is a relative path, which the restored server cannot resolve`, { hint: 'give --repo as an absolute path' })
  }
  if (o.passphraseFile !== undefined && !isAbsolute(o.passphraseFile)) {
    throw new UsageError(`passphrase file '${o.passphraseFile}' is a relative path, which the restored server cannot resolve`, {
      hint: 'give --passphrase-file as an absolute path',
    })
  }
  const vars = Object.entries(o.env ?? {})
  for (const [name] of vars) {
    if (!/^[A-Z_][A-Z0-9_]*$/.test(name))
      throw new UsageError(`'${name}' is not an environment variable name for restore_command`, { hint: 'use capital letters, digits and _' })
  }
  const words = [...o.pgkeep, 'wal', 'get', '--repo', url]
  if (o.passphraseFile !== undefined) words.push('--passphrase-file', o.passphraseFile)
  words.push(...(o.extraArgs ?? []))
  if ([...words, ...vars.map(([, v]) => v)].some((w) => /[\n\r\0]/.test(w))) {
    throw new UsageError('restore_command cannot contain a newline or NUL', { hint: 'rename the path' })
  }
  const assignments = vars.map(([name, value]) => `${name}=${escapePlaceholders(shellQuote(value))} `).join('')
  return `${assignments}${words.map((w) => escapePlaceholders(shellQuote(w))).join(' ')} %f "%p"`
}
