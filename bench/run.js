#!/usr/bin/env node
// `npm run bench -- [options]`: compiles pgkeep into a private directory, then runs the benchmark suite (bench/suite.bench.ts) through vitest
// with bench/vitest.config.ts, passing the options as PGKEEP_BENCH_* variables. Results: DIR/suite.jsonl (one line
// per measured run, then a summary line), DIR/suite.md (table and bars) and DIR/suite.svg (chart); with --profile
// also DIR/profiles.md (where each pgkeep command spends its time).

import { spawnSync } from 'node:child_process'
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'

const ROOT = join(import.meta.dirname, '..')
const USAGE = `usage: npm run bench -- [options]

  --scale N          pgbench scale of the test database (default 90: about 2 GB with the random-bytes table)
  --runs N           measured runs of every variant, after the warm-up (default 3)
  --warmup N         warm-up runs, measured but left out of the medians (default 1)
  --repo-kind KIND   pgkeep's repository: fs, s3 (the local S3 server), or fs,s3 for both (default fs)
  --wal-segments N   WAL segments fetched by the wal get comparison (default 100)
  --recovery-wal-mb N  MB of WAL the end-to-end recovery rows replay (default 1024; 0: none): one pg_basebackup
                     of the bench cluster, then that much WAL archived, recovered by a server started on a fresh
                     copy with restore_command = cp (reference) or pgkeep wal get from an fs repository and from
                     the S3 server, from the server's start until recovery has ended
  --relations LIST   clusters of this many small tables for the backup's memory rows (default 20000,40000; 0: none)
  --doubled          also the bench data at twice the scale, for the backup's memory when the data doubles
  --out DIR          where suite.jsonl, suite.md and suite.svg go (default bench/results)
  --profile          one more run at the end, not recorded, with every pgkeep process under node --cpu-prof:
                     DIR/profiles/<variant>/*.cpuprofile, summed up in DIR/profiles.md
  --readme           copy the table into README.md's Benchmarks section (which shows the chart of --out)
  --no-build         measure the dist/ there is instead of compiling the sources (into a private copy) first
  --only LIST        measure only these groups, for work on one row: limit, full, incremental, restore (the last
                     three run together), pg17, wal, recovery, relations-N, doubled; not with --readme
`

let values
try {
  ;({ values } = parseArgs({
    options: {
      scale: { type: 'string' },
      runs: { type: 'string' },
      warmup: { type: 'string' },
      'repo-kind': { type: 'string' },
      'wal-segments': { type: 'string' },
      'recovery-wal-mb': { type: 'string' },
      relations: { type: 'string' },
      doubled: { type: 'boolean' },
      out: { type: 'string' },
      readme: { type: 'boolean' },
      profile: { type: 'boolean' },
      'no-build': { type: 'boolean' },
      only: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  }))
} catch (err) {
  process.stderr.write(`${err.message}\n\n${USAGE}`)
  process.exit(2)
}
if (values.help) {
  process.stdout.write(USAGE)
  process.exit(0)
}

const whole = (name, min) => {
  const text = values[name]
  if (text === undefined) return undefined
  const n = Number(text)
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`invalid --${name} '${text}': give a whole number of at least ${min}\n`)
    process.exit(2)
  }
  return String(n)
}
const kinds = values['repo-kind']
if (kinds !== undefined && !kinds.split(',').every((k) => k === 'fs' || k === 's3')) {
  process.stderr.write(`invalid --repo-kind '${kinds}': use fs, s3 or fs,s3\n`)
  process.exit(2)
}
const relations = values.relations
if (relations !== undefined && !/^\d+(,\d+)*$/.test(relations)) {
  process.stderr.write(`invalid --relations '${relations}': give numbers of tables separated by commas, or 0\n`)
  process.exit(2)
}
if (values.only !== undefined && !/^[a-z0-9-]+(,[a-z0-9-]+)*$/.test(values.only)) {
  process.stderr.write(`invalid --only '${values.only}': give group names separated by commas, e.g. recovery,wal\n`)
  process.exit(2)
}
if (values.only !== undefined && values.readme) {
  process.stderr.write("--only with --readme: the README's table is of a whole run; leave one of them out\n")
  process.exit(2)
}
const outDir = resolve(values.out ?? join(ROOT, 'bench', 'results'))
const benchEnv = {
  PGKEEP_BENCH_SCALE: whole('scale', 1),
  PGKEEP_BENCH_RUNS: whole('runs', 1),
  PGKEEP_BENCH_WARMUP: whole('warmup', 0),
  PGKEEP_BENCH_WAL_SEGMENTS: whole('wal-segments', 1),
  PGKEEP_BENCH_RECOVERY_WAL_MB: whole('recovery-wal-mb', 0),
  PGKEEP_BENCH_REPO_KIND: kinds,
  PGKEEP_BENCH_OUT: outDir,
  PGKEEP_BENCH_PROFILE: values.profile ? '1' : undefined,
  PGKEEP_BENCH_RELATIONS: relations,
  PGKEEP_BENCH_DOUBLED: values.doubled ? '1' : undefined,
  PGKEEP_BENCH_ONLY: values.only,
}

