// Shared pieces of the restore tests (not a test file: vitest picks up only *.test.ts): tables of our own beside
// pgbench's, a way to freeze pgbench's writes so that the source's content at a recovery point is known, per-table
// checksums, amcheck over every btree index, pg_verifybackup, an independent check of a restored directory against
// the server's own manifest, and starting a restored directory as the server user.

import { execFileSync } from 'node:child_process'
import { readdir, readFile, lstat } from 'node:fs/promises'
import { join } from 'node:path'
import pg from 'pg'
import { expect } from 'vitest'
import { parseServerManifest } from '../../src/pg/backup-manifest.js'
import { crc32c, crc32cHexLE } from '../../src/pg/crc32c.js'
import type { BackupRecord } from '../../src/repo/backup-record.js'
import type { Repository } from '../../src/repo/index.js'
import { walGetRestoreCommand } from '../../src/restore/restore-command.js'
import { type Cluster, startOnDataDir } from '../harness/cluster.js'
import { serverUser } from '../harness/server-user.js'
import type { Major } from '../harness/pg-binaries.js'
import { execFileP, verifyBackupPlan } from '../harness/reference-tools.js'

/** Tables pgbench does not touch: one with TOAST, one (with its index) in tablespace ts1, one unlogged. */
export async function addOwnTables(c: Cluster): Promise<void> {
  await c.sql(`create table wide (id int primary key, body text)`)
  await c.sql(`insert into wide select g, string_agg(md5((g * 1000 + k)::text), '') from generate_series(1, 500) g, generate_series(1, 100) k group by g`)
  await c.sql(`create table ts_table (id int primary key, v text) tablespace ts1`)
  await c.sql(`insert into ts_table select g, md5(g::text) from generate_series(1, 50000) g`)
  await c.sql(`create index ts_table_v on ts_table (v) tablespace ts1`)
  await c.sql(`create unlogged table scratch_unlogged as select g from generate_series(1, 1000) g`)
  await c.sql('checkpoint')
}

const PGBENCH_TABLES = 'pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history'

/**
 * Blocks pgbench's writers (EXCLUSIVE locks allow reads only) so the source stops changing. Resolves once the
 * locks are held, with the WAL position then; `release()` lets pgbench go on.
 */
export async function freezePgbench(c: Cluster): Promise<{ lsn: string; release: () => Promise<void> }> {
  const client = new pg.Client({ host: c.socketDir, port: c.port, user: 'postgres', database: 'postgres' })
  client.on('error', () => {}) // the server may be stopped under it when a test fails
  await client.connect()
  await client.query('begin')
  await client.query(`lock table ${PGBENCH_TABLES} in exclusive mode`)
  const { rows } = await client.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn')
  return {
    lsn: rows[0]!.lsn,
    release: async () => {
      await client.query('commit').catch(() => {})
      await client.end().catch(() => {})
    },
  }
}

/** count and md5 of every user table's rows (as text, in text order), by table name; unlogged tables left out. */
export async function tableChecksums(c: Cluster): Promise<Record<string, string>> {
  const tables = await c.sql<{ name: string }>(
    `select format('%I.%I', n.nspname, c.relname) as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind = 'r' and c.relpersistence = 'p' and n.nspname not in ('pg_catalog', 'information_schema') order by 1`,
  )
  const out: Record<string, string> = {}
  for (const { name } of tables) {
    const [row] = await c.sql<{ sum: string | null; n: string }>(
      `select md5(string_agg(t::text, ',' order by t::text)) as sum, count(*)::text as n from ${name} t`,
    )
    out[name] = `${row!.n} rows, md5 ${row!.sum ?? 'empty'}`
  }
  return out
}

/** bt_index_check on every btree index of every database; returns the failures (empty when all is well). */
export async function amcheckAll(c: Cluster): Promise<string[]> {
  const problems: string[] = []
  const dbs = await c.sql<{ datname: string }>(`select datname from pg_database where datallowconn order by 1`)
  let checked = 0
  for (const { datname } of dbs) {
    await c.sql('create extension if not exists amcheck', [], datname)
    const idx = await c.sql<{ oid: number; name: string }>(
      `select c.oid, c.oid::regclass::text as name from pg_index i join pg_class c on c.oid = i.indexrelid
       join pg_am a on a.oid = c.relam where a.amname = 'btree' and c.relpersistence <> 't' and i.indisvalid`,
      [],
      datname,
    )
    for (const { oid, name } of idx) {
      try {
        await c.sql('select bt_index_check($1::regclass, true)', [oid], datname)
        checked++
      } catch (err) {
        problems.push(`${datname}.${name}: ${(err as Error).message}`)
      }
    }
  }
  if (checked < 10) problems.push(`only ${checked} indexes checked: the amcheck query is wrong`)
  return problems
}

/**
 * Runs pg_verifybackup on a restored directory when a fitting tool exists: the one named by
 * PGKEEP_TEST_VERIFYBACKUP_<major> ("/path/to/pg_verifybackup [args]") when set, else the one
 * {@link verifyBackupPlan} picks (the same major's from Debian for 17–19, Debian's 15 where it fits).
 */
export async function verifyRestored(major: number, dir: string): Promise<{ ran: boolean; output: string }> {
  const override = process.env[`PGKEEP_TEST_VERIFYBACKUP_${major}`]?.trim()
  if (override) {
    const [tool, ...args] = override.split(/\s+/)
    const { stdout, stderr } = await execFileP(tool!, [...args, dir])
    return { ran: true, output: `${stdout}${stderr} (${override})` }
  }
  const plan = verifyBackupPlan(major)
  if (!plan.tool) return { ran: false, output: plan.note ?? 'no tool' }
  const { stdout, stderr } = await execFileP(plan.tool, [...plan.args, dir])
  return { ran: true, output: `${stdout}${stderr}${plan.note ? ` (${plan.note})` : ''}` }
}

