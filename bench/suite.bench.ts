// The benchmark suite behind `npm run bench` (bench/run.js sets its PGKEEP_BENCH_* variables): pgkeep against what
// a user would run instead, on the same data in the same run — pg_basebackup, tar, cp, one GET per object — plus
// the physical limit, on PostgreSQL 15 (Debian's pg_basebackup 15 fits it) and 17 (server-side incrementals).
// Variants alternate within each run after a warm-up; medians, ratios, bars; JSON lines, markdown and SVG out.

import { appendFile, chmod, copyFile, mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import { execFileSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import os from 'node:os'
import { basename, dirname, join } from 'node:path'
import { it } from 'vitest'
import { type Cluster, PASSWORD, ROLES, startCluster } from '../test/harness/cluster.js'
import { runMain } from '../test/harness/cli.js'
import { debianTool } from '../test/harness/reference-tools.js'
import { startS3Server, type S3TestServer } from '../test/harness/s3-server.js'
import { handOver } from '../test/harness/server-user.js'
import { loadBenchData, touchPages, zstdRatio } from './bench-data.js'
import { dirBytes, S3Objects, s3Env, syncDisks } from './bench-fs.js'
import { type Measured, measure } from './measure.js'
import {
  type BarResult,
  formatBytes,
  formatMarkdown,
  type GroupSpec,
  type RunMeta,
  type Sample,
  summarize,
  type VariantSpec,
  type VariantSummary,
} from './report.js'
import { formatSvg } from './svg-chart.js'
import { summarizeCpuProfiles } from './cpu-profile.js'
import { stopPrefetchDaemon } from './prefetch-daemon.js'
import { RECOVERY_GOALS, RV, recoveryGroup, recoveryRuns, recoveryVariants, waitArchived } from './recovery-bench.js'

const env = process.env
const config = {
  scale: Number(env.PGKEEP_BENCH_SCALE ?? 90),
  runs: Number(env.PGKEEP_BENCH_RUNS ?? 3),
  warmup: Number(env.PGKEEP_BENCH_WARMUP ?? 1),
  repoKinds: (env.PGKEEP_BENCH_REPO_KIND ?? 'fs').split(',').map((k) => k.trim()) as RepoKind[],
  walSegments: Number(env.PGKEEP_BENCH_WAL_SEGMENTS ?? 100),
  outDir: env.PGKEEP_BENCH_OUT ?? join(import.meta.dirname, 'results'),
  /** Clusters of this many small tables whose backups' memory is measured (none: empty). */
  relations: (env.PGKEEP_BENCH_RELATIONS ?? '20000,40000')
    .split(',')
    .filter((x) => x !== '' && x !== '0')
    .map(Number),
  /** Also a cluster of twice the scale, for the backup's memory when the data doubles. */
  doubled: env.PGKEEP_BENCH_DOUBLED === '1',
  /** MB of WAL the end-to-end recovery rows replay (0: no recovery rows). */
  recoveryWalMb: Number(env.PGKEEP_BENCH_RECOVERY_WAL_MB ?? 1024),
  /** One more, unrecorded run at the end with every pgkeep process under `node --cpu-prof`. */
  profile: env.PGKEEP_BENCH_PROFILE === '1',
  /** Only these groups are measured (ids as in allGroups()); undefined: all. For work on one row. */
  only: env.PGKEEP_BENCH_ONLY ? new Set(env.PGKEEP_BENCH_ONLY.split(',')) : undefined,
}
/** The backup and restore groups build on each other: naming one in --only measures the three. */
const BACKUP_GROUPS = ['full', 'incremental', 'restore']
/** Whether group `id` is measured in this run (--only). */
const measures = (id: string) =>
  config.only === undefined || config.only.has(id) || (BACKUP_GROUPS.includes(id) && BACKUP_GROUPS.some((g) => config.only!.has(g)))
/** Runs per section: warm-ups, measured runs, and the profiled run when asked for. */
const totalRuns = () => config.warmup + config.runs + (config.profile ? 1 : 0)
const isProfileRun = (run: number) => run >= config.warmup + config.runs
const runLabel = (run: number) => `${run + 1} of ${totalRuns()}${run < config.warmup ? ' (warm-up)' : isProfileRun(run) ? ' (profiled)' : ''}`
const slug = (s: string) =>
  s
    .replace(/[^A-Za-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')
    .toLowerCase()
const profileDir = (spec: VariantSpec) => join(config.outDir, 'profiles', slug(`${spec.group} ${spec.name}`))
type RepoKind = 'fs' | 's3'

const ROOT = join(import.meta.dirname, '..')
/** The compiled CLI under measurement: bench/run.js's private copy, else this checkout's. */
const BUILD = env.PGKEEP_BENCH_BUILD ?? ROOT
/** The `pgkeep` command as users run it (a shell script that starts node on ENTRY with its process settings). */
const BIN = join(BUILD, 'bin', 'pgkeep')
/** The CLI's entry point: what restore_command runs, and what the profiled runs start under node --cpu-prof. */
const ENTRY = join(BUILD, 'bin', 'pgkeep.js')
/**
 * The process settings BIN gives node (docs/operations.md, "The process"): its malloc settings and node's flags,
 * for the profiled runs and the receive row (pgkeep's protocol code, run as pgkeep runs it) to have them too.
 */
function binSetting(re: RegExp, what: string): string {
  const m = re.exec(readFileSync(BIN, 'utf8'))
  if (!m) throw new Error(`the benchmark cannot find ${what} in ${BIN}: update binSetting's pattern to the launcher`)
  return m[1]!
}
const BIN_TUNABLES = binSetting(/GLIBC_TUNABLES=(\S+)/, 'GLIBC_TUNABLES')
const BIN_NODE_FLAGS = binSetting(/^flags=(\S+)$/m, "node's flags").split(' ')
/** What the launcher adds to node's flags for `backup` (the receive row is a backup's protocol code). */
const BIN_BACKUP_FLAGS = binSetting(/flags="\$flags ([^"]+)"/, "node's flags for backup").split(' ')
const nodeFlagsOf = (variant: string) => (variant.startsWith('pgkeep backup') ? [...BIN_NODE_FLAGS, ...BIN_BACKUP_FLAGS] : BIN_NODE_FLAGS)
const RECEIVE_LIMIT = join(BUILD, 'bench', 'receive-limit.mjs')
const STORE_LIMIT = join(BUILD, 'bench', 'store-limit.mjs')
const SEGMENT_RE = /^[0-9A-F]{24}$/

/** Variant names: the JSON lines, the table, the chart and the smoke test all use these. */
export const V = {
  receive: 'receive BASE_BACKUP, discard (protocol/)',
  tarRead: 'tar -cf - of PGDATA and tablespace | wc -c',
  storeLimit: 'SHA-256 and zstd -1 of each 1 MiB of the files, one thread',
  loadLimit: 'zstd decode and SHA-256 check of those windows, one thread',
  basebackup: 'pg_basebackup -Ft -X stream',
  basebackupZstd: 'pg_basebackup -Ft -X stream --compress=client-zstd:1',
  full: 'pgkeep backup (full)',
  incremental: 'pgkeep backup (incremental)',
  serverIncremental: 'pgkeep backup (incremental, server-side)',
  tarExtract: 'tar -xf of the pg_basebackup tars',
  tarExtractSync: 'tar -xf of the pg_basebackup tars, then sync',
  restore1: 'pgkeep restore --jobs 1',
  restore4: 'pgkeep restore --jobs 4',
  restore4NoSync: 'pgkeep restore --jobs 4 --no-sync',
  cp: 'cp from a directory archive',
  curl: 'curl GET from S3 (s3rver)',
  walGetFs: 'pgkeep wal get (fs repository)',
  walGetS3: 'pgkeep wal get (S3 repository)',
  basebackupScale: 'pg_basebackup -Ft -X stream',
  fullScale: 'pgkeep backup (full)',
  incrementalScale: 'pgkeep backup (incremental)',
} as const

/** The groups of the memory rows: clusters of many small tables, and the bench data at twice the scale. */
const scaleGroups = (): { id: string; title: string; relations?: number }[] => [
  ...config.relations.map((n) => ({ id: `relations-${n}`, title: `PG 15, ${n} small tables`, relations: n })),
  ...(config.doubled ? [{ id: 'doubled', title: `PG 15, data doubled (pgbench scale ${2 * config.scale})` }] : []),
]

const startedAt = performance.now()
/** Progress on the console, with the time since the suite started (where the time goes, and how far it is). */
const log = (text: string) => console.log(`[bench +${((performance.now() - startedAt) / 1000).toFixed(1)} s] ${text}`)

const kindName = (name: string, kind: RepoKind) => (kind === 's3' ? `${name} · S3` : name)

/** The groups this run measures. */
function groups(): GroupSpec[] {
  return allGroups().filter((g) => measures(g.id))
}

function allGroups(): GroupSpec[] {
  return [
    { id: 'limit', title: 'Physical limit (PG 15)' },
    { id: 'full', title: 'Full backup (PG 15)' },
    { id: 'incremental', title: 'Backup after 1% of pages changed (PG 15)' },
    { id: 'restore', title: 'Restore (PG 15)' },
    { id: 'pg17', title: 'PG 17, summarize_wal = on' },
    { id: 'wal', title: `WAL: ${config.walSegments} segments, one process each` },
    ...(config.recoveryWalMb > 0 ? [recoveryGroup(config.recoveryWalMb)] : []),
    ...scaleGroups().map((g) => ({ id: g.id, title: g.title })),
  ]
}

/** Restore --jobs 4 against tar -xf of pg_basebackup's tars: the bar, with every byte still verified. */
const RESTORE_GOAL = 1.3
/**
 * Restore --jobs 4 of many small relations against tar -xf and then `sync`: "many small files must cost about what
 * they cost tar" (the issue measured tar with sync). A restore makes every file durable before pg_control; without
 * the sync, tar's files are still in the page cache when it stops the clock (the --no-sync row compares that).
 */
const MANY_FILES_RESTORE_GOAL = 2
/** The groups that back up and restore the bench data itself (their peak RSS has the 200 MB bar). */
const BENCH_DATA_GROUPS = new Set(['full', 'incremental', 'restore', 'pg17'])

/** The variants this run measures. */
function variants(kinds: RepoKind[]): VariantSpec[] {
  return allVariants(kinds).filter((v) => measures(v.group))
}

function allVariants(kinds: RepoKind[]): VariantSpec[] {
  const per = (f: (k: RepoKind) => VariantSpec[]) => kinds.flatMap(f)
  return [
    { group: 'limit', name: V.receive, side: 'limit' },
    { group: 'limit', name: V.tarRead, side: 'limit' },
    { group: 'limit', name: V.storeLimit, side: 'limit' },
    { group: 'limit', name: V.loadLimit, side: 'limit' },
    { group: 'full', name: V.basebackup, side: 'reference' },
    { group: 'full', name: V.basebackupZstd, side: 'reference', ref: V.basebackup },
    ...per((k) => [{ group: 'full', name: kindName(V.full, k), side: 'pgkeep', repoKind: k, ref: V.basebackup, goalRatio: 1.5 }]),
    { group: 'incremental', name: V.basebackup, side: 'reference' },
    ...per((k) => [{ group: 'incremental', name: kindName(V.incremental, k), side: 'pgkeep', repoKind: k, ref: V.basebackup, goalRatio: 1 }]),
    { group: 'restore', name: V.tarExtract, side: 'reference' },
    ...per((k) => [
      { group: 'restore', name: kindName(V.restore1, k), side: 'pgkeep', repoKind: k, ref: V.tarExtract },
      { group: 'restore', name: kindName(V.restore4, k), side: 'pgkeep', repoKind: k, ref: V.tarExtract, goalRatio: RESTORE_GOAL },
      { group: 'restore', name: kindName(V.restore4NoSync, k), side: 'pgkeep', repoKind: k, ref: V.tarExtract },
    ]),
    ...per((k) => [
      { group: 'pg17', name: kindName(V.full, k), side: 'pgkeep', repoKind: k },
      { group: 'pg17', name: kindName(V.serverIncremental, k), side: 'pgkeep', repoKind: k, ref: kindName(V.full, k), goalRatio: 0.2 },
    ]),
    { group: 'wal', name: V.cp, side: 'reference' },
    { group: 'wal', name: V.curl, side: 'reference' },
    { group: 'wal', name: V.walGetFs, side: 'pgkeep', repoKind: 'fs', ref: V.cp },
    { group: 'wal', name: V.walGetS3, side: 'pgkeep', repoKind: 's3', ref: V.curl, goalRatio: 1 / 3 },
    // Like the per-call WAL row, the recovery row always fetches from both kinds of repository (the two bars).
    ...(config.recoveryWalMb > 0 ? recoveryVariants(true) : []),
    ...scaleGroups().flatMap((g): VariantSpec[] => [
      { group: g.id, name: V.basebackupScale, side: 'reference' },
      { group: g.id, name: V.fullScale, side: 'pgkeep', repoKind: 'fs', ref: V.basebackupScale },
      ...(g.relations
        ? [
            { group: g.id, name: V.incrementalScale, side: 'pgkeep' as const, repoKind: 'fs' as const, ref: V.basebackupScale },
            { group: g.id, name: V.tarExtract, side: 'reference' as const },
            { group: g.id, name: V.tarExtractSync, side: 'reference' as const },
            { group: g.id, name: V.restore4, side: 'pgkeep' as const, repoKind: 'fs' as const, ref: V.tarExtractSync, goalRatio: MANY_FILES_RESTORE_GOAL },
            { group: g.id, name: V.restore4NoSync, side: 'pgkeep' as const, repoKind: 'fs' as const, ref: V.tarExtract },
          ]
        : []),
    ]),
  ]
}

/** Appends each sample to suite.jsonl as it is measured, so that an interrupted run keeps what it measured. */
class Recorder {
  readonly samples: Sample[] = []
  constructor(
    readonly file: string,
    readonly runId: string,
  ) {}
  async add(s: Omit<Sample, 'suite' | 'runId'>): Promise<void> {
    const full: Sample = { suite: 'pgkeep-bench', runId: this.runId, ...s }
    this.samples.push(full)
    await appendFile(this.file, JSON.stringify(full) + '\n')
  }
}

/** A clean environment for every measured command, as a user's shell would have (no test runner variables). */
function baseEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: `${dirname(process.execPath)}:${env.PATH ?? '/usr/bin:/bin'}`,
    HOME: env.HOME ?? '/root',
    LANG: 'C.UTF-8',
    PGPASSWORD: PASSWORD,
    ...extra,
  }
}

interface Ctx {
  rec: Recorder
  work: string
  s3: S3TestServer
  objects: S3Objects
  runId: string
  /** Size of the database the runs being measured work on (for CPU-s per GB); undefined for the WAL rows. */
  databaseBytes?: number
}

/** One measured run: `sync` first (untimed), then the command under /usr/bin/time; `after` adds sizes. */
async function measured(
  ctx: Ctx,
  spec: VariantSpec,
  run: number,
  cmd: string,
  args: string[],
  runEnv: NodeJS.ProcessEnv,
  after?: (m: Measured) => Promise<Partial<Sample>>,
): Promise<Measured> {
  await syncDisks()
  const load1 = os.loadavg()[0]
  if (isProfileRun(run)) {
    // Not recorded: profiling slows the process. pgkeep runs through a wrapper that adds --cpu-prof (Node 20 does
    // not take it from NODE_OPTIONS); the WAL loops find the wrapper in $PGKEEP.
    let profiled = { cmd, env: runEnv }
    if (spec.side === 'pgkeep') {
      const dir = profileDir(spec)
      await rm(dir, { recursive: true, force: true })
      const wrapper = join(ctx.work, `profiled-${slug(spec.name)}.sh`)
      const script = `#!/bin/sh\nexport GLIBC_TUNABLES="\${GLIBC_TUNABLES-${BIN_TUNABLES}}"\nexec "${process.execPath}" ${nodeFlagsOf(spec.name).join(' ')} --cpu-prof --cpu-prof-dir="${dir}" "${ENTRY}" "$@"\n`
      await writeFile(wrapper, script, {
        mode: 0o755,
      })
      profiled = { cmd: cmd === BIN ? wrapper : cmd, env: { ...runEnv, PGKEEP: wrapper } }
    }
    const m = await measure(profiled.cmd, args, profiled.env)
    if (after) await after(m)
    return m
  }
  const m = await measure(cmd, args, runEnv)
  const extra = after ? await after(m) : {}
  await ctx.rec.add({
    group: spec.group,
    variant: spec.name,
    side: spec.side,
    run,
    warmup: run < config.warmup,
    wallMs: m.ms,
    userS: m.userS,
    sysS: m.sysS,
    maxRssKb: m.maxRssKb,
    databaseBytes: ctx.databaseBytes,
    load1,
    ...extra,
  })
  return m
}

/** A pgkeep repository of one kind for one run: its URL, environment, size and removal. */
interface BenchRepo {
  url: string
  env: NodeJS.ProcessEnv
  bytes(): Promise<number>
  remove(): Promise<void>
}

async function openBenchRepo(ctx: Ctx, kind: RepoKind, name: string): Promise<BenchRepo> {
  if (kind === 'fs') {
    const dir = join(ctx.work, name)
    await rm(dir, { recursive: true, force: true })
    return initBenchRepo({ url: dir, env: baseEnv(), bytes: () => dirBytes(dir), remove: () => rm(dir, { recursive: true, force: true }) })
  }
  const prefix = `${ctx.s3.prefix}bench-${ctx.runId}/${name}/`
  await ctx.objects.removePrefix(prefix)
  return initBenchRepo({
    url: `s3://${ctx.s3.bucket}/${prefix}`,
    env: baseEnv(s3Env(ctx.s3)),
    bytes: () => ctx.objects.prefixBytes(prefix),
    remove: () => ctx.objects.removePrefix(prefix),
  })
}

/** Creates the repository (only `init` does; encrypted when the environment has a passphrase), outside any measurement. */
async function initBenchRepo(r: BenchRepo): Promise<BenchRepo> {
  const res = await runMain(['init', '--repo', r.url, ...(r.env.PGKEEP_PASSPHRASE ? ['--encrypt'] : [])], r.env)
  if (res.code !== 0) throw new Error(`pgkeep init --repo ${r.url} failed: ${res.stderr}`)
  return r
}

/** `pgkeep backup` into `repo`, recording the repository's growth and the facts of pgkeep's JSON result. */
async function pgkeepBackup(ctx: Ctx, spec: VariantSpec, run: number, pg: Cluster, repo: BenchRepo, type: 'full' | 'incremental') {
  const before = await repo.bytes()
  let result: { storedBytes: number; sizeBytes: number; incrementalMode: string | null; type: string } | undefined
  await measured(ctx, spec, run, BIN, ['backup', '-d', pg.url(), '--repo', repo.url, '--type', type, '--json'], repo.env, async (m) => {
    result = JSON.parse(m.stdout)
    return { repoGrowthBytes: (await repo.bytes()) - before }
  })
  return result!
}

/** pg_basebackup -Ft -X stream into a fresh directory; returns the directory (removed by the caller). */
async function basebackup(ctx: Ctx, spec: VariantSpec, run: number, pg: Cluster, extra: string[] = []): Promise<string> {
  const out = join(ctx.work, `basebackup-${run}-${extra.length}`)
  await rm(out, { recursive: true, force: true })
  const args = ['-h', '127.0.0.1', '-p', String(pg.port), '-U', ROLES.repl, '-D', out, '-Ft', '-X', 'stream', '--checkpoint=fast', ...extra]
  await measured(ctx, spec, run, debianTool('pg_basebackup')!, args, baseEnv(), async () => ({ bytesWritten: await dirBytes(out) }))
  return out
}

/** Measured runs of PostgreSQL 15: limit, full, incremental after 1%, restore; then the WAL group. */
async function suite15(ctx: Ctx, specs: VariantSpec[], meta: Partial<RunMeta>): Promise<void> {
  const spec = (group: string, name: string) => specs.find((s) => s.group === group && s.name === name)!
  const archive = join(ctx.work, 'wal-archive')
  await mkdir(archive, { mode: 0o700 })
  await handOver(archive)
  const pg = await startCluster({ major: 15, conf: { archive_mode: 'on', archive_command: `cp %p ${archive}/%f` } })
  try {
    const [{ v }] = await pg.sql<{ v: string }>(`select current_setting('server_version') v`)
    meta.postgres = { ...meta.postgres, 15: v }
    const t0 = performance.now()
    const data = await loadBenchData(pg, config.scale)
    meta.databaseBytes = data.databaseBytes
    ctx.databaseBytes = data.databaseBytes
    const ts = pg.tablespaceDirs[0]!
    meta.zstd = await zstdRatio([pg.dataDir, ts], ['./pg_wal'])
    log(
      `PG 15 loaded in ${((performance.now() - t0) / 1000).toFixed(0)} s: ${(data.databaseBytes / 1e6).toFixed(0)} MB, zstd -1 ratio ${meta.zstd.ratio.toFixed(2)}`,
    )
    // Also for runs of other groups (--only): it adds data and turns archiving off, the state every group measures.
    const segments = await archivedSegments(pg, archive, config.walSegments)
    log(`${segments.length} WAL segments archived`)

    const backupRuns = BACKUP_GROUPS.some(measures)
    for (let run = 0; run < totalRuns() && (measures('limit') || backupRuns); run++) {
      log(`PG 15 run ${runLabel(run)}`)
      if (measures('limit')) await limitRuns(ctx, spec, run, pg, ts)
      if (!backupRuns) continue

      // Full backups, alternating.
      await rm(await basebackup(ctx, spec('full', V.basebackup), run, pg), { recursive: true, force: true })
      const repos: Partial<Record<RepoKind, BenchRepo>> = {}
      for (const k of config.repoKinds) {
        repos[k] = await openBenchRepo(ctx, k, `repo-${k}-${run}`)
        await pgkeepBackup(ctx, spec('full', kindName(V.full, k)), run, pg, repos[k]!, 'full')
      }
      await rm(await basebackup(ctx, spec('full', V.basebackupZstd), run, pg, ['--compress=client-zstd:1']), { recursive: true, force: true })

      // About 1% of the pages change; then an incremental pgkeep backup against a full pg_basebackup.
      meta.touchedPages = await touchPages(pg, 1)
      for (const k of config.repoKinds) await pgkeepBackup(ctx, spec('incremental', kindName(V.incremental, k)), run, pg, repos[k]!, 'incremental')
      const tars = await basebackup(ctx, spec('incremental', V.basebackup), run, pg)

      // Restore of that state: tar -xf of pg_basebackup's tars against pgkeep restore of its latest backup.
      await restoreRuns(ctx, (name) => specs.find((s) => s.group === 'restore' && s.name === name)!, run, ts, tars, repos)
      await rm(tars, { recursive: true, force: true })
      for (const r of Object.values(repos)) await r.remove()
    }
    ctx.databaseBytes = undefined
    if (measures('wal')) await walRuns(ctx, specs, archive, segments, pg.dataDir)
    if (config.recoveryWalMb > 0 && measures('recovery')) {
      await recoveryRuns(
        {
          pg,
          work: ctx.work,
          // The pgkeep command, as a user writes restore_command: its launcher serves prefetched segments itself.
          bin: BIN,
          walMb: config.recoveryWalMb,
          withS3: true,
          // The profiled run is left out: the recovery rows run pgkeep through restore_command, not a wrapper.
          runs: config.warmup + config.runs,
          warmup: config.warmup,
          openRepo: (kind, name) => openBenchRepo(ctx, kind, name),
          record: (sample) => ctx.rec.add(sample),
          log,
        },
        specs,
      )
    }
  } finally {
    await pg.destroy()
  }
}

/**
 * The physical limit: the server's BASE_BACKUP received and dropped, reading the files themselves, and the CPU that
 * hashing and compressing them (and decompressing and checking them) takes on one thread.
 */
async function limitRuns(ctx: Ctx, spec: (group: string, name: string) => VariantSpec, run: number, pg: Cluster, ts: string): Promise<void> {
  const receiveArgs = [...BIN_NODE_FLAGS, ...BIN_BACKUP_FLAGS, RECEIVE_LIMIT, pg.url()]
  await measured(ctx, spec('limit', V.receive), run, process.execPath, receiveArgs, baseEnv({ GLIBC_TUNABLES: BIN_TUNABLES }), async (m) => ({
    bytesRead: JSON.parse(m.stdout).bytes,
  }))
  await measured(
    ctx,
    spec('limit', V.tarRead),
    run,
    'sh',
    ['-c', 'tar -cf - --exclude=./pg_wal -C "$1" . -C "$2" . | wc -c', 'sh', pg.dataDir, ts],
    baseEnv(),
    async (m) => ({ bytesRead: Number(m.stdout.trim()) }),
  )
  // The CPU floor of storing the files content-addressed and compressed, and of reading them back verified
  // (store-limit.mjs): nothing of pgkeep's own code runs in these two.
  const windows = join(ctx.work, 'store-limit.windows')
  try {
    const handled = async (m: Measured) => ({ bytesRead: JSON.parse(m.stdout).bytes })
    await measured(ctx, spec('limit', V.storeLimit), run, process.execPath, [STORE_LIMIT, 'store', windows, pg.dataDir, ts], baseEnv(), handled)
    await measured(ctx, spec('limit', V.loadLimit), run, process.execPath, [STORE_LIMIT, 'load', windows], baseEnv(), handled)
  } finally {
    await rm(windows, { force: true })
  }
}

/**
 * Restores: tar -xf of pg_basebackup's tars `tars` (and, with `tarSync`, once more followed by `sync`), then pgkeep
 * restore of each repository's latest backup (`variants`). With `trash`, each variant's target is moved there
 * instead of removed before the next: on ext4 without a journal (this machine's disk), a file created within
 * minutes (up to five) of as many being deleted costs several times more (the kernel skips recently deleted inodes
 * one by one: `recently_deleted` took 15% of a restore of 20,000 tables right after the previous one was removed), and
 * which variant ran after a removal would decide the row. The caller removes `trash` after its runs.
 */
async function restoreRuns(
  ctx: Ctx,
  spec: (name: string) => VariantSpec,
  run: number,
  ts: string,
  tars: string,
  repos: Partial<Record<RepoKind, BenchRepo>>,
  variants: readonly (readonly [string, readonly string[]])[] = RESTORE_VARIANTS,
  tarSync = false,
  trash?: string,
) {
  const target = join(ctx.work, 'target')
  const targetTs = join(ctx.work, 'target-ts')
  const clean = async () => {
    for (const dir of [target, targetTs]) {
      if (trash && existsSync(dir)) await rename(dir, join(trash, `${basename(dir)}-${randomUUID()}`))
      else await rm(dir, { recursive: true, force: true })
    }
  }
  const written = async () => ({ bytesWritten: (await dirBytes(target)) + (await dirBytes(targetTs)) })
  const tsTar = (await readdir(tars)).find((n) => /^\d+\.tar$/.test(n))!
  const script = 'tar -xf "$1/base.tar" -C "$2" && tar -xf "$1/pg_wal.tar" -C "$2/pg_wal" && tar -xf "$1/$4" -C "$3"'
  const extract = async (name: string, then: string) => {
    await clean()
    await mkdir(join(target, 'pg_wal'), { recursive: true, mode: 0o700 })
    await mkdir(targetTs, { mode: 0o700 })
    await measured(ctx, spec(name), run, 'sh', ['-c', script + then, 'sh', tars, target, targetTs, tsTar], baseEnv(), written)
  }
  await extract(V.tarExtract, '')
  if (tarSync) await extract(V.tarExtractSync, ' && sync')
  for (const [k, repo] of Object.entries(repos) as [RepoKind, BenchRepo][]) {
    for (const [name, extra] of variants) {
      await clean()
      const args = ['restore', '--repo', repo.url, '--pgdata', target, '--tablespace-mapping', `${ts}=${targetTs}`, '--json', ...extra]
      await measured(ctx, spec(kindName(name, k)), run, BIN, args, repo.env, written)
    }
  }
  await clean()
}

/** The restore rows of the many-relations groups: four jobs, with and without syncing. */
const MANY_FILES_RESTORE_VARIANTS = [
  [V.restore4, ['--jobs', '4']],
  [V.restore4NoSync, ['--jobs', '4', '--no-sync']],
] as const

/** The restore rows of the bench data: pgkeep restore with one and four jobs, and four without syncing. */
const RESTORE_VARIANTS = [
  [V.restore1, ['--jobs', '1']],
  [V.restore4, ['--jobs', '4']],
  [V.restore4NoSync, ['--jobs', '4', '--no-sync']],
] as const

/**
 * The archive's last `count` segments (written by archive_command during the load); more WAL is made by switching
 * segments when the load made fewer. Archiving then stops (archive_command = true), so that it does not run during
 * the measurements.
 */
async function archivedSegments(pg: Cluster, archive: string, count: number): Promise<string[]> {
  const list = async () => (await readdir(archive)).filter((n) => SEGMENT_RE.test(n)).sort()
  for (let i = 0; ; i++) {
    const [{ w }] = await pg.sql<{ w: string }>('select pg_walfile_name(pg_switch_wal()) w')
    await waitArchived(pg, archive, w)
    const names = await list()
    if (names.length >= count) {
      await pg.sql(`alter system set archive_command = 'true'`)
      await pg.reload()
      return names.slice(-count)
    }
    if (i > count + 10) throw new Error(`only ${names.length} archived segments after ${i} switches`)
    await pg.sql(`insert into bench_random (id, payload) select -g - ${i} * 10000, gen_random_bytes(480) from generate_series(1, 5000) g`)
  }
}

/**
 * `wal get` of the segments, one process each as restore_command runs, against cp and one signed GET each. Every
 * loop runs where PostgreSQL runs restore_command: in a directory standing for the data directory of a server in
 * recovery (the bench server's postmaster.pid, to which the `pgkeep` command's fast path binds its key) with `%p`
 * in its pg_wal/; pgkeep is the `pgkeep` command, as the restore_command `pgkeep restore` writes runs it.
 */
async function walRuns(ctx: Ctx, specs: VariantSpec[], archive: string, segments: string[], serverDataDir: string): Promise<void> {
  const spec = (name: string) => specs.find((s) => s.group === 'wal' && s.name === name)!
  const fsRepo = await openBenchRepo(ctx, 'fs', 'wal-repo-fs')
  const s3Repo = await openBenchRepo(ctx, 's3', 'wal-repo-s3')
  const rawPrefix = `${ctx.s3.prefix}bench-${ctx.runId}/wal-archive/`
  log(`storing ${segments.length} WAL segments in an fs and an S3 repository, and as plain S3 objects`)
  for (const seg of segments) {
    for (const r of [fsRepo, s3Repo]) {
      const res = await runMain(['wal', 'push', '--repo', r.url, join(archive, seg)], r.env)
      if (res.code !== 0) throw new Error(`pgkeep wal push ${seg} failed: ${res.stderr}`)
    }
    await ctx.objects.putFile(rawPrefix + seg, join(archive, seg))
  }
  const standIn = join(ctx.work, 'wal-pgdata')
  await rm(standIn, { recursive: true, force: true })
  await mkdir(standIn)
  await copyFile(join(serverDataDir, 'postmaster.pid'), join(standIn, 'postmaster.pid'))
  const loop = (body: string) => `cd "$PGDATA_STAND_IN" && for f in $SEGS; do ${body} || exit 1; done`
  const s3 = ctx.s3
  const common = { SEGS: segments.join(' '), SRC: archive, PGKEEP: BIN, PGDATA_STAND_IN: standIn }
  const cases: [string, string, NodeJS.ProcessEnv][] = [
    [V.cp, loop('cp "$SRC/$f" "$DEST/$f"'), baseEnv(common)],
    [
      V.curl,
      loop(
        'curl -sf --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -o "$DEST/$f" "$URL$f"',
      ),
      baseEnv({ ...common, ...s3Env(s3), URL: `${s3.endpoint}/${s3.bucket}/${rawPrefix}` }),
    ],
    [V.walGetFs, loop('"$PGKEEP" wal get --repo "$REPO" "$f" "$DEST/$f"'), { ...fsRepo.env, ...common, REPO: fsRepo.url }],
    [V.walGetS3, loop('"$PGKEEP" wal get --repo "$REPO" "$f" "$DEST/$f"'), { ...s3Repo.env, ...common, REPO: s3Repo.url }],
  ]
  for (let run = 0; run < totalRuns(); run++) {
    log(`WAL run ${runLabel(run)}`)
    for (const [name, script, caseEnv] of cases) {
      const dest = join(standIn, 'pg_wal')
      await rm(dest, { recursive: true, force: true })
      await mkdir(dest)
      try {
        await measured(ctx, spec(name), run, 'sh', ['-c', script], { ...caseEnv, DEST: dest }, async () => {
          let bytes = 0
          for (const seg of segments) bytes += (await stat(join(dest, seg))).size
          return { bytesWritten: bytes }
        })
      } finally {
        await stopPrefetchDaemon(dest)
        await rm(dest, { recursive: true, force: true, maxRetries: 5 })
      }
    }
  }
  await rm(standIn, { recursive: true, force: true })
  await fsRepo.remove()
  await s3Repo.remove()
  await ctx.objects.removePrefix(rawPrefix)
}

/** PostgreSQL 17 with summarize_wal = on: pgkeep full, then incremental after 1% (the server sends changed blocks). */
async function suite17(ctx: Ctx, specs: VariantSpec[], meta: Partial<RunMeta>): Promise<void> {
  const spec = (name: string) => specs.find((s) => s.group === 'pg17' && s.name === name)!
  const pg = await startCluster({ major: 17 })
  try {
    const [{ v }] = await pg.sql<{ v: string }>(`select current_setting('server_version') v`)
    meta.postgres = { ...meta.postgres, 17: v }
    ctx.databaseBytes = (await loadBenchData(pg, config.scale)).databaseBytes
    log('PG 17 loaded')
    for (let run = 0; run < totalRuns(); run++) {
      log(`PG 17 run ${runLabel(run)}`)
      const repos: BenchRepo[] = []
      for (const k of config.repoKinds) {
        const repo = await openBenchRepo(ctx, k, `repo17-${k}-${run}`)
        repos.push(repo)
        await pgkeepBackup(ctx, spec(kindName(V.full, k)), run, pg, repo, 'full')
      }
      await touchPages(pg, 1)
      for (const [i, k] of config.repoKinds.entries()) {
        const r = await pgkeepBackup(ctx, spec(kindName(V.serverIncremental, k)), run, pg, repos[i]!, 'incremental')
        if (r.incrementalMode !== 'server') throw new Error(`the PG 17 incremental backup was '${r.incrementalMode}', not 'server'`)
      }
      for (const r of repos) await r.remove()
    }
  } finally {
    await pg.destroy()
  }
}

/**
 * The memory rows (PostgreSQL 15, fs repository): a cluster of N small tables (one relation file each, plus the
 * catalogs), a full backup and an incremental after 1% of the tables changed, against pg_basebackup; and, with
 * --doubled, the bench data at twice the scale. Peak RSS must not grow with file count or data size.
 */
async function suiteScale(ctx: Ctx, specs: VariantSpec[]): Promise<void> {
  for (const g of scaleGroups().filter((x) => measures(x.id))) {
    const spec = (name: string) => specs.find((s) => s.group === g.id && s.name === name)!
    const pg = await startCluster({ major: 15 })
    const trash = join(ctx.work, `trash-${g.id}`)
    try {
      const t0 = performance.now()
      if (g.relations) {
        // Batches of 1000 tables a statement: one transaction each, so the lock table and WAL stay small.
        for (let i = 0; i < g.relations; i += 1000) {
          const to = Math.min(g.relations, i + 1000) - 1
          await pg.sql(
            `do $$ begin for i in ${i}..${to} loop execute format('create table bench_many_%s (id int, v text)', i); ` +
              `execute format('insert into bench_many_%s values (1, ''x'')', i); end loop; end $$`,
          )
        }
        await pg.sql('checkpoint')
        const [{ size }] = await pg.sql<{ size: string }>(`select sum(pg_database_size(datname))::text size from pg_database`)
        ctx.databaseBytes = Number(size)
      } else {
        ctx.databaseBytes = (await loadBenchData(pg, 2 * config.scale)).databaseBytes
      }
      log(`${g.title}: loaded in ${((performance.now() - t0) / 1000).toFixed(0)} s, ${formatBytes(ctx.databaseBytes)}`)
      // Restored targets of many files are removed after the group's runs, not between them (restoreRuns says why).
      await mkdir(trash, { recursive: true })
      for (let run = 0; run < totalRuns(); run++) {
        log(`${g.title}, run ${runLabel(run)}`)
        const tars = await basebackup(ctx, spec(V.basebackupScale), run, pg)
        const repo = await openBenchRepo(ctx, 'fs', `repo-${g.id}-${run}`)
        await pgkeepBackup(ctx, spec(V.fullScale), run, pg, repo, 'full')
        // Many small files: the full backup restored against tar -xf of pg_basebackup's tars of the same state.
        if (g.relations) await restoreRuns(ctx, spec, run, pg.tablespaceDirs[0]!, tars, { fs: repo }, MANY_FILES_RESTORE_VARIANTS, true, trash)
        await rm(tars, { recursive: true, force: true })
        if (g.relations) {
          await pg.sql(`do $$ begin for i in 0..${g.relations - 1} by 100 loop execute format('update bench_many_%s set id = id + 1', i); end loop; end $$`)
          await pg.sql('checkpoint')
          await pgkeepBackup(ctx, spec(V.incrementalScale), run, pg, repo, 'incremental')
        }
        await repo.remove()
      }
    } finally {
      await pg.destroy()
      await rm(trash, { recursive: true, force: true })
    }
  }
  ctx.databaseBytes = undefined
}

/**
 * Not pgkeep's figure: the least a restore that checks every byte could take against tar -xf here. The CPU of
 * decompressing and checking the windows (the load limit row) and of tar's own writing, spread perfectly over every
 * core, and never less than tar's time.
 */
function restoreFloor(load: VariantSummary | undefined, tar: VariantSummary | undefined): BarResult {
  const cpu = (r: VariantSummary | undefined) => (r?.userS != null && r.sysS != null ? r.userS + r.sysS : null)
  const loadCpu = cpu(load)
  const tarCpu = cpu(tar)
  const cores = os.availableParallelism()
  const x = loadCpu !== null && tarCpu !== null && tar ? Math.max(tar.wallMs / 1000, (loadCpu + tarCpu) / cores) / (tar.wallMs / 1000) : null
  return {
    text: `the floor of restore / tar -xf: decompress and check (limit row) and tar's CPU over ${cores} cores`,
    measured: x,
    goal: `≤ ${RESTORE_GOAL.toFixed(2)}`,
    display: x === null ? 'not measured' : x.toFixed(2),
    holds: x === null ? null : x <= RESTORE_GOAL,
  }
}

/** The bars from the medians (per repository kind for pgkeep's side). */
function bars(rows: VariantSummary[], databaseBytes: number): BarResult[] {
  const row = (group: string, name: string) => rows.find((r) => r.spec.group === group && r.spec.name === name)
  const out: BarResult[] = []
  const ratioBar = (text: string, a: VariantSummary | undefined, b: VariantSummary | undefined, goal: number) => {
    const x = a && b ? a.wallMs / b.wallMs : null
    out.push({
      text,
      measured: x,
      goal: `≤ ${goal.toFixed(2)}`,
      display: x === null ? 'not measured' : `${x.toFixed(2)}`,
      holds: x === null ? null : x <= goal,
    })
  }
  const cpuBar = (text: string, cpuSPerGb: number | null | undefined, goal: number) => {
    const x = cpuSPerGb ?? null
    out.push({ text, measured: x, goal: `≤ ${goal.toFixed(1)}`, display: x === null ? 'not measured' : x.toFixed(2), holds: x === null ? null : x <= goal })
  }
  const rssBar = (text: string, r: VariantSummary | undefined, goalMb: number) => {
    const x = r?.maxRssKb == null ? null : r.maxRssKb / 1024
    out.push({ text, measured: x, goal: `≤ ${goalMb} MB`, display: x === null ? 'not measured' : `${x.toFixed(0)} MB`, holds: x === null ? null : x <= goalMb })
  }
  cpuBar('receiving BASE_BACKUP (protocol/ alone): CPU-s per GB', row('limit', V.receive)?.cpuSPerGb, 0.5)
  // Not pgkeep's figure: what receiving and then hashing and compressing the files cost on this machine with no code
  // of pgkeep's beyond protocol/. A full backup's CPU bar below this floor cannot hold here.
  const receive = row('limit', V.receive)?.cpuSPerGb
  const store = row('limit', V.storeLimit)?.cpuSPerGb
  cpuBar('the floor of a full backup: receive + SHA-256 and zstd -1 (limit rows), CPU-s per GB', receive != null && store != null ? receive + store : null, 2.5)
  for (const k of config.repoKinds) {
    const s = k === 's3' ? ' (S3)' : ''
    ratioBar(`full backup / pg_basebackup -Ft -X stream${s}`, row('full', kindName(V.full, k)), row('full', V.basebackup), 1.5)
    cpuBar(`full backup: client CPU-s per GB${s}`, row('full', kindName(V.full, k))?.cpuSPerGb, 2.5)
    cpuBar(`incremental after 1% (PG 15): client CPU-s per GB${s}`, row('incremental', kindName(V.incremental, k))?.cpuSPerGb, 1.5)
    ratioBar(`full backup / physical limit (receive)${s}`, row('full', kindName(V.full, k)), row('limit', V.receive), 1.25)
    const inc = row('incremental', kindName(V.incremental, k))
    const pct = inc?.repoGrowthBytes != null ? (100 * inc.repoGrowthBytes) / databaseBytes : null
    out.push({
      text: `incremental after 1%: repository growth / database size${s}`,
      measured: pct,
      goal: '≤ 3%',
      display: pct === null ? 'not measured' : `${pct.toFixed(2)}%`,
      holds: pct === null ? null : pct <= 3,
    })
    ratioBar(`incremental after 1% / pg_basebackup (PG 15)${s}`, inc, row('incremental', V.basebackup), 1)
    if (k === 's3') ratioBar('incremental after 1% / full backup, both to S3', inc, row('full', kindName(V.full, k)), 1)
    ratioBar(`server-side incremental / full (PG 17)${s}`, row('pg17', kindName(V.serverIncremental, k)), row('pg17', kindName(V.full, k)), 0.2)
    ratioBar(`restore --jobs 4 / tar -xf${s}`, row('restore', kindName(V.restore4, k)), row('restore', V.tarExtract), RESTORE_GOAL)
    if (k === config.repoKinds[0]) out.push(restoreFloor(row('limit', V.loadLimit), row('restore', V.tarExtract)))
    // pgkeep's own backups and restores of the bench data: the many-relations and doubled groups have their bars below.
    const rss = rows.filter((r) => r.spec.repoKind === k && r.spec.side === 'pgkeep' && BENCH_DATA_GROUPS.has(r.spec.group) && r.maxRssKb !== null)
    const peak = rss.length ? Math.max(...rss.map((r) => r.maxRssKb!)) / 1024 : null
    out.push({
      text: `peak RSS of backup and restore${s}`,
      measured: peak,
      goal: '≤ 200 MB',
      display: peak === null ? 'not measured' : `${peak.toFixed(0)} MB`,
      holds: peak === null ? null : peak <= 200,
    })
  }
  const base = row('full', V.full)?.maxRssKb
  for (const g of scaleGroups()) {
    // Within 10% of the bar for the bench data, whatever the file count or data size.
    rssBar(`peak RSS of the full backup, ${g.title}`, row(g.id, V.fullScale), 220)
    if (g.relations) {
      rssBar(`peak RSS of the incremental backup, ${g.title}`, row(g.id, V.incrementalScale), 220)
      rssBar(`peak RSS of restore --jobs 4, ${g.title}`, row(g.id, V.restore4), 220)
      ratioBar(`restore --jobs 4 / tar -xf then sync, ${g.title}`, row(g.id, V.restore4), row(g.id, V.tarExtractSync), MANY_FILES_RESTORE_GOAL)
    }
    const r = row(g.id, V.fullScale)?.maxRssKb
    if (base != null && r != null) {
      const growth = (100 * (r - base)) / base
      out.push({
        text: `peak RSS of the full backup, ${g.title}, against the bench data's`,
        measured: growth,
        goal: '≤ +10%',
        display: `${growth >= 0 ? '+' : ''}${growth.toFixed(0)}%`,
        holds: growth <= 10,
      })
    }
  }
  if (config.recoveryWalMb > 0) {
    const recovery = (k: RepoKind) =>
      ratioBar(
        `end-to-end recovery of ${config.recoveryWalMb} MB of WAL: restore_command wal get (${k}) / cp`,
        row('recovery', k === 'fs' ? RV.fs : RV.s3),
        row('recovery', RV.cp),
        RECOVERY_GOALS[k],
      )
    recovery('fs')
    recovery('s3')
  }
  const get = row('wal', V.walGetS3)
  const curl = row('wal', V.curl)
  const speedup = get && curl ? curl.wallMs / get.wallMs : null
  out.push({
    text: `wal get of ${config.walSegments} segments: speed-up over one GET per segment from S3`,
    measured: speedup,
    goal: '≥ 3.00',
    display: speedup === null ? 'not measured' : speedup.toFixed(2),
    holds: speedup === null ? null : speedup >= 3,
  })
  return out
}

function gitDescription(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'protocol', 'bin'], { cwd: ROOT, encoding: 'utf8' }).trim() !== ''
    return dirty ? `${head} (+ uncommitted changes)` : head
  } catch {
    return 'unknown'
  }
}

