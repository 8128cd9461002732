// `pgkeep init`: creates a repository (plain or encrypted) at a directory or S3 location.

import { UsageError } from '../../errors.js'
import { initRepository } from '../../repo/index.js'
import { openStorage } from '../../storage/open.js'
import type { Command } from '../command.js'
import { parseCommandArgs } from '../parse.js'
import { PASSPHRASE_USAGE, passphraseOptions, readPassphrase, rejectPassphraseArgument } from '../passphrase.js'
import { parseCompression } from '../repo-args.js'

export const initCommand: Command = {
  path: ['init'],
  summary: 'create a repository in a directory or an S3 bucket',
  usage: `usage: pgkeep init --repo URL [--encrypt] [--passphrase-file F] [--compress zstd[:LEVEL]|none] [--pack-size MIB]

Creates an empty repository. The location must not hold one already. This is the only command that creates a
repository (besides 'backup --init'): every other one refuses a location that holds none, so a file system that
is not mounted or a mistyped path never silently gets a new, empty repository.

  --repo URL              a directory (/var/lib/pgkeep, file:///…) or s3://bucket/prefix (AWS_* variables apply)
  --encrypt               encrypt everything with AES-256-GCM under a random master key wrapped by the passphrase
${PASSPHRASE_USAGE}
  --compress METHOD       zstd (level 1, the default), zstd:LEVEL (1-19) or none
  --pack-size MIB         target size of pack objects in MiB (default 16)

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
        ...passphraseOptions,
      },
    })
    if (!values.repo) throw new UsageError('missing --repo', { hint: "give the repository location, e.g. '--repo /var/lib/pgkeep'" })
    const compression = values.compress === undefined ? undefined : parseCompression(values.compress)
    const packTargetBytes = parsePackSize(values['pack-size'])
    let encrypt: { passphrase: string } | undefined
    if (values.encrypt) {
      const found = await readPassphrase(values['passphrase-file'], ctx.env, ctx.stderr)
      if (!found) {
        throw new UsageError('--encrypt needs a passphrase', { hint: 'set PGKEEP_PASSPHRASE or use --passphrase-file' })
      }
      encrypt = { passphrase: found.passphrase }
    } else if (values['passphrase-file'] !== undefined) {
      throw new UsageError('--passphrase-file without --encrypt', { hint: 'add --encrypt to create an encrypted repository' })
    } else if (ctx.env.PGKEEP_PASSPHRASE || ctx.env.PGKEEP_PASSPHRASE_FILE) {
      ctx.stderr.write('pgkeep: warning: a passphrase is set in the environment but --encrypt was not given: the repository is not encrypted\n')
    }
    const storage = await openStorage(values.repo, ctx.env)
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

function parsePackSize(v: string | undefined): number | undefined {
  if (v === undefined) return undefined
  const mib = Number(v)
  if (v.trim() === '' || !Number.isFinite(mib) || mib <= 0) {
    throw new UsageError(`invalid --pack-size '${v}'`, { hint: 'give the pack size in MiB, e.g. 16' })
  }
  return Math.round(mib * 1048576)
}