/**
 * Checks a restored directory against the server's own backup_manifest (an oracle independent of pgkeep): every
 * file the server sent whole is on disk with the server's size and CRC-32C. Files pgkeep writes itself
 * (backup_label, postgresql.auto.conf) and PG 17 INCREMENTAL files (rebuilt into whole files) are left out.
 * Returns the number of files checked.
 */
export async function checkAgainstServerManifest(repo: Repository, b: BackupRecord, dir: string): Promise<number> {
  const parts: Buffer[] = []
  for (const id of b.serverManifest) parts.push(await repo.readBlob(id))
  const m = parseServerManifest(Buffer.concat(parts), { verifyChecksum: true })
  let checked = 0
  for (const f of m.files) {
    if (/(^|\/)INCREMENTAL\./.test(f.path) || ['backup_label', 'postgresql.auto.conf', 'tablespace_map'].includes(f.path)) continue
    const bytes = await readFile(join(dir, f.path))
    expect(bytes.length, f.path).toBe(f.size)
    expect(crc32cHexLE(crc32c(bytes)), f.path).toBe(f.checksum)
    checked++
  }
  return checked
}

/**
 * Checks a restored directory against the backup_manifest pgkeep wrote for it, the way pg_verifybackup does
 * (for the versions no local pg_verifybackup can read): every file listed exists with its size and CRC-32C, and
 * every file on disk (following pg_tblspc links, skipping what pg_verifybackup skips) is listed.
 */
export async function checkOwnManifest(dir: string): Promise<number> {
  const m = parseServerManifest(await readFile(join(dir, 'backup_manifest')), { verifyChecksum: true })
  const listed = new Map(m.files.map((f) => [f.path, f]))
  const skip = (rel: string) =>
    ['backup_manifest', 'postgresql.auto.conf', 'recovery.signal', 'standby.signal'].includes(rel) || rel === 'pg_wal' || rel.startsWith('pg_wal/')
  let seen = 0
  const walk = async (abs: string, rel: string): Promise<void> => {
    for (const name of await readdir(abs)) {
      const r = rel ? `${rel}/${name}` : name
      if (skip(r)) continue
      const p = join(abs, name)
      const st = await lstat(p)
      if (st.isDirectory() || (st.isSymbolicLink() && r.startsWith('pg_tblspc/'))) await walk(p, r)
      else {
        const f = listed.get(r)
        expect(f, `${r} is on disk but not in the manifest`).toBeDefined()
        const bytes = await readFile(p)
        expect(bytes.length, r).toBe(f!.size)
        expect(crc32cHexLE(crc32c(bytes)), r).toBe(f!.checksum)
        listed.delete(r)
        seen++
      }
    }
  }
  await walk(dir, '')
  expect(
    [...listed.keys()].filter((p) => !skip(p)),
    'listed in the manifest but missing',
  ).toEqual([])
  return seen
}

/**
 * Starts a restored directory on a fresh port, archiving off (a restored copy must not archive into the source's
 * repository). `repoDir` is handed to the server user first: its restore_command reads the repository.
 */
export async function startRestored(
  major: Major,
  dir: string,
  baseDir: string,
  tablespaceDirs: string[],
  o: { repoDir?: string; conf?: Record<string, string | number | boolean> } = {},
): Promise<Cluster> {
  if (o.repoDir) shareWithServer(o.repoDir)
  return startOnDataDir(major, dir, { baseDir, tablespaceDirs, conf: { archive_mode: 'off', ...o.conf } })
}

/** Gives a directory tree to the server user (when tests run as root), e.g. a repository its WAL commands use. */
export function shareWithServer(dir: string): void {
  const u = serverUser()
  if (u.drop) execFileSync('chown', ['-R', `${u.uid}:${u.gid}`, dir])
}

/** restore_command for tests: the real `pgkeep wal get`, its prefetch process lingering only briefly. */
export function testRestoreCommand(repoDir: string): string {
  return walGetRestoreCommand({ pgkeep: PGKEEP_ARGV, repoUrl: repoDir, extraArgs: ['--linger', '3'] })
}

/** Waits until a server that recovers to a target with `promote` has left recovery. */
export async function waitForPromotion(c: Cluster, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const [{ r }] = await c.sql<{ r: boolean }>('select pg_is_in_recovery() as r')
    if (!r) return
    if (Date.now() > until) throw new Error(`server still in recovery after ${timeoutMs} ms:\n${await c.log()}`)
    await new Promise((res) => setTimeout(res, 100))
  }
}

/** How a restored server runs `pgkeep wal get`: this checkout's node and bin/pgkeep.js. */
export const PGKEEP_ARGV = [process.execPath, join(import.meta.dirname, '..', '..', 'bin', 'pgkeep.js')]

/**
 * Stops a restored server, then the `wal get` prefetch process its restore_command started (found by the pid in
 * its spool's daemon.json), so that nothing outlives the test.
 */
export async function stopRestored(c: Cluster): Promise<void> {
  await c.stop()
  try {
    const info = JSON.parse(await readFile(join(c.dataDir, 'pg_wal', '.pgkeep-prefetch', 'daemon.json'), 'utf8')) as { pid?: number }
    if (typeof info.pid === 'number' && info.pid > 1) process.kill(info.pid, 'SIGTERM')
  } catch {
    // no prefetch process, or it is gone already
  }
}
