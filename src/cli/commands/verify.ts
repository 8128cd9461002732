// `pgkeep verify`: checks a repository's structure and, on request, re-reads and re-hashes its data; lists every
// damaged object and exits non-zero when there is one.

import { IntegrityError, UsageError } from '../../errors.js'
import { openRepository, verifyRepository, type VerifyResult } from '../../repo/index.js'
import { openStorage } from '../../storage/open.js'
import { verifyBackups } from '../../verify/verify-backups.js'
import type { Command } from '../command.js'
import { exitCodeFor } from '../exit-codes.js'
import { parseCommandArgs } from '../parse.js'
import { readPassphrase, rejectPassphraseArgument } from '../passphrase.js'
import { REPO_USAGE, repoOptions, resolvePassphraseFile, resolveRepo } from '../repo-args.js'

export const verifyCommand: Command = {
  usage: `usage: pgkeep verify --repo URL [--read-data[=PERCENT]] [--json]

Checks that every index object matches the packs it lists, every pack header is intact, every record decodes and
references only indexed blobs, and that every backup is whole: each blob its files use is present, and so is the
WAL from its start to its end LSN. With --read-data it also reads packs and re-hashes every blob in them: all packs,
or a random PERCENT of them (whole packs). Takes a shared lock, so it waits for no backup and garbage collection
deletes nothing while it runs (it refuses to run beside an exclusive lock: an index rebuild); with read-only
access to the repository it runs without one (and says so), writing nothing. What backups and WAL streaming
store while it runs is not reported missing.
Exits 0 when the repository is sound, ${exitCodeFor('INTEGRITY')} when something is damaged (each damaged object is listed).

  --read-data[=PERCENT]   also read and re-hash data: all of it, or PERCENT (0-100) of the packs
  --json                  print one JSON object: { ok, problems: [{ object, message }], stats } (and error when
                          something is damaged)

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    // parseArgs has no optional values: a bare --read-data means all of it.
    const normalized = args.map((a) => (a === '--read-data' ? '--read-data=100' : a))
    const { values } = parseCommandArgs('verify', {
      args: normalized,
      options: { ...repoOptions, 'read-data': { type: 'string' }, json: { type: 'boolean' } },
    })
    let percent = 0
    if (values['read-data'] !== undefined) {
      percent = Number(values['read-data'].replace(/%$/, ''))
      if (values['read-data'].trim() === '' || !Number.isFinite(percent) || percent < 0 || percent > 100) {
        throw new UsageError(`invalid --read-data '${values['read-data']}'`, { hint: 'give a percentage from 0 to 100, or no value for all data' })
      }
    }
    const { url } = await resolveRepo(values, ctx, 'verify')
    const passphrase = (await readPassphrase(await resolvePassphraseFile(values, ctx), ctx.env, ctx.stderr))?.passphrase
    const storage = await openStorage(url, ctx.env)
    try {
      const repo = await openRepository(storage, { passphrase, signal: ctx.signal })
      // Packs are listed first and read later: garbage collection must delete none while verify runs, so this
      // instance acknowledges no condemned pack, from its very first lock object on.
      const release = repo.holdPacks()
      // With read-only access the lock cannot be written: verify reads only, so it goes on without one.
      const lock = await repo.acquireReaderLock({ purpose: 'verify', signal: ctx.signal })
      if (!lock)
        ctx.stderr.write(
          `pgkeep: warning: no write access to repository '${storage.name}': verifying without a lock (maintenance started meanwhile would not wait for it)\n`,
        )
      let result: VerifyResult & { stats: { backups: number; backupFiles: number } }
      try {
        const signal = lock ? AbortSignal.any([ctx.signal, lock.signal]) : ctx.signal
        const structure = await verifyRepository(repo, { readData: percent, signal })
        // Then every backup must be whole: its files' blobs present, and the WAL from its start to its end.
        const backups = await verifyBackups(repo, { signal })
        result = {
          ok: structure.ok && backups.problems.length === 0,
          problems: [...structure.problems, ...backups.problems],
          stats: { ...structure.stats, backups: backups.backups, backupFiles: backups.files },
        }
      } finally {
        release()
        await repo.close()
      }
      const n = result.problems.length
      const damaged = new IntegrityError(`repository '${storage.name}' has ${n} problem${n === 1 ? '' : 's'}`, {
        hint: 'the objects listed are damaged or missing; restore them from a copy of the repository if there is one',
      })
      if (values.json) {
        // One object on stdout, the problems and the error in it; the exit status is the INTEGRITY one.
        const error = result.ok ? {} : { error: { code: damaged.code, message: damaged.message, hint: damaged.hint } }
        ctx.stdout.write(JSON.stringify({ ...result, ...error }, null, 2) + '\n')
        return result.ok ? 0 : exitCodeFor(damaged.code)
      }
      ctx.stdout.write(formatResult(storage.name, percent, result))
      if (result.ok) return 0
      // main() prints it and exits with the INTEGRITY status; the list went to stdout above.
      throw damaged
    } finally {
      await storage.close()
    }
  },
}

function formatResult(name: string, percent: number, r: VerifyResult & { stats: { backups: number; backupFiles: number } }): string {
  const s = r.stats
  const lines = [
    `repository '${name}': ${s.packs} packs, ${s.indexObjects} index objects, ${s.indexedBlobs} blobs, ${s.records} records`,
    `${s.backups} backups with ${s.backupFiles} files in all`,
    `checked structure${percent > 0 ? ` and the data of ${s.packsRead} packs (${s.blobsRead} blobs, ${(s.bytesRead / 1048576).toFixed(1)} MiB)` : ''}`,
  ]
  if (s.unindexedPacks > 0) lines.push(`note: ${s.unindexedPacks} packs are not indexed (left by an interrupted write; GC removes them)`)
  if (s.duplicateBlobs > 0) lines.push(`note: ${s.duplicateBlobs} blobs are stored twice (concurrent writers; GC removes the copies)`)
  if (r.ok) lines.push('no problems found')
  else {
    lines.push(`${r.problems.length} problems:`)
    for (const p of r.problems) lines.push(`  ${p.object}: ${p.message}`)
  }
  return lines.join('\n') + '\n'
}
