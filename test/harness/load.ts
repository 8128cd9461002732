// Test data: pgbench tables (Debian's pgbench 15 works against servers 14–19), or the same shape by SQL when it
// is missing; and a background pgbench writer.

import { type ChildProcess, spawn } from 'node:child_process'
import type { Cluster } from './cluster.js'
import { debianTool, execFileP, noteSkip } from './reference-tools.js'

/** pgbench -i at `scale` with its indexes in tablespace ts1, then VACUUM FREEZE and CHECKPOINT so pages settle. */
export async function loadPgbench(c: Cluster, scale: number): Promise<void> {
  const pgbench = debianTool('pgbench')
  if (pgbench) {
    await execFileP(pgbench, ['-i', '-q', '-s', String(scale), '--index-tablespace=ts1', '-h', c.socketDir, '-p', String(c.port), '-U', 'postgres', 'postgres'])
  } else {
    noteSkip('pgbench', 'not installed; loading the same tables by SQL')
    await c.sql(`create table pgbench_accounts (aid int primary key using index tablespace ts1, bid int, abalance int, filler char(84))`)
    await c.sql(`insert into pgbench_accounts select g, 1 + (g - 1) / 100000, 0, '' from generate_series(1, ${scale * 100000}) g`)
    await c.sql(`create table pgbench_branches (bid int primary key using index tablespace ts1, bbalance int, filler char(88))`)
    await c.sql(`insert into pgbench_branches select g, 0, '' from generate_series(1, ${scale}) g`)
  }
  await c.sql('vacuum freeze')
  await c.sql('checkpoint')
}

/** Runs pgbench's TPC-B-like workload until stop() (no-op when pgbench is missing). */
export function startPgbench(c: Cluster, clients = 2): { stop: () => Promise<void> } {
  const pgbench = debianTool('pgbench')
  if (!pgbench) {
    noteSkip('concurrent pgbench load', 'pgbench not installed')
    return { stop: async () => {} }
  }
  const child: ChildProcess = spawn(
    pgbench,
    ['-n', '-c', String(clients), '-T', '600', '-h', c.socketDir, '-p', String(c.port), '-U', 'postgres', 'postgres'],
    { stdio: 'ignore' },
  )
  return {
    stop: async () => {
      // Already gone (exited, or killed by a signal): nothing to wait for.
      if (child.exitCode !== null || child.signalCode !== null) return
      const done = new Promise((r) => child.once('exit', r))
      child.kill('SIGINT')
      await done
    },
  }
}

/** Per-table checksum over every row in primary-key order. */
export const tableChecksum = (table: string, key: string) =>
  `select count(*)::text n, md5(coalesce(string_agg(t::text, ',' order by ${key}), '')) h from ${table} t`

/**
 * Touches about `percent` % of pgbench_accounts' pages: the first live row of every (100 / percent)-th page gets
 * a new balance. Live rows, so that calling it again changes pages again (the rows it updated before are dead).
 * Resolves with the number of rows updated.
 */
export async function touchPages(c: Cluster, percent: number): Promise<number> {
  const step = Math.round(100 / percent)
  const [{ n }] = await c.sql<{ n: string }>(
    `with firsts as (
       select distinct on (blk) ctid as c
         from (select ctid, (ctid::text::point)[0]::bigint as blk from pgbench_accounts) s
        where blk % ${step} = 0
        order by blk, ctid),
     done as (update pgbench_accounts a set abalance = abalance + 1 from firsts where a.ctid = firsts.c returning 1)
     select count(*)::text n from done`,
  )
  return Number(n)
}
