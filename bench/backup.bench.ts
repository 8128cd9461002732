// pgkeep backup (full, then incremental after ~1% of pages changed) against pg_basebackup -Ft -X stream, with and
// without client-side zstd:1, on the same PostgreSQL 15 cluster (pgbench data, indexes in a tablespace),
// alternating runs, medians, peak RSS. PGKEEP_BENCH_SCALE (default 70 ≈ 1 GB), PGKEEP_BENCH_RUNS (default 3).

import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, rm, appendFile } from 'node:fs/promises'
import { join } from 'node:path'
import { it } from 'vitest'
import { PASSWORD, ROLES, startCluster } from '../test/harness/cluster.js'
import { loadPgbench, touchPages } from '../test/harness/load.js'
import { debianTool } from '../test/harness/reference-tools.js'
import { type Measured, measure, median, table } from './measure.js'

const scale = Number(process.env.PGKEEP_BENCH_SCALE ?? 70)
const runs = Number(process.env.PGKEEP_BENCH_RUNS ?? 3)
const BIN = join(import.meta.dirname, '..', 'bin', 'pgkeep.js')

it(`backup: pgkeep vs pg_basebackup, pgbench scale ${scale}`, async () => {
  const pg = await startCluster({ major: 15 })
  const work = join(pg.baseDir, 'bench')
  await mkdir(work)
  const pgBasebackup = debianTool('pg_basebackup')
  if (!pgBasebackup) throw new Error('Debian pg_basebackup 15 is needed for this benchmark')
  const env = { ...process.env, PGPASSWORD: PASSWORD }
  const conn = ['-h', '127.0.0.1', '-p', String(pg.port), '-U', ROLES.repl]
  let n = 0
  const fresh = async () => {
    const d = join(work, `out${n++}`)
    await rm(d, { recursive: true, force: true })
    return d
  }
  const pgkeep = async (repo: string, extra: string[] = []) => {
    // Only `init` creates a repository; done outside the measurement.
    if (!existsSync(join(repo, 'config'))) execFileSync(process.execPath, [BIN, 'init', '--repo', repo], { env, stdio: 'ignore' })
    return measure(BIN, ['backup', '-d', pg.url(), '--repo', repo, '--json', ...extra], env)
  }
  const basebackup = async (extra: string[] = []) => {
    const d = await fresh()
    const r = await measure(pgBasebackup, [...conn, '-D', d, '-Ft', '-X', 'stream', '--checkpoint=fast', ...extra], env)
    await rm(d, { recursive: true, force: true })
    return r
  }
  try {
    await loadPgbench(pg, scale)
    const [{ size }] = await pg.sql<{ size: string }>(`select pg_size_pretty(sum(pg_database_size(datname))) size from pg_database`)
    await pgkeep(await fresh()) // warm-up of both sides
    await basebackup()

    const full: Record<string, Measured[]> = {
      'pg_basebackup -Ft -X stream': [],
      'pg_basebackup -Ft -X stream --compress=client-zstd:1': [],
      'pgkeep backup (full, zstd:3)': [],
      'pgkeep backup (full, zstd:1)': [],
    }
    const incremental: Record<string, Measured[]> = { 'pg_basebackup -Ft -X stream (after 1%)': [], 'pgkeep backup (incremental after 1%)': [] }
    const stored: { full: number[]; incremental: number[]; sizeBytes: number } = { full: [], incremental: [], sizeBytes: 0 }
    const touched: number[] = []
    for (let i = 0; i < runs; i++) {
      full['pg_basebackup -Ft -X stream'].push(await basebackup())
      const repo = await fresh()
      const f = await pgkeep(repo)
      full['pgkeep backup (full, zstd:3)'].push(f)
      stored.full.push(JSON.parse(f.stdout).storedBytes)
      stored.sizeBytes = JSON.parse(f.stdout).sizeBytes
      full['pg_basebackup -Ft -X stream --compress=client-zstd:1'].push(await basebackup(['--compress=client-zstd:1']))
      const repo1 = await fresh()
      full['pgkeep backup (full, zstd:1)'].push(await pgkeep(repo1, ['--compress', 'zstd:1']))
      await rm(repo1, { recursive: true, force: true })

      touched.push(await touchPages(pg, 1))
      const inc = await pgkeep(repo)
      incremental['pgkeep backup (incremental after 1%)'].push(inc)
      stored.incremental.push(JSON.parse(inc.stdout).storedBytes)
      incremental['pg_basebackup -Ft -X stream (after 1%)'].push(await basebackup())
      await rm(repo, { recursive: true, force: true })
    }
    const out = [
      `Backup of a pgbench -s ${scale} PostgreSQL 15 cluster (${size}, indexes in a tablespace), ${runs} alternating runs:`,
      '',
      table(full, 'pg_basebackup -Ft -X stream'),
      '',
      table(incremental, 'pg_basebackup -Ft -X stream (after 1%)'),
      '',
      `pgkeep stored (medians): full ${(median(stored.full) / 1e6).toFixed(1)} MB, incremental ${(median(stored.incremental) / 1e6).toFixed(2)} MB ` +
        `(${((100 * median(stored.incremental)) / stored.sizeBytes).toFixed(2)}% of ${(stored.sizeBytes / 1e6).toFixed(0)} MB); touched ${touched.join(', ')} rows`,
    ].join('\n')
    console.log(out)
    await mkdir(join(import.meta.dirname, 'results'), { recursive: true })
    await appendFile(
      join(import.meta.dirname, 'results', 'backup.jsonl'),
      JSON.stringify({ at: new Date().toISOString(), scale, runs, full, incremental, stored }) + '\n',
    )
  } finally {
    await pg.destroy()
  }
})
