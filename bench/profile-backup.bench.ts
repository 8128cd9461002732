// How pgkeep backup scales with ingest worker threads: full backups, and incrementals after ~1% of the pages
// changed, of one PostgreSQL 15 pgbench cluster with 0, 1, 2 … workers (and optionally another build of pgkeep for
// before/after), alternating runs, medians of wall, CPU and peak RSS, the 1-minute load average beside each
// (the machine is shared), and the main thread's own CPU time (from /proc, so it holds under load: it bounds the
// throughput once other cores are free). PGKEEP_PROFILE_CPU=1 adds a `node --cpu-prof` run per variant and prints
// its top entries.
//
//   PGKEEP_BENCH_SCALE (20)  PGKEEP_BENCH_RUNS (5)  PGKEEP_PROFILE_WORKERS (0,1,2)
//   PGKEEP_PROFILE_OTHER=name=/checkout,…  also run other checkouts' builds (their dist/ built), e.g. before/after
// Each build runs through its own `pgkeep` launcher, with its process settings.

import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { it } from 'vitest'
import { PASSWORD, startCluster } from '../test/harness/cluster.js'
import { loadPgbench, touchPages } from '../test/harness/load.js'
import { type Measured, measure, median, table } from './measure.js'

const scale = Number(process.env.PGKEEP_BENCH_SCALE ?? 20)
const runs = Number(process.env.PGKEEP_BENCH_RUNS ?? 5)
const workerCounts = (process.env.PGKEEP_PROFILE_WORKERS ?? '0,1,2').split(',').map(Number)
const others = (process.env.PGKEEP_PROFILE_OTHER ?? '')
  .split(',')
  .filter(Boolean)
  .map((s) => ({ name: s.slice(0, s.indexOf('=')), root: s.slice(s.indexOf('=') + 1) }))
const cpuProfile = process.env.PGKEEP_PROFILE_CPU === '1'
const ROOT = join(import.meta.dirname, '..')

interface Variant {
  name: string
  root: string
  /** Ingest workers (undefined: the build's own default). */
  workers?: number
}

interface Run extends Measured {
  load: number
  /** CPU seconds of the main thread (user + system). */
  mainCpuS: number
}

