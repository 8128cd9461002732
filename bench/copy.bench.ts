// `pgkeep copy` on the standard bench data (pgbench plus random bytes, about 3x compressible; bench-data.ts) of a
// PostgreSQL 15 cluster: a full copy of a filesystem repository into another one, plain (ids kept: blobs only move)
// and encrypted (every blob read, verified, re-compressed and re-encrypted), against `cp -a` of the repository
// directory (what a copy of the bytes alone costs); then the copy after an incremental backup (1% of pages
// changed), into each target as the full copy left it. Alternating runs, medians, peak RSS; a JSON line in
// bench/results/copy.jsonl. PGKEEP_BENCH_SCALE (default 90, as `npm run bench`), PGKEEP_BENCH_RUNS (default 3).

import { execFileSync } from 'node:child_process'
import { appendFile, mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { it } from 'vitest'
import { startCluster } from '../test/harness/cluster.js'
import { loadBenchData, touchPages } from './bench-data.js'
import { dirBytes, syncDisks } from './bench-fs.js'
import { type Measured, measure, median, table } from './measure.js'

const scale = Number(process.env.PGKEEP_BENCH_SCALE ?? 90)
const runs = Number(process.env.PGKEEP_BENCH_RUNS ?? 3)
const BIN = join(import.meta.dirname, '..', 'bin', 'pgkeep.js')
const PASSPHRASE = 'bench copy passphrase'

it(`copy: full and incremental, standard bench data at scale ${scale}`, async () => {
  const pg = await startCluster({ major: 15 })
  const work = join(pg.baseDir, 'bench-copy')
  await mkdir(work)
  const env = { ...process.env, PGKEEP_PASSPHRASE: PASSPHRASE, PGKEEP_TO_PASSPHRASE: PASSPHRASE }
  const pgkeep = (args: string[]) => execFileSync(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] }).toString()
  const source = join(work, 'source')
  let n = 0
  const init = (encrypted: boolean) => {
    const d = join(work, `target${n++}`)
    pgkeep(['init', '--repo', d, ...(encrypted ? ['--encrypt'] : [])])
    return d
  }
  const copy = async (to: string) => {
    await syncDisks()
    return measure(BIN, ['copy', '--repo', source, '--to', to, '--json'], env)
  }
  try {
    const data = await loadBenchData(pg, scale)
    pgkeep(['init', '--repo', source])
    const full = JSON.parse(pgkeep(['backup', '-d', pg.url(), '--repo', source, '--json']))
    const repoBytes = await dirBytes(source)

    const variants = {
      reference: 'cp -a of the repository directory',
      plain: 'pgkeep copy to a plain repository (ids kept)',
      encrypted: 'pgkeep copy to an encrypted repository',
    } as const
    const fullRuns: Record<string, Measured[]> = { [variants.reference]: [], [variants.plain]: [], [variants.encrypted]: [] }
    const stored: Record<string, number[]> = { plain: [], encrypted: [], plainIncremental: [], encryptedIncremental: [] }
    // The targets of the last full run, kept for the incremental copies.
    const kept: Record<'plain' | 'encrypted', string> = { plain: '', encrypted: '' }
    for (let i = 0; i < runs; i++) {
      const cpTarget = join(work, `cp${i}`)
      await syncDisks()
      fullRuns[variants.reference]!.push(await measure('cp', ['-a', source, cpTarget]))
      await rm(cpTarget, { recursive: true, force: true })
      for (const kind of ['plain', 'encrypted'] as const) {
        const to = init(kind === 'encrypted')
        const m = await copy(to)
        fullRuns[variants[kind]]!.push(m)
        stored[kind]!.push(JSON.parse(m.stdout).stored.storedBytes)
        if (kept[kind]) await rm(kept[kind], { recursive: true, force: true })
        kept[kind] = to
      }
    }

    const touched = await touchPages(pg, 1)
    const incremental = JSON.parse(pgkeep(['backup', '-d', pg.url(), '--repo', source, '--json']))
    const incRuns: Record<string, Measured[]> = { [variants.plain]: [], [variants.encrypted]: [] }
    for (let i = 0; i < runs; i++) {
      for (const kind of ['plain', 'encrypted'] as const) {
        // Each run copies into the target as the full copy left it (a copy of it, made outside the measurement).
        const to = join(work, `inc-${kind}-${i}`)
        execFileSync('cp', ['-a', kept[kind], to])
        const m = await copy(to)
        incRuns[variants[kind]]!.push(m)
        stored[`${kind}Incremental`]!.push(JSON.parse(m.stdout).stored.storedBytes)
        await rm(to, { recursive: true, force: true })
      }
    }

    const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`
    const out = [
      `Copy of a repository holding one full backup of the standard bench data at scale ${scale} (PostgreSQL 15, database ${mb(data.databaseBytes)}, ` +
        `backup ${mb(full.sizeBytes)}, repository ${mb(repoBytes)} with its WAL), ${runs} alternating runs:`,
      '',
      table(fullRuns, variants.reference),
      '',
      `Copy after an incremental backup (1% of pages, ${touched} rows changed; the backup stored ${mb(incremental.storedBytes)} + ${mb(incremental.walStoredBytes)} WAL), ` +
        `into the targets as the full copy left them:`,
      '',
      table(incRuns, variants.plain),
      '',
      `stored by the copies (medians): full ${mb(median(stored.plain!)!)} plain, ${mb(median(stored.encrypted!)!)} encrypted; ` +
        `incremental ${mb(median(stored.plainIncremental!)!)} plain, ${mb(median(stored.encryptedIncremental!)!)} encrypted`,
    ].join('\n')
    console.log(out)
    await mkdir(join(import.meta.dirname, 'results'), { recursive: true })
    await appendFile(
      join(import.meta.dirname, 'results', 'copy.jsonl'),
      JSON.stringify({
        at: new Date().toISOString(),
        scale,
        runs,
        databaseBytes: data.databaseBytes,
        repoBytes,
        backup: { full: full.storedBytes, incremental: incremental.storedBytes, incrementalWal: incremental.walStoredBytes },
        full: fullRuns,
        incremental: incRuns,
        stored,
      }) + '\n',
    )
  } finally {
    await pg.destroy()
  }
})
