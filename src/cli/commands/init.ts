// `pgkeep init`: creates a repository (plain or encrypted) at a directory or S3 location.

import { chmod, chown, lstat, mkdir, readdir } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError, UsageError } from '../../errors.js'
import { findGroupId } from '../../local-server/os-user.js'
import { initRepository } from '../../repo/index.js'
import { openStorage } from '../../storage/open.js'
import type { Command } from '../command.js'
import { parseCommandArgs } from '../parse.js'
import { PASSPHRASE_USAGE, passphraseOptions, readPassphrase, rejectPassphraseArgument } from '../passphrase.js'
import { parseCompression, resolvePassphraseFile, resolveRepo } from '../repo-args.js'

export const initCommand: Command = {
  usage: `usage: pgkeep init --repo URL [--encrypt] [--passphrase-file F] [--compress zstd[:LEVEL]|none] [--pack-size MIB]
                   [--group GROUP]

Creates an empty repository. The location must not hold one already. This is the only command that creates a
repository (besides 'backup --init'): every other one refuses a location that holds none, so a file system that
is not mounted or a mistyped path never silently gets a new, empty repository.

  --repo URL              a directory (/var/lib/pgkeep, file:///…) or s3://bucket/prefix (AWS_* variables apply);
                          without it: PGKEEP_REPO, else 'repository' of the config file
  --encrypt               encrypt everything with AES-256-GCM under a random master key wrapped by the passphrase
${PASSPHRASE_USAGE}
  --compress METHOD       zstd (level 1, the default), zstd:LEVEL (1-19) or none
  --pack-size MIB         target size of pack objects in MiB (default 8)
  --group GROUP           a directory repository readable by GROUP (e.g. postgres): the directory gets that group
                          and mode 02750, and every file and directory pgkeep writes there later is readable by the
                          group (0640, 02750), so that a server running as a member of GROUP can run 'pgkeep wal
                          get' in its restore_command while backups run as another user (root); without it the
                          repository is private to its owner (0600, 0700)
  --json                  print { repository, formatVersion, encrypted, compression, packTargetBytes }

Without the passphrase an encrypted repository cannot be read: keep it safe, apart from the repository.
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('init', {
      args,
      options: {
        repo: { type: 'string' },
        encrypt: { type: 'boolean' },
        compress: { type: 'string' },
        'pack-size': { type: 'string' },
        group: { type: 'string' },
        json: { type: 'boolean' },
        ...passphraseOptions,
      },
    })
    const { url } = await resolveRepo(values, ctx, 'init')
    const compression = values.compress === undefined ? undefined : parseCompression(values.compress)
    const packTargetBytes = parsePackSize(values['pack-size'])
    let encrypt: { passphrase: string } | undefined
    if (values.encrypt) {
      const found = await readPassphrase(await resolvePassphraseFile(values, ctx), ctx.env, ctx.stderr)
      if (!found) {
        throw new UsageError('--encrypt needs a passphrase', { hint: 'set PGKEEP_PASSPHRASE or use --passphrase-file' })
      }
      encrypt = { passphrase: found.passphrase }
    } else if (values['passphrase-file'] !== undefined) {
      throw new UsageError('--passphrase-file without --encrypt', { hint: 'add --encrypt to create an encrypted repository' })
    } else if (ctx.env.PGKEEP_PASSPHRASE || ctx.env.PGKEEP_PASSPHRASE_FILE || (await resolvePassphraseFile(values, ctx))) {
      ctx.stderr.write('pgkeep: warning: a passphrase is set (environment or config file) but --encrypt was not given: the repository is not encrypted\n')
    }
    if (values.group !== undefined) await shareDirectory(url, values.group)
    const storage = await openStorage(url, ctx.env)
    try {
      const repo = await initRepository(storage, {
        encrypt,
        compression,
        packTargetBytes,
        signal: ctx.signal,
        onMessage: (m) => ctx.stderr.write(`pgkeep: ${m.level === 'warning' ? 'warning: ' : ''}${m.text}\n`),
      })
      const c = repo.config
      await repo.close()
      if (values.json) {
        ctx.stdout.write(
          JSON.stringify(
            {
              repository: storage.name,
              formatVersion: c.version,
              encrypted: c.encryption !== null,
              compression: c.compression,
              packTargetBytes: c.packTargetBytes,
            },
            null,
            2,
          ) + '\n',
        )
        return 0
      }
      const comp = c.compression.algorithm === 'zstd' ? `zstd level ${c.compression.level}` : 'no compression'
      ctx.stdout.write(
        `created repository '${storage.name}': format ${c.version}, ${c.encryption ? 'encrypted (AES-256-GCM)' : 'not encrypted'}, ` +
          `${comp}, packs of ${c.packTargetBytes / 1048576} MiB\n`,
      )
      if (c.encryption) ctx.stdout.write('keep the passphrase safe: without it the repository cannot be read\n')
      return 0
    } finally {
      await storage.close()
    }
  },
}

/**
 * Makes the repository directory (missing or empty) belong to `group` with mode 02750 before the repository is
 * created in it: the fs driver then writes everything group-readable (src/storage/fs.ts, fsModesFor). Missing
 * parent directories are created with mode 0755, so that the group can reach the repository.
 */
async function shareDirectory(url: string, group: string): Promise<void> {
  if (/^s3:/i.test(url)) {
    throw new UsageError('--group is for a directory repository', { hint: "an s3:// repository's readers are set by the bucket's policy" })
  }
  const dir = resolve(/^file:/i.test(url) ? fileURLToPath(url) : url)
  const gid = await findGroupId(group)
  if (gid === undefined) throw new UsageError(`there is no group '${group}'`, { hint: 'give the group of the user PostgreSQL runs as, e.g. --group postgres' })
  const st = await lstat(dir).catch(() => undefined)
  if (st && !st.isDirectory()) throw new UsageError(`'${dir}' exists and is not a directory`)
  if (st && (await readdir(dir)).length > 0) {
    throw new UsageError(`--group needs a new or empty directory, and '${dir}' is not empty`, {
      hint: `to share an existing repository: chgrp -R ${group} '${dir}' && chmod -R g+rX,g-w '${dir}' && find '${dir}' -type d -exec chmod g+s {} +`,
    })
  }
  try {
    if (!st) {
      await mkdir(dirname(dir), { recursive: true, mode: 0o755 })
      await mkdir(dir, { mode: 0o700 })
    }
    await chown(dir, -1, gid)
    await chmod(dir, 0o2750)
  } catch (err) {
    throw new ConfigError(`cannot give '${dir}' to group '${group}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      cause: err,
      hint: `run init as root, or as a member of group '${group}'`,
    })
  }
}

function parsePackSize(v: string | undefined): number | undefined {
  if (v === undefined) return undefined
  const mib = Number(v)
  if (v.trim() === '' || !Number.isFinite(mib) || mib <= 0) {
    throw new UsageError(`invalid --pack-size '${v}'`, { hint: 'give the pack size in MiB, e.g. 16' })
  }
  return Math.round(mib * 1048576)
}