// The suite runs a private copy of the compiled CLI, so that a rebuild of dist/ while it runs (the tests build it)
// neither breaks a run nor changes the code under measurement half-way.
/** Compiles pgkeep into `build` (or copies dist/ there) and runs the suite on it; returns the exit status. */
function runSuite(build) {
  if (values['no-build']) {
    cpSync(join(ROOT, 'dist'), join(build, 'dist'), { recursive: true })
  } else {
    const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc')
    const built = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', join(build, 'dist')], { cwd: ROOT, stdio: 'inherit' })
    if (built.status !== 0) return built.status ?? 1
  }
  cpSync(join(ROOT, 'bin'), join(build, 'bin'), { recursive: true })
  cpSync(join(ROOT, 'package.json'), join(build, 'package.json'))
  mkdirSync(join(build, 'bench'))
  for (const script of ['receive-limit.mjs', 'store-limit.mjs']) cpSync(join(ROOT, 'bench', script), join(build, 'bench', script))
  symlinkSync(join(ROOT, 'node_modules'), join(build, 'node_modules'))

  const vitest = join(dirname(createRequire(import.meta.url).resolve('vitest/package.json')), 'vitest.mjs')
  const env = { ...process.env, PGKEEP_BENCH_BUILD: build }
  for (const [k, v] of Object.entries(benchEnv)) if (v !== undefined) env[k] = v
  const res = spawnSync(process.execPath, [vitest, 'run', '--config', join(ROOT, 'bench', 'vitest.config.ts'), 'bench/suite.bench.ts'], {
    cwd: ROOT,
    env,
    stdio: 'inherit',
  })
  return res.status ?? 1
}

const build = mkdtempSync(join(tmpdir(), 'pgkeep-bench-build-'))
chmodSync(build, 0o755)
let status
try {
  status = runSuite(build)
} finally {
  rmSync(build, { recursive: true, force: true })
}
if (status !== 0) process.exit(status)

if (values.readme) {
  // README.md's Benchmarks section holds the latest table between these markers; the chart is linked by path.
  const readme = join(ROOT, 'README.md')
  const text = readFileSync(readme, 'utf8')
  const start = '<!-- bench:results:start -->'
  const end = '<!-- bench:results:end -->'
  const i = text.indexOf(start)
  const j = text.indexOf(end)
  if (i < 0 || j < i) {
    process.stderr.write(`README.md has no ${start} … ${end} section to update\n`)
    process.exit(1)
  }
  const table = readFileSync(join(outDir, 'suite.md'), 'utf8')
  writeFileSync(readme, text.slice(0, i + start.length) + '\n' + table + end + text.slice(j + end.length))
  process.stdout.write(`README.md: Benchmarks section updated from ${join(outDir, 'suite.md')}\n`)
}