function requireTools(): void {
  const missing = ['pg_basebackup', 'pgbench'].filter((t) => !debianTool(t)).map((t) => `/usr/lib/postgresql/15/bin/${t}`)
  if (!existsSync('/usr/bin/time')) missing.push('/usr/bin/time')
  for (const t of ['zstd', 'curl', 'tar']) {
    try {
      execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' })
    } catch {
      missing.push(t)
    }
  }
  if (!existsSync(join(BUILD, 'dist', 'src', 'cli', 'main.js'))) missing.push(`${BUILD}/dist (npm run build)`)
  if (missing.length) throw new Error(`the benchmark needs ${missing.join(', ')} (Debian: apt-get install postgresql-15 postgresql-client-15 time zstd curl)`)
}

it(
  `benchmark suite: pgbench scale ${config.scale}, ${config.runs} run(s), repository ${config.repoKinds.join('+')}`,
  async () => {
    requireTools()
    for (const k of config.repoKinds) if (k !== 'fs' && k !== 's3') throw new Error(`unknown repository kind '${k}' (fs or s3)`)
    const ids = allGroups().map((g) => g.id)
    const unknown = [...(config.only ?? [])].filter((id) => !ids.includes(id))
    if (unknown.length) throw new Error(`--only: no group ${unknown.join(', ')} in this run (${ids.join(', ')})`)
    await mkdir(config.outDir, { recursive: true })
    const at = new Date().toISOString()
    const runId = at.replace(/[-:]/g, '').replace(/\..*/, '')
    const cpus = os.cpus()
    const meta: Partial<RunMeta> = {
      runId,
      at,
      scale: config.scale,
      runs: config.runs,
      warmup: config.warmup,
      repoKinds: config.repoKinds,
      walSegments: config.walSegments,
      recoveryWalMb: config.recoveryWalMb,
      node: process.version,
      pgkeepCommit: gitDescription(),
      postgres: {},
      machine: {
        cpus: cpus.length,
        model: cpus[0]?.model.replace(/\s+/g, ' ').trim() ?? 'unknown',
        memGiB: Math.round(os.totalmem() / 2 ** 30),
        loadBefore: os.loadavg(),
      },
    }
    const work = await mkdtemp(join(os.tmpdir(), 'pgkeep-bench-'))
    await chmod(work, 0o755) // the server user writes the WAL archive below it
    const s3 = await startS3Server()
    const ctx: Ctx = { rec: new Recorder(join(config.outDir, 'suite.jsonl'), runId), work, s3, objects: new S3Objects(s3), runId }
    const specs = variants(config.repoKinds)
    try {
      await suite15(ctx, specs, meta)
      if (measures('pg17')) await suite17(ctx, specs, meta)
      await suiteScale(ctx, specs)
    } finally {
      ctx.objects.close()
      await s3.stop()
      await rm(work, { recursive: true, force: true })
    }
    meta.machine!.loadAfter = os.loadavg()
    const rows = summarize(specs, ctx.rec.samples)
    const barResults = bars(rows, meta.databaseBytes!)
    const md = formatMarkdown(meta as RunMeta, groups(), rows, barResults)
    const svg = formatSvg(
      `pgkeep benchmark, ${formatBytes(meta.databaseBytes!)} database, ${meta.at!.slice(0, 10)} (medians of ${config.runs})`,
      groups(),
      rows,
    )
    await writeFile(join(config.outDir, 'suite.md'), md)
    if (config.profile) {
      const sections = [
        '# Where pgkeep spends its time',
        '',
        `Profiled run of ${runId} (\`node --cpu-prof\`, self time summed over every process and thread of the command).`,
      ]
      // The recovery rows run pgkeep as the server's restore_command, which no profiled run wraps.
      for (const spec of specs.filter((s) => s.side === 'pgkeep' && s.group !== 'recovery')) {
        sections.push(
          '',
          `## ${spec.group}: ${spec.name}`,
          '',
          await summarizeCpuProfiles(profileDir(spec)).catch((err) => `no profile: ${(err as Error).message}\n`),
        )
      }
      await writeFile(join(config.outDir, 'profiles.md'), sections.join('\n'))
    }
    await writeFile(join(config.outDir, 'suite.svg'), svg)
    await appendFile(
      ctx.rec.file,
      JSON.stringify({
        suite: 'pgkeep-bench',
        runId,
        summary: { meta, bars: barResults, medians: rows.map((r) => ({ ...r, spec: undefined, group: r.spec.group, variant: r.spec.name })) },
      }) + '\n',
    )
    console.log('\n' + md)
  },
  6 * 3_600_000,
)
