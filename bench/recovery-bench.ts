// The benchmark's end-to-end recovery row (issue 14): one base backup of the bench cluster, then N MB of WAL
// archived to a plain directory and to pgkeep repositories; each run extracts the same base into a fresh directory
// and lets PostgreSQL recover all of that WAL through a restore_command (cp, or `pgkeep wal get` from an fs or S3
// repository), measured from the server's start until recovery has ended. A run that did not replay everything
// fails instead of counting.

import { execFile, execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { appendFile, chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'
import { type Cluster, formatConf, freePort } from '../test/harness/cluster.js'
import { runMain } from '../test/harness/cli.js'
import { pgBinaries } from '../test/harness/pg-binaries.js'
import { debianTool } from '../test/harness/reference-tools.js'
import { handOver, runAsServer, serverUser } from '../test/harness/server-user.js'
import { syncDisks } from './bench-fs.js'
import { measure } from './measure.js'
import { stopPrefetchDaemon } from './prefetch-daemon.js'
import type { GroupSpec, Sample, VariantSpec } from './report.js'

const execFileP = promisify(execFile)
const SEGMENT_RE = /^[0-9A-F]{24}$/
const MB = 1024 * 1024

/** Variant names of the recovery group (JSON lines, table, chart, smoke test). */
export const RV = {
  cp: 'restore_command = cp from a directory archive',
  fs: 'restore_command = pgkeep wal get (fs repository)',
  s3: 'restore_command = pgkeep wal get (S3 repository)',
} as const

/** The issue's bars on the wall-time ratio to cp: fs repository, S3 repository. */
export const RECOVERY_GOALS = { fs: 1.25, s3: 1.5 } as const

export const recoveryGroup = (walMb: number): GroupSpec => ({ id: 'recovery', title: `Recovery of ${walMb} MB of WAL (PG 15)` })

/** cp as the reference, `wal get` from an fs repository, and from S3 when the run includes S3 repositories. */
export function recoveryVariants(withS3: boolean): VariantSpec[] {
  return [
    { group: 'recovery', name: RV.cp, side: 'reference' },
    { group: 'recovery', name: RV.fs, side: 'pgkeep', repoKind: 'fs', ref: RV.cp, goalRatio: RECOVERY_GOALS.fs },
    ...(withS3 ? [{ group: 'recovery', name: RV.s3, side: 'pgkeep' as const, repoKind: 's3' as const, ref: RV.cp, goalRatio: RECOVERY_GOALS.s3 }] : []),
  ]
}

/** A pgkeep repository the suite opened (and initialised) for this group. */
export interface RecoveryRepo {
  url: string
  env: NodeJS.ProcessEnv
  remove(): Promise<void>
}

export interface RecoveryCtx {
  /** The bench cluster (PostgreSQL 15, archive_mode on), after the other groups are done with it. */
  pg: Cluster
  work: string
  /** The pgkeep command under measurement (bin/pgkeep of the private build), as restore_command runs it. */
  bin: string
  walMb: number
  withS3: boolean
  /** Runs: warm-ups first, then measured ones. */
  runs: number
  warmup: number
  openRepo(kind: 'fs' | 's3', name: string): Promise<RecoveryRepo>
  record(s: Omit<Sample, 'suite' | 'runId'>): Promise<void>
  log(text: string): void
}

/** What the source wrote after the base backup: a run has replayed it all when it finds these. */
interface Generated {
  /** Written last, in the last archived segment. */
  token: string
  /** LSN after the token's commit. */
  endLsn: string
  rows: number
  walBytes: number
}

/** Single-quotes a word for /bin/sh (restore_command runs through it). */
const sh = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Waits until the archiver is done with WAL file `name` (archive_command returned success, so a cp into the archive
 * is complete, not half-written); returns whether the file is in `archive`. Fails when archive_command fails.
 */
async function archiverDone(pg: Cluster, archive: string, name: string): Promise<boolean> {
  const deadline = Date.now() + 120_000
  for (;;) {
    const [{ done, failed }] = await pg.sql<{ done: boolean; failed: number }>(
      'select coalesce(last_archived_wal >= $1, false) done, failed_count::int failed from pg_stat_archiver',
      [name],
    )
    if (done) return (await readdir(archive)).includes(name)
    if (failed > 0) throw new Error(`archive_command failed ${failed} time(s):\n${(await pg.log()).slice(-2000)}`)
    if (Date.now() > deadline) throw new Error(`WAL segment ${name} was not archived within 120 s`)
    await sleep(100)
  }
}

/** Waits until the archiver has stored WAL file `name`, whole, in `archive`. */
export async function waitArchived(pg: Cluster, archive: string, name: string): Promise<void> {
  if (!(await archiverDone(pg, archive, name))) throw new Error(`WAL segment ${name} was archived, but not into ${archive}`)
}

/** Switches to a new segment (after a record, so that there is one to end) and returns the name of the one it ended. */
async function switchSegment(pg: Cluster): Promise<string> {
  await pg.sql(`select pg_logical_emit_message(false, 'pgkeep-bench', 'switch')`)
  const [{ w }] = await pg.sql<{ w: string }>('select pg_walfile_name(pg_switch_wal()) w')
  return w
}

/**
 * Points archive_command at `archive` and returns once a segment ended after that is there: the archiver takes the
 * reload in its own time, so a segment ended just after it may still go to the old command (`true`); every
 * segment from the base backup's start on will be there.
 */
async function archiveTo(pg: Cluster, archive: string): Promise<void> {
  await pg.sql(`alter system set archive_command = ${`'cp %p ${archive}/%f'`}`)
  await pg.reload()
  for (let i = 0; !(await archiverDone(pg, archive, await switchSegment(pg))); i++) {
    if (i === 20) throw new Error(`archive_command = cp into ${archive} not taken after ${i} segments`)
    await sleep(200)
  }
}

/**
 * About `mb` MB of WAL on the source: batches of inserts (a third random bytes, the rest repetitive text, so the
 * WAL compresses somewhat as a database's does) and random single-row updates of pgbench_accounts (index lookups,
 * full-page images after each checkpoint); then the token row.
 */
async function generateWal(pg: Cluster, mb: number): Promise<Generated> {
  const [{ maxAid }] = await pg.sql<{ maxAid: number }>('select max(aid)::int "maxAid" from pgbench_accounts')
  const [{ start }] = await pg.sql<{ start: string }>('select pg_current_wal_lsn()::text start')
  const batch = 20_000
  let rows = 0
  for (;;) {
    const [{ bytes }] = await pg.sql<{ bytes: string }>('select pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint::text bytes', [start])
    if (Number(bytes) >= mb * MB) break
    await pg.sql(
      `insert into bench_recovery select g, gen_random_bytes(64) || convert_to(repeat(md5(g::text), 4), 'UTF8') from generate_series(${rows + 1}, ${rows + batch}) g`,
    )
    rows += batch
    await pg.sql(
      `update pgbench_accounts set abalance = abalance + 1 where aid = any (array(select 1 + (random() * ${maxAid - 1})::int from generate_series(1, 2000)))`,
    )
  }
  const token = randomBytes(8).toString('hex')
  await pg.sql('insert into bench_recovery_marker values ($1)', [token])
  const [{ endLsn, walBytes }] = await pg.sql<{ endLsn: string; walBytes: string }>(
    `select pg_current_wal_lsn()::text "endLsn", pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint::text "walBytes"`,
    [start],
  )
  return { token, endLsn, rows, walBytes: Number(walBytes) }
}

/** A server recovering in `dir`: its data directory, socket and the file the restore_command's timings go to. */
interface RunDirs {
  dir: string
  data: string
  sock: string
  times: string
}

/**
 * Extracts the base backup into a fresh directory (the tablespace beside it: tablespace_map is rewritten so that
 * recovery never touches the source's tablespace), writes recovery.signal and the settings, hands it over.
 */
async function prepareRun(base: string, dir: string, restoreCommand: (times: string) => string, port: number): Promise<RunDirs> {
  await rm(dir, { recursive: true, force: true })
  const data = join(dir, 'data')
  const sock = join(dir, 'sock')
  const times = join(dir, 'restore-command-times')
  await mkdir(join(data, 'pg_wal'), { recursive: true })
  await mkdir(sock)
  await execFileP('tar', ['-xf', join(base, 'base.tar'), '-C', data])
  await execFileP('tar', ['-xf', join(base, 'pg_wal.tar'), '-C', join(data, 'pg_wal')])
  const map: string[] = []
  for (const tar of (await readdir(base)).filter((n) => /^\d+\.tar$/.test(n))) {
    const oid = tar.slice(0, -'.tar'.length)
    const ts = join(dir, `ts-${oid}`)
    await mkdir(ts, { mode: 0o700 })
    await execFileP('tar', ['-xf', join(base, tar), '-C', ts])
    map.push(`${oid} ${ts}\n`)
  }
  if (map.length) await writeFile(join(data, 'tablespace_map'), map.join(''))
  await writeFile(join(data, 'recovery.signal'), '')
  await appendFile(
    join(data, 'postgresql.auto.conf'),
    '\n' +
      formatConf({
        port,
        listen_addresses: '',
        unix_socket_directories: sock,
        // The copy must not archive into the source's archive after its promotion.
        archive_mode: false,
        restore_command: restoreCommand(times),
      }),
  )
  await writeFile(times, '')
  const u = serverUser()
  if (u.drop) execFileSync('chown', ['-R', `${u.uid}:${u.gid}`, dir])
  await chmod(data, 0o700)
  return { dir, data, sock, times }
}

/** Sums the restore_command calls' CPU and takes their peak RSS from /usr/bin/time's lines. */
async function restoreCommandUsage(times: string): Promise<{ userS: number; sysS: number; maxRssKb: number; calls: number }> {
  const text = await readFile(times, 'utf8')
  let userS = 0
  let sysS = 0
  let maxRssKb = 0
  let calls = 0
  for (const m of text.matchAll(/^RESTORE-TIME ([\d.]+) ([\d.]+) (\d+)$/gm)) {
    userS += Number(m[1])
    sysS += Number(m[2])
    maxRssKb = Math.max(maxRssKb, Number(m[3]))
    calls++
  }
  return { userS, sysS, maxRssKb, calls }
}

/**
 * Polls the recovering server (over its socket, as it accepts connections once consistent) until
 * pg_is_in_recovery() is false; returns the connected client and when recovery was seen to end.
 */
async function awaitRecoveryEnd(d: RunDirs, port: number, exited: () => string | undefined): Promise<{ client: pg.Client; at: number }> {
  let client: pg.Client | undefined
  for (;;) {
    const why = exited()
    if (why !== undefined) throw new Error(`the recovering server exited before recovery ended: ${why}`)
    try {
      if (!client) {
        const c = new pg.Client({ host: d.sock, port, user: 'postgres', database: 'postgres' })
        c.on('error', () => {})
        await c.connect()
        client = c
      }
      const { rows } = await client.query<{ r: boolean }>('select pg_is_in_recovery() r')
      if (!rows[0]!.r) return { client, at: performance.now() }
    } catch {
      await client?.end().catch(() => {})
      client = undefined
    }
    await sleep(50)
  }
}

/** Fails unless the recovered server holds everything the source wrote: the token, every row, the last LSN. */
async function verifyReplayed(client: pg.Client, g: Generated): Promise<void> {
  const { rows } = await client.query<{ token: string | null; rows: number; replayed: boolean }>(
    `select (select token from bench_recovery_marker) token, (select count(*)::int from bench_recovery) "rows",
            pg_last_wal_replay_lsn() >= $1::pg_lsn replayed`,
    [g.endLsn],
  )
  const r = rows[0]!
  if (r.token !== g.token || r.rows !== g.rows || !r.replayed) {
    throw new Error(
      `recovery ended early: token ${r.token ?? 'missing'} (expected ${g.token}), ${r.rows} of ${g.rows} rows, ` +
        `${r.replayed ? '' : 'not '}replayed up to ${g.endLsn}`,
    )
  }
}

/**
 * One measured recovery: the server (as the server user, under /usr/bin/time) from its start until recovery has
 * ended, then checked and stopped. Wall time is start → pg_is_in_recovery() false; the server's CPU (its
 * processes and the restore_command processes it waited for) comes from /usr/bin/time once it is stopped.
 */
async function recoverOnce(
  major: Cluster['major'],
  base: string,
  dir: string,
  restoreCommand: (times: string) => string,
  g: Generated,
  serverEnv: NodeJS.ProcessEnv,
) {
  const port = await freePort()
  const d = await prepareRun(base, dir, restoreCommand, port)
  const bins = pgBinaries(major)
  await syncDisks()
  const load1 = os.loadavg()[0]
  const u = serverUser()
  let exit: string | undefined
  let log = ''
  const t0 = performance.now()
  const server = measure(bins.postgres, ['-D', d.data], serverEnv, u.drop ? { uid: u.uid, gid: u.gid } : {}).then(
    (m) => {
      exit ??= 'exited 0'
      log = m.stderr
      return m
    },
    (err: Error) => {
      exit = err.message.slice(-3000)
      throw err
    },
  )
  server.catch(() => {}) // awaited below; a server that exits early is reported through `exit`
  let client: pg.Client | undefined
  try {
    const end = await awaitRecoveryEnd(d, port, () => exit)
    client = end.client
    const wallMs = end.at - t0
    try {
      await verifyReplayed(client, g)
    } finally {
      await client.end().catch(() => {})
    }
    await runAsServer(bins.pgCtl, ['-D', d.data, '-m', 'fast', '-w', '-t', '300', 'stop'])
    const m = await server
    return { wallMs, load1, serverUserS: m.userS, serverSysS: m.sysS, usage: await restoreCommandUsage(d.times) }
  } catch (err) {
    if (exit === undefined) await runAsServer(bins.pgCtl, ['-D', d.data, '-m', 'immediate', '-w', 'stop']).catch(() => {})
    await server.catch(() => {})
    throw new Error(`${(err as Error).message}\nserver log (end):\n${(log || exit || '').slice(-3000)}`)
  } finally {
    await stopPrefetchDaemon(join(d.data, 'pg_wal'))
    await rm(dir, { recursive: true, force: true, maxRetries: 5 })
  }
}

/**
 * The recovery group: base backup, `walMb` MB of WAL archived with cp, the segments pushed into the repositories,
 * then for each run every variant in turn (alternating), recorded like the other groups.
 */
export async function recoveryRuns(ctx: RecoveryCtx, specs: VariantSpec[]): Promise<void> {
  const { pg } = ctx
  const dir = join(ctx.work, 'recovery')
  const archive = join(dir, 'archive')
  const base = join(dir, 'base')
  await mkdir(dir, { mode: 0o755 })
  await mkdir(archive, { mode: 0o700 })
  await handOver(archive)
  await pg.sql('create table bench_recovery (id bigint, payload bytea)')
  await pg.sql('create table bench_recovery_marker (token text)')
  await archiveTo(pg, archive)
  const pgBasebackup = debianTool('pg_basebackup')!
  await execFileP(pgBasebackup, ['-d', pg.url(), '-D', base, '-Ft', '-X', 'stream', '--checkpoint=fast'], { env: { PATH: process.env.PATH } })
  const t0 = performance.now()
  const g = await generateWal(pg, ctx.walMb)
  await waitArchived(pg, archive, await switchSegment(pg))
  await pg.sql(`alter system set archive_command = 'true'`)
  await pg.reload()
  const segments = (await readdir(archive)).filter((n) => SEGMENT_RE.test(n)).sort()
  ctx.log(
    `recovery: base backup, then ${(g.walBytes / MB).toFixed(0)} MB of WAL (${segments.length} segments archived) in ${((performance.now() - t0) / 1000).toFixed(0)} s`,
  )

  const repos: { kind: 'fs' | 's3'; repo: RecoveryRepo }[] = [{ kind: 'fs', repo: await ctx.openRepo('fs', 'recovery-repo-fs') }]
  if (ctx.withS3) repos.push({ kind: 's3', repo: await ctx.openRepo('s3', 'recovery-repo-s3') })
  for (const { repo } of repos) {
    for (const seg of segments) {
      const res = await runMain(['wal', 'push', '--repo', repo.url, join(archive, seg)], repo.env)
      if (res.code !== 0) throw new Error(`pgkeep wal push ${seg} failed: ${res.stderr}`)
    }
  }
  // `wal get` runs as the server user, as restore_command does: the fs repository becomes that user's.
  const u = serverUser()
  if (u.drop) execFileSync('chown', ['-R', `${u.uid}:${u.gid}`, repos[0]!.repo.url])
  ctx.log(`recovery: ${segments.length} segments stored in ${repos.map((r) => r.kind).join(' and ')} repositories`)

  const timed = (times: string, command: string) => `/usr/bin/time -a -o ${sh(times)} -f 'RESTORE-TIME %U %S %M' ${command}`
  const walGet = (repo: RecoveryRepo) => {
    // The repository's AWS_* settings go on the command line: the server's environment is the same for every variant.
    const vars = Object.entries(repo.env)
      .filter(([k, v]) => k.startsWith('AWS_') && v !== undefined)
      .map(([k, v]) => `${k}=${sh(v!)} `)
      .join('')
    return (times: string) => `${vars}${timed(times, `${sh(ctx.bin)} wal get --repo ${sh(repo.url)} %f %p`)}`
  }
  const cases: [VariantSpec, (times: string) => string][] = [[spec(specs, RV.cp), (times) => timed(times, `cp ${sh(archive)}/%f %p`)]]
  for (const { kind, repo } of repos) cases.push([spec(specs, kind === 'fs' ? RV.fs : RV.s3), walGet(repo)])

  const runDir = join(dir, 'run')
  const serverEnv = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: runDir, LANG: 'C.UTF-8' }
  try {
    for (let run = 0; run < ctx.runs; run++) {
      ctx.log(`recovery run ${run + 1} of ${ctx.runs}${run < ctx.warmup ? ' (warm-up)' : ''}`)
      for (const [s, command] of cases) {
        const r = await recoverOnce(pg.major, base, runDir, command, g, serverEnv)
        await ctx.record({
          group: s.group,
          variant: s.name,
          side: s.side,
          run,
          warmup: run < ctx.warmup,
          wallMs: r.wallMs,
          userS: r.usage.userS,
          sysS: r.usage.sysS,
          maxRssKb: r.usage.maxRssKb,
          bytesRead: g.walBytes,
          load1: r.load1,
          serverUserS: r.serverUserS,
          serverSysS: r.serverSysS,
          restoreCalls: r.usage.calls,
        })
        ctx.log(`recovery: ${s.name}: ${(r.wallMs / 1000).toFixed(2)} s, ${r.usage.calls} restore_command calls`)
      }
    }
  } finally {
    for (const { repo } of repos) await repo.remove()
    await rm(dir, { recursive: true, force: true })
  }
}

const spec = (specs: VariantSpec[], name: string) => specs.find((s) => s.group === 'recovery' && s.name === name)!
