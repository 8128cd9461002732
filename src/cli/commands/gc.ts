// `pgkeep gc`: garbage collection. Condemns packs nothing references any more, repacks packs that hold little,
// deletes condemned packs once every session using the repository has acknowledged them, compacts the index and
// removes crash leftovers; prints what it freed (or, with --dry-run, what it would free).

import { UsageError } from '../../errors.js'
import type { PgkeepEvent } from '../../events.js'
import { collectGarbage, type GcResult } from '../../repo/index.js'
import type { Command } from '../command.js'
import { formatBytes, formatDuration } from '../format.js'
import { parseByteSize, parseCommandArgs, parseDuration } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'

export const gcCommand: Command = {
  usage: `usage: pgkeep gc --repo URL [--dry-run] [--grace DURATION] [--repack-below PCT] [--max-repack-bytes N]
                [--json] [--progress]

Finds every blob the backups and the WAL catalog still reference, then:
  - condemns packs that hold none of them (and packs no index lists, left by interrupted writers);
  - copies the live blobs of packs that are mostly garbage into new packs, and condemns the old ones;
  - deletes condemned packs once the grace period has passed and every process working on the repository
    (backup, wal stream, wal push, restore, verify) has acknowledged them in its lock, so that none of them
    can still be using them; packs that wait for that are deleted by a later run;
  - compacts the index (many small index objects into few), and removes temporary files of interrupted writes.
Runs beside backups and WAL streaming (it takes a shared lock); not beside another gc or an exclusive lock.
Killed at any point, it leaves a sound repository, and the next run finishes the job. Memory is a few bytes per
blob in the repository.

  --dry-run               print what would be freed; write and delete nothing
  --grace DURATION        minimum age of a pack before it is condemned or repacked, of a condemnation before its
                          packs are deleted, and of leftovers (default 1h; 0 condemns and deletes in one run when
                          no other process holds a lock); e.g. 30m, 2h, 1d
  --repack-below PCT      repack packs whose live blobs fill less than PCT percent of them (default 50; 0: never)
  --max-repack-bytes N    copy at most N bytes of live blobs in this run (e.g. 10G; default: no limit)
  --json                  print the result as one JSON object
  --progress              show each phase and its progress on stderr even when it is not a terminal

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('gc', {
      args,
      options: {
        ...repoOptions,
        'dry-run': { type: 'boolean' },
        grace: { type: 'string' },
        'repack-below': { type: 'string' },
        'max-repack-bytes': { type: 'string' },
        json: { type: 'boolean' },
        progress: { type: 'boolean' },
      },
    })
    const graceMs = values.grace === undefined ? undefined : parseDuration(values.grace, '--grace', { allowZero: true })
    let repackBelowPercent: number | undefined
    if (values['repack-below'] !== undefined) {
      repackBelowPercent = Number(values['repack-below'].replace(/%$/, ''))
      if (values['repack-below'].trim() === '' || !Number.isFinite(repackBelowPercent) || repackBelowPercent < 0 || repackBelowPercent > 100) {
        throw new UsageError(`invalid --repack-below '${values['repack-below']}'`, { hint: 'give a percentage from 0 to 100' })
      }
    }
    const maxRepackBytes = values['max-repack-bytes'] === undefined ? undefined : parseByteSize(values['max-repack-bytes'], '--max-repack-bytes')
    // gc needs only the structure blobs' index entries in memory; everything else it streams.
    const { repo, storage } = await openRepoForCommand(values, ctx, 'gc', { index: 'meta' })
    const started = Date.now()
    const showProgress = values.progress === true || ctx.stderr.isTTY === true
    const onEvent = (e: PgkeepEvent) => {
      if (e.type === 'message') ctx.stderr.write(`pgkeep: ${e.level === 'warning' ? 'warning: ' : ''}${e.text}\n`)
      else if (showProgress) ctx.stderr.write(`pgkeep: gc: ${e.phase}${progressText(e.itemsDone, e.itemsTotal, e.bytesDone)}\n`)
    }
    try {
      const result = await collectGarbage(repo, {
        dryRun: values['dry-run'] === true,
        graceMs,
        repackBelowPercent,
        maxRepackBytes,
        signal: ctx.signal,
        onEvent,
      })
      if (values.json) ctx.stdout.write(JSON.stringify({ repository: repo.location, durationMs: Date.now() - started, ...result }, null, 2) + '\n')
      else ctx.stdout.write(describe(repo.location, result, Date.now() - started))
      return 0
    } finally {
      await repo.close().catch(() => {})
      await storage.close().catch(() => {})
    }
  },
}

function progressText(done: number | undefined, total: number | null | undefined, bytes: number): string {
  if (done === undefined) return ''
  return ` ${done}${total ? `/${total}` : ''}${bytes > 0 ? ` (${formatBytes(bytes)})` : ''}`
}

function describe(location: string, r: GcResult, ms: number): string {
  const lines: string[] = []
  if (r.dryRun) {
    lines.push(
      `repository ${location}: ${r.packsBefore} packs, ${formatBytes(r.bytesBefore)} with the index; ${r.indexObjectsBefore} index objects`,
      `${r.blobs.indexed} blobs indexed (${r.blobs.duplicates} duplicate copies), about ${r.blobs.live} live, in ${r.records} records (${r.backups} backups)`,
      `dry run: gc would condemn ${r.packsCondemned} packs and lift ${r.packsAbsolved} condemnations; up to ${formatBytes(r.freeableBytes)} can be freed`,
      'nothing was written or deleted',
    )
    return lines.join('\n') + '\n'
  }
  lines.push(
    `repository ${location}: ${formatBytes(r.bytesBefore)} in ${r.packsBefore} packs before, ${formatBytes(r.bytesAfter)} in ${r.packsAfter} packs after (index included)`,
    `deleted ${r.packsDeleted} packs (${formatBytes(r.bytesDeleted)}); repacked ${r.packsRepacked} packs into ${r.packsWritten} (${formatBytes(r.bytesWritten)} written)`,
    `index objects: ${r.indexObjectsBefore} before, ${r.indexObjectsAfter} after`,
    `${r.blobs.indexed} blobs indexed (${r.blobs.duplicates} duplicate copies), about ${r.blobs.live} live, in ${r.records} records (${r.backups} backups)`,
  )
  if (r.packsCondemned > 0 || r.packsAbsolved > 0) lines.push(`condemned ${r.packsCondemned} packs; lifted ${r.packsAbsolved} condemnations`)
  if (r.pendingPacks > 0) {
    lines.push(
      `${r.pendingPacks} condemned packs (${formatBytes(r.pendingBytes)}) remain: a later gc deletes them once the grace period has passed` +
        (r.waitingFor.length > 0 ? ' and these acknowledge them:' : ''),
    )
    for (const w of r.waitingFor) lines.push(`  ${w}`)
  }
  if (r.leftoversRemoved > 0) lines.push(`removed ${r.leftoversRemoved} leftovers of interrupted writes`)
  for (const p of r.problems) lines.push(`problem: ${p}`)
  lines.push(`done in ${formatDuration(ms)}`)
  return lines.join('\n') + '\n'
}