it(`backup with 0..n ingest workers, pgbench scale ${scale}`, async () => {
  const pg = await startCluster({ major: 15 })
  const work = join(pg.baseDir, 'profile')
  await mkdir(work)
  const variants: Variant[] = [
    ...others,
    { name: 'this build, default workers', root: ROOT },
    ...workerCounts.map((w) => ({ name: `this build, ${w} worker${w === 1 ? '' : 's'}`, root: ROOT, workers: w })),
  ]
  // The main thread's CPU time at exit, from /proc/self/task/<pid>/stat (utime, stime in clock ticks of 10 ms).
  const threads = join(work, 'main-thread.mjs')
  await writeFile(
    threads,
    `import { readFileSync, writeFileSync } from 'node:fs'\n` +
      `process.on('exit', () => {\n` +
      `  const s = readFileSync('/proc/self/task/' + process.pid + '/stat', 'utf8')\n` +
      `  const f = s.slice(s.lastIndexOf(')') + 2).split(' ')\n` +
      `  writeFileSync(process.env.PGKEEP_PROFILE_MAIN_CPU_FILE, String((Number(f[11]) + Number(f[12])) / 100))\n` +
      `})\n`,
  )
  let n = 0
  // Each build through its own launcher, so with its own process settings (node's flags, malloc's); the bench's
  // own node flags (`flags`: --cpu-prof, which NODE_OPTIONS may not carry) through a node that adds them.
  const backup = async (v: Variant, repo: string, extra: string[] = [], flags: string[] = []): Promise<Run> => {
    const cpuFile = join(work, 'main-cpu')
    let node = process.execPath
    if (flags.length > 0) {
      node = join(work, 'node-with-flags.sh')
      await writeFile(node, `#!/bin/sh\nexec "${process.execPath}" ${flags.join(' ')} "$@"\n`, { mode: 0o755 })
    }
    const env: NodeJS.ProcessEnv = { ...process.env, PGPASSWORD: PASSWORD, PGKEEP_PROFILE_MAIN_CPU_FILE: cpuFile, PGKEEP_NODE: node }
    env.NODE_OPTIONS = `--import=${pathToFileURL(threads).href}`
    if (v.workers !== undefined) extra = [...extra, '--workers', String(v.workers)]
    // Only `init` creates a repository: by this checkout's build (every build compared reads its format), unmeasured.
    if (!existsSync(join(repo, 'config'))) execFileSync(process.execPath, [join(ROOT, 'bin', 'pgkeep.js'), 'init', '--repo', repo], { stdio: 'ignore' })
    const load = loadavg()[0]!
    const m = await measure(join(v.root, 'bin', 'pgkeep'), ['backup', '-d', pg.url(), '--repo', repo, '--json', ...extra], env)
    return { ...m, load, mainCpuS: Number(await readFile(cpuFile, 'utf8')) }
  }
  try {
    await loadPgbench(pg, scale)
    const [{ size }] = await pg.sql<{ size: string }>(`select pg_size_pretty(sum(pg_database_size(datname))) size from pg_database`)
    await backup(variants[0]!, join(work, `warm${n++}`))
    const full: Record<string, Run[]> = Object.fromEntries(variants.map((v) => [v.name, []]))
    const incremental: Record<string, Run[]> = Object.fromEntries(variants.map((v) => [v.name, []]))
    for (let i = 0; i < runs; i++) {
      // A different order each run, so no variant always follows the same one.
      const order = variants.map((_, k) => variants[(k + i) % variants.length]!)
      for (const v of order) {
        const repo = join(work, `r${n++}`)
        full[v.name]!.push(await backup(v, repo))
        await touchPages(pg, 1)
        incremental[v.name]!.push(await backup(v, repo))
        await rm(repo, { recursive: true, force: true })
      }
    }
    const mainCpu = (rows: Record<string, Run[]>) =>
      Object.entries(rows)
        .map(([k, rs]) => `${k}: ${median(rs.map((r) => r.mainCpuS)).toFixed(2)} s`)
        .join('; ')
    const loads = (rows: Record<string, Run[]>) =>
      Object.entries(rows)
        .map(([k, rs]) => `${k}: ${rs.map((r) => r.load.toFixed(1)).join(' ')}`)
        .join('; ')
    const out = [
      `pgkeep backup of a pgbench -s ${scale} PostgreSQL 15 cluster (${size}), ${runs} alternating runs per variant:`,
      '',
      'Full backup:',
      table(full, variants[0]!.name),
      '',
      'Incremental backup after 1% of pgbench_accounts pages changed:',
      table(incremental, variants[0]!.name),
      '',
      `Main-thread CPU (median): full: ${mainCpu(full)}`,
      `Main-thread CPU (median): incremental: ${mainCpu(incremental)}`,
      '',
      `1-minute load average at the start of each run (2 cores): full: ${loads(full)}`,
      `median load: ${median(
        Object.values(full)
          .flat()
          .map((r) => r.load),
      ).toFixed(1)}`,
    ]
    if (cpuProfile) {
      for (const v of variants) {
        const dir = join(work, `prof${n++}`)
        await mkdir(dir)
        await backup(v, join(work, `r${n++}`), [], ['--cpu-prof', `--cpu-prof-dir=${dir}`])
        out.push('', `CPU profile, ${v.name}:`, ...(await summarizeProfiles(dir)))
      }
    }
    console.log(out.join('\n'))
    await mkdir(join(ROOT, 'bench', 'results'), { recursive: true })
    await writeFile(
      join(ROOT, 'bench', 'results', 'profile-backup.jsonl'),
      JSON.stringify({ at: new Date().toISOString(), scale, runs, full, incremental }) + '\n',
      { flag: 'a' },
    )
  } finally {
    await pg.destroy()
  }
})

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
}

/** Self time by function for each thread's profile in `dir` (main thread first), top entries. */
async function summarizeProfiles(dir: string): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile')).sort()
  const out: string[] = []
  for (const f of files) {
    const p = JSON.parse(await readFile(join(dir, f), 'utf8')) as { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[] }
    const total = p.samples.length
    const self = new Map<string, number>()
    for (const node of p.nodes) {
      const c = node.callFrame
      const where = c.url ? `${c.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${c.lineNumber + 1}` : ''
      const key = `${c.functionName || '(anonymous)'} ${where}`.trim()
      self.set(key, (self.get(key) ?? 0) + (node.hitCount ?? 0))
    }
    const ms = (p.endTime - p.startTime) / 1000
    const idle = self.get('(idle)') ?? 0
    out.push(`  ${f} (${ms.toFixed(0)} ms, ${total} samples, busy ${(100 * (1 - idle / total)).toFixed(0)}%):`)
    for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 14)) out.push(`    ${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`)
  }
  return out
}
