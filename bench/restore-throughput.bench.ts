// Restore wall time on one PostgreSQL 15 cluster (pgbench, PGKEEP_BENCH_SCALE, default 70 ≈ 1 GB, with its indexes
// in a second tablespace): `pgkeep restore` (the real binary, filesystem repository, --jobs 1 and 4, with and
// without fsync) against `tar -xf` of the tar files `pg_basebackup -Ft` wrote, then `pgkeep restore --delta` of a
// backup taken after a 1% change over a copy restored from the backup before it. Alternating runs, medians;
// `sync` (untimed) before each run so that no run pays for the previous one's writeback.

import { spawn } from 'node:child_process'
import { appendFile, mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { it } from 'vitest'
import { takeBackup } from '../src/backup/backup.js'
import { PASSWORD, ROLES, startCluster } from '../test/harness/cluster.js'
import { loadPgbench, touchPages } from '../test/harness/load.js'
import { debianTool, execFileP } from '../test/harness/reference-tools.js'
import { freshFsRepo } from '../test/harness/repo.js'

const scale = Number(process.env.PGKEEP_BENCH_SCALE ?? 70)
const runs = Number(process.env.PGKEEP_BENCH_RUNS ?? 5)
const ROOT = join(import.meta.dirname, '..')

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ ms: number; stdout: string }> {
  const t0 = performance.now()
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('close', (code) =>
      code === 0 ? resolve({ ms: performance.now() - t0, stdout: out }) : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${err}`)),
    )
  })
}

const syncDisks = () => run('sync', [])

it(`restore wall time, pgbench scale ${scale}`, async () => {
  const pg = await startCluster({ major: 15 })
  const r = await freshFsRepo()
  try {
    const pgBasebackup = debianTool('pg_basebackup')
    if (!pgBasebackup) throw new Error('pg_basebackup from Debian PostgreSQL 15 is needed')
    await loadPgbench(pg, scale)
    const b1 = await takeBackup({ server: { conninfo: pg.url() }, repo: r.repo, type: 'full' })
    const work = join(pg.baseDir, 'bench')
    await mkdir(work)
    // pg_basebackup's tar files, made once: the reference extracts them.
    const tars = join(work, 'tars')
    await run(pgBasebackup, ['-h', '127.0.0.1', '-p', String(pg.port), '-U', ROLES.repl, '-D', tars, '-Ft', '-X', 'stream', '--checkpoint=fast'], {
      PGPASSWORD: PASSWORD,
    })
    const { stdout: tarList } = await execFileP('ls', [tars])
    const tsTar = tarList.split('\n').find((n) => /^\d+\.tar$/.test(n))!

    const target = join(work, 'target')
    const targetTs = join(work, 'target-ts')
    const clean = async () => {
      await rm(target, { recursive: true, force: true })
      await rm(targetTs, { recursive: true, force: true })
      await syncDisks()
    }
    const pgkeep = (extra: string[]) =>
      run(process.execPath, [
        join(ROOT, 'bin', 'pgkeep.js'),
        'restore',
        '--repo',
        r.dir,
        '--pgdata',
        target,
        '--tablespace-mapping',
        `${pg.tablespaceDirs[0]}=${targetTs}`,
        '--json',
        ...extra,
      ])
    const variants: Record<string, () => Promise<number>> = {
      'tar -xf (pg_basebackup -Ft, 2 tars)': async () => {
        await mkdir(target, { mode: 0o700 })
        await mkdir(targetTs, { mode: 0o700 })
        const t0 = performance.now()
        await run('tar', ['-xf', join(tars, 'base.tar'), '-C', target])
        await run('tar', ['-xf', join(tars, tsTar), '-C', targetTs])
        return performance.now() - t0
      },
      'pgkeep restore --jobs 1': async () => (await pgkeep(['--jobs', '1'])).ms,
      'pgkeep restore --jobs 4': async () => (await pgkeep(['--jobs', '4'])).ms,
      'pgkeep restore --jobs 1 --no-sync': async () => (await pgkeep(['--jobs', '1', '--no-sync'])).ms,
      'pgkeep restore --jobs 4 --no-sync': async () => (await pgkeep(['--jobs', '4', '--no-sync'])).ms,
    }
    const rows: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]))
    const bytes = b1.sizeBytes
    for (let i = 0; i < runs; i++) {
      for (const [name, fn] of Object.entries(variants)) {
        await clean()
        rows[name]!.push(await fn())
      }
    }

    // Delta: a copy restored from b1; 1% of pgbench_accounts' pages change; b2; then --delta b2 over the copy and
    // back to b1, alternately (each direction is a 1% change).
    const pages = await touchPages(pg, 1)
    const b2 = await takeBackup({ server: { conninfo: pg.url() }, repo: r.repo })
    await clean()
    await pgkeep(['--backup', b1.id])
    // Forward (the newer backup over a copy of the older: the case of refreshing a copy) and back. Back costs more:
    // each changed page comes out of a whole 1 MiB window blob of the full backup, forward out of the small blobs
    // of changed pages the newer backup stored.
    const forward: number[] = []
    const back: number[] = []
    const deltaWritten: number[] = []
    for (let i = 0; i < runs; i++) {
      for (const [id, into] of [
        [b2.id, forward],
        [b1.id, back],
      ] as const) {
        await syncDisks()
        const res = await pgkeep(['--backup', id, '--delta'])
        into.push(res.ms)
        deltaWritten.push(JSON.parse(res.stdout).bytesWritten)
      }
    }
    rows['pgkeep restore --delta, newer over older (1%)'] = forward
    rows['pgkeep restore --delta, older over newer (1%)'] = back

    const ref = median(rows['tar -xf (pg_basebackup -Ft, 2 tars)']!)
    const lines = [
      `restore of ${(bytes / 1e6).toFixed(0)} MB (pgbench -s ${scale}, PG 15, indexes in a second tablespace), fs repository, ${runs} alternating runs, medians:`,
    ]
    for (const [name, ms] of Object.entries(rows)) {
      const m = median(ms)
      lines.push(
        `  ${name.padEnd(46)} ${(m / 1000).toFixed(2)} s  ${(bytes / 1e6 / (m / 1000)).toFixed(0)} MB/s  ratio to tar ${(m / ref).toFixed(2)}  runs ${ms.map((x) => (x / 1000).toFixed(2)).join(' ')}`,
      )
    }
    lines.push(
      `  delta: ${pages} of pgbench_accounts' pages touched; bytes written per delta restore: median ${(median(deltaWritten) / 1e6).toFixed(1)} MB of ${(bytes / 1e6).toFixed(0)} MB`,
    )
    console.log(lines.join('\n'))
    await mkdir(join(import.meta.dirname, 'results'), { recursive: true })
    await appendFile(
      join(import.meta.dirname, 'results', 'restore-throughput.jsonl'),
      JSON.stringify({ at: new Date().toISOString(), scale, bytes, runs: rows, deltaWritten, pages }) + '\n',
    )
  } finally {
    await pg.destroy()
    await r.close()
  }
})
