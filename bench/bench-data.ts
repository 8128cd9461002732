// The benchmark's database: pgbench tables (about 20x compressible) plus a table of random bytes, sized together
// so the whole compresses about 3x like a real database; the 1% change between a full and an incremental backup;
// and the zstd ratio of the data as the zstd tool itself measures it.

import { spawn } from 'node:child_process'
import type { Cluster } from '../test/harness/cluster.js'
import { loadPgbench } from '../test/harness/load.js'

/**
 * Rows of the random table per pgbench scale unit. A row holds 480 random bytes (about 15 rows a page), so this is
 * about 6.3 MB per scale unit against pgbench's 15.6 MB: with pgbench's ~20x and the random bytes' 1x, the mix
 * compresses about 3x.
 */
export const RANDOM_ROWS_PER_SCALE = 11_500
const RANDOM_ROW_BYTES = 480

/** The tables `touchPages` changes, each with a column it can bump. */
const TOUCHED = [
  { table: 'pgbench_accounts', column: 'abalance' },
  { table: 'bench_random', column: 'version' },
] as const

/** What was loaded. */
export interface BenchData {
  /** pg_database_size summed over every database, bytes. */
  databaseBytes: number
  /** Per table (with indexes and TOAST), bytes. */
  tableBytes: Record<string, number>
}

/**
 * Loads pgbench at `scale` (indexes in tablespace ts1) and `bench_random`: random bytes from pgcrypto's
 * `gen_random_bytes` (incompressible), then VACUUM FREEZE and CHECKPOINT so that pages settle.
 */
export async function loadBenchData(c: Cluster, scale: number): Promise<BenchData> {
  await loadPgbench(c, scale)
  await c.sql('create extension if not exists pgcrypto')
  await c.sql(`create table bench_random (id bigint primary key, version int not null default 0, payload bytea not null)`)
  // STORAGE MAIN keeps the payload in the heap page uncompressed when pglz gives up (it always does on random bytes).
  await c.sql(`alter table bench_random alter column payload set storage main`)
  const rows = Math.max(1000, Math.round(scale * RANDOM_ROWS_PER_SCALE))
  // In batches, so that no single statement holds all of it in one transaction's memory and WAL stays flowing.
  const batch = 200_000
  for (let from = 1; from <= rows; from += batch) {
    const to = Math.min(rows, from + batch - 1)
    await c.sql(
      `insert into bench_random (id, payload) select g, gen_random_bytes(${RANDOM_ROW_BYTES / 2}) || gen_random_bytes(${RANDOM_ROW_BYTES / 2}) from generate_series(${from}, ${to}) g`,
    )
  }
  await c.sql('vacuum freeze')
  await c.sql('checkpoint')
  const [{ size }] = await c.sql<{ size: string }>(`select sum(pg_database_size(datname))::text size from pg_database`)
  const tables = await c.sql<{ name: string; size: string }>(
    `select relname name, pg_total_relation_size(oid)::text size from pg_class where relkind = 'r' and relname in ('pgbench_accounts', 'bench_random')`,
  )
  return { databaseBytes: Number(size), tableBytes: Object.fromEntries(tables.map((t) => [t.name, Number(t.size)])) }
}

/**
 * Changes one row on every (100 / percent)-th page of each large table, then CHECKPOINTs; returns the number of
 * heap pages whose rows changed (each update also writes the new row version and index entries elsewhere).
 */
export async function touchPages(c: Cluster, percent: number): Promise<number> {
  const step = Math.max(1, Math.round(100 / percent))
  let touched = 0
  for (const { table, column } of TOUCHED) {
    const [{ pages }] = await c.sql<{ pages: number }>(`select relpages::int pages from pg_class where relname = '${table}'`)
    // The first live row of each chosen page (a TID range scan per page): line pointer 1 may be dead after an
    // earlier run, and an update by a dead ctid changes nothing.
    const [{ n }] = await c.sql<{ n: number }>(
      `with t as (update ${table} set ${column} = ${column} + 1 where ctid = any (array(
         select (select min(ctid) from ${table} where ctid >= format('(%s,0)', p)::tid and ctid < format('(%s,0)', p + 1)::tid)
         from generate_series(0, ${pages - 1}, ${step}) p)) returning 1) select count(*)::int n from t`,
    )
    touched += n
  }
  await c.sql('checkpoint')
  return touched
}

/**
 * Raw and `zstd -1` compressed size of a tar stream of the given directories (symbolic links not followed),
 * leaving out paths matching `exclude` (tar patterns such as './pg_wal').
 */
export async function zstdRatio(dirs: string[], exclude: string[] = []): Promise<{ rawBytes: number; zstdBytes: number; ratio: number }> {
  const args = ['-cf', '-', ...exclude.map((e) => `--exclude=${e}`), ...dirs.flatMap((d) => ['-C', d, '.'])]
  const tar = spawn('tar', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const zstd = spawn('zstd', ['-1', '-T1', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let rawBytes = 0
  let zstdBytes = 0
  let errors = ''
  tar.stdout.on('data', (d: Buffer) => (rawBytes += d.length))
  tar.stdout.pipe(zstd.stdin)
  zstd.stdout.on('data', (d: Buffer) => (zstdBytes += d.length))
  tar.stderr.on('data', (d) => (errors += d))
  zstd.stderr.on('data', (d) => (errors += d))
  const exit = (p: ReturnType<typeof spawn>) => new Promise<number | null>((resolve, reject) => p.on('error', reject).on('close', resolve))
  const [tarCode, zstdCode] = await Promise.all([exit(tar), exit(zstd)])
  // GNU tar exits 1 when a file changed while it was read (the server writes in the background): still a sample.
  if ((tarCode !== 0 && tarCode !== 1) || zstdCode !== 0) throw new Error(`tar | zstd failed (${tarCode}, ${zstdCode}): ${errors}`)
  return { rawBytes, zstdBytes, ratio: rawBytes / zstdBytes }
}
