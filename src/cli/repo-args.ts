// Opening the repository that the repository options name (resolved in repo-location.ts: --repo URL,
// --passphrase-file F and their fallbacks, re-exported here for the commands). Only `init` creates a repository (and `backup --init`, which says so): a location that holds
// none is an error, never a new repository created on the spot, because an unmounted file system, a mistyped
// prefix or a passphrase missing from an archiver's environment would otherwise get a fresh (even unencrypted)
// repository, and PostgreSQL would recycle WAL that never reached the real one.

import { resolve } from 'node:path'
import { RepoFormatError, UsageError } from '../errors.js'
import { initRepository, locationIsEmpty, openRepository, type Repository } from '../repo/index.js'
import { openStorage } from '../storage/open.js'
import type { Storage } from '../storage/storage.js'
import type { CliContext } from './command.js'
import { readPassphrase } from './passphrase.js'
import { resolvePassphraseFile, resolveRepo } from './repo-location.js'

export { REPO_USAGE, repoOptions, resolvePassphraseFile, resolveRepo } from './repo-location.js'

export interface OpenedRepo {
  repo: Repository
  storage: Storage
  /** The repository's location as given (--repo, PGKEEP_REPO or the config file). */
  url: string
  /** The passphrase file used, when one was (--passphrase-file or the config file), as an absolute path. */
  passphraseFile?: string
  /** The passphrase, to open a second instance; never printed. */
  passphrase?: string
  /** True when this call created the repository. */
  created: boolean
  /** Another instance on the same storage (backup streams WAL through one). */
  openAnother(): Promise<Repository>
}

/**
 * Opens the repository `--repo` names. A location without a repository (empty or missing) is a RepoFormatError
 * that names the location, unless `init` is set: then a repository is created there (encrypted when a passphrase
 * is available: PGKEEP_PASSPHRASE, PGKEEP_PASSPHRASE_FILE or --passphrase-file) and `created` says so.
 */
export async function openRepoForCommand(
  values: { repo?: string; 'passphrase-file'?: string },
  ctx: CliContext,
  command: string,
  o: { init?: boolean; compress?: string; index?: 'all' | 'meta' } = {},
): Promise<OpenedRepo> {
  const { url } = await resolveRepo(values, ctx, command)
  const passphraseFile = await resolvePassphraseFile(values, ctx)
  const passphrase = (await readPassphrase(passphraseFile, ctx.env, ctx.stderr))?.passphrase
  return openRepoAt(url, passphrase, ctx, command, { ...o, passphraseFile })
}

/**
 * Opens the repository at `url` with `passphrase` (see openRepoForCommand): for a command's second repository
 * (`copy --to`), whose location and passphrase come from options of their own (`option` names it in messages).
 */
export async function openRepoAt(
  url: string,
  passphrase: string | undefined,
  ctx: CliContext,
  command: string,
  o: { init?: boolean; compress?: string; option?: string; passphraseFile?: string; index?: 'all' | 'meta' } = {},
): Promise<OpenedRepo> {
  const storage = await openStorage(url, ctx.env)
  let created = false
  let repo: Repository
  const holdsNothing = () => locationIsEmpty(storage, ctx.signal)
  if (o.init && (await holdsNothing())) {
    repo = await initRepository(storage, {
      ...(passphrase ? { encrypt: { passphrase } } : {}),
      ...(o.compress !== undefined ? { compression: parseCompression(o.compress) } : {}),
      signal: ctx.signal,
      onMessage: (m) => ctx.stderr.write(`pgkeep: ${m.level === 'warning' ? 'warning: ' : ''}${m.text}\n`),
    })
    created = true
  } else {
    try {
      repo = await openRepository(storage, { passphrase, signal: ctx.signal, index: o.index })
    } catch (err) {
      // Not a repository: say so plainly when there is nothing at all (the usual cause is the location, not damage).
      if (err instanceof RepoFormatError && (await holdsNothing())) throw noRepository(storage.name, url, command, o.option)
      throw err
    }
  }
  return {
    repo,
    storage,
    url,
    passphraseFile: o.passphraseFile === undefined ? undefined : resolve(o.passphraseFile),
    passphrase,
    created,
    openAnother: () => openRepository(storage, { passphrase, signal: ctx.signal }),
  }
}

/** The error for a location that holds no repository at all (empty, or not there). */
function noRepository(location: string, url: string, command: string, option = '--repo'): RepoFormatError {
  return new RepoFormatError(`there is no repository at '${location}': the location is empty or does not exist`, {
    hint:
      `check ${option} and that this user, with this environment, sees the repository there (a file system that is not ` +
      `mounted, a mistyped path or prefix, other AWS_* variables); only if you mean to start a new repository there, ` +
      `create it with 'pgkeep init --repo ${url}'${command === 'backup' ? ' (or give this backup --init)' : ''}`,
  })
}

/** `zstd`, `zstd:LEVEL` (1–19) or `none`. */
export function parseCompression(text: string): { level: number } | 'none' {
  if (text === 'none') return 'none'
  const m = /^zstd(?::(\d+))?$/.exec(text)
  const level = m ? Number(m[1] ?? 3) : NaN
  if (!m || level < 1 || level > 19) {
    throw new UsageError(`invalid compression '${text}'`, { hint: 'use zstd, zstd:LEVEL with LEVEL 1 to 19, or none' })
  }
  return { level }
}
