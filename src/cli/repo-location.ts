// Where the repository is and which passphrase file opens it: --repo URL, else PGKEEP_REPO, else the config file;
// --passphrase-file, else the passphrase variables, else the config file. Kept apart from opening the repository
// (repo-args.ts) so that the lean `wal get` path (wal-get-lean.ts) resolves the location by these same rules
// without loading repository or storage code.

import { UsageError } from '../errors.js'
import type { CliContext } from './command.js'
import { cliConfig } from './config-file.js'
import { PASSPHRASE_USAGE, passphraseOptions } from './passphrase.js'

export const repoOptions = { repo: { type: 'string' }, ...passphraseOptions } as const

export const REPO_USAGE = `repository options:
  --repo URL              a directory (/path or file:///path) or s3://bucket/prefix (AWS_* variables,
                          AWS_ENDPOINT_URL for MinIO, Ceph and other S3-compatible stores); without it:
                          PGKEEP_REPO, else 'repository' of the config file ('pgkeep config show')
${PASSPHRASE_USAGE}; else 'passphrase_file' of the config file`

/**
 * The repository location: --repo, else PGKEEP_REPO, else the config file's `repository`.
 * @throws UsageError when none is set
 */
export async function resolveRepo(values: { repo?: string }, ctx: CliContext, command: string): Promise<{ url: string; source: string }> {
  if (values.repo) return { url: values.repo, source: '--repo' }
  if (ctx.env.PGKEEP_REPO) return { url: ctx.env.PGKEEP_REPO, source: 'PGKEEP_REPO' }
  const config = await cliConfig(ctx)
  if (config.file?.repository) return { url: config.file.repository, source: `config file '${config.file.path}'` }
  throw new UsageError(`pgkeep ${command} needs a repository`, {
    hint: "give --repo /path/to/repo or --repo s3://bucket/prefix, set PGKEEP_REPO, or set 'repository' in the config file",
  })
}

/**
 * The passphrase file to read: --passphrase-file, else (when neither PGKEEP_PASSPHRASE_FILE nor PGKEEP_PASSPHRASE
 * is set: they come before it) the config file's `passphrase_file`.
 */
export async function resolvePassphraseFile(values: { 'passphrase-file'?: string }, ctx: CliContext): Promise<string | undefined> {
  if (values['passphrase-file'] !== undefined) return values['passphrase-file']
  if (ctx.env.PGKEEP_PASSPHRASE_FILE || ctx.env.PGKEEP_PASSPHRASE) return undefined
  return (await cliConfig(ctx)).file?.passphraseFile
}
