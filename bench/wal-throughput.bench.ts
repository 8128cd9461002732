// WAL archiving speed on one PostgreSQL 15 server (the harness's, fsync off):
//  1. a burst of about PGKEEP_BENCH_WAL_MB (default 1024) MB of WAL from one INSERT … SELECT, three times: with
//     `pgkeep wal stream` (fs repository), with pg_receivewal (Debian 15) to a directory, and with no streamer;
//     reports the server's WAL rate, the streamer's rate, the largest lag (server WAL − flush position reported)
//     and how long after the burst's commit the last segment was stored;
//  2. `wal get` of 100 consecutive segments, one process per segment as restore_command runs, from the fs
//     repository and from the local S3 server (encrypted), with and without prefetch, against `cp` from a
//     directory archive;
//  3. pgbench commit latency with `pgkeep wal stream --synchronous` as the synchronous standby.
// Results: console and bench/results/wal-throughput.jsonl. Run: npm run bench:wal

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { appendFile, copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { it } from 'vitest'
import { parseLsn } from '../src/pg/lsn.js'
import { initRepository } from '../src/repo/index.js'
import { listWalKeys, parseWalKey } from '../src/repo/wal-catalog.js'
import { openStorage } from '../src/storage/open.js'
import { pushWalFile } from '../src/wal/wal-push.js'
import { WalSegmentWriter } from '../src/repo/wal-segment-writer.js'
import { PASSWORD, ROLES, startCluster, type Cluster } from '../test/harness/cluster.js'
import { debianTool, execFileP } from '../test/harness/reference-tools.js'
import { startS3Server } from '../test/harness/s3-server.js'
import { runMain } from '../test/harness/cli.js'
import { openFsRepo, spawnPgkeep, ensureBuilt, BIN } from '../test/integration/wal-helpers.js'

const WAL_MB = Number(process.env.PGKEEP_BENCH_WAL_MB ?? 1024)
/** Parts to run: stream, get, sync (comma-separated; default all). */
const PARTS = new Set((process.env.PGKEEP_BENCH_PARTS ?? 'stream,get,sync').split(','))
/** Rounds of the alternating bursts (default 3). */
const ROUNDS = Number(process.env.PGKEEP_BENCH_ROUNDS ?? 3)
/** Extra arguments for the measured `wal stream` (e.g. `--priority normal`). */
const STREAM_ARGS = (process.env.PGKEEP_BENCH_STREAM_ARGS ?? '').split(' ').filter(Boolean)
const SEG = 16n << 20n
const mb = (n: number | bigint) => Number(n) / (1 << 20)
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN
const results: Record<string, unknown>[] = []
const report = (line: string, data: Record<string, unknown>) => {
  console.log(line)
  results.push({ ...data, line })
}

async function sampler(c: Cluster, appName: string | undefined) {
  const client = new pg.Client({ host: c.socketDir, port: c.port, user: 'postgres', database: 'postgres' })
  await client.connect()
  let maxLag = 0
  let running = true
  const loop = (async () => {
    while (running) {
      if (appName) {
        const { rows } = await client.query<{ lag: string | null }>(
          `select (pg_current_wal_lsn() - flush_lsn)::text lag from pg_stat_replication where application_name = $1`,
          [appName],
        )
        if (rows[0]?.lag) maxLag = Math.max(maxLag, Number(rows[0].lag))
      }
      await new Promise((r) => setTimeout(r, 200))
    }
  })()
  return {
    stop: async () => {
      running = false
      await loop
      await client.end()
      return maxLag
    },
  }
}

/** One burst: INSERT … SELECT of about WAL_MB MB of WAL; resolves with the WAL range and the time it took. */
async function burst(c: Cluster, table: string): Promise<{ start: bigint; end: bigint; ms: number }> {
  const rows = Math.round((WAL_MB * (1 << 20)) / 160) // ~160 bytes of WAL per row of this shape (measured)
  await c.sql(`create table ${table} (id int, v text)`)
  const [{ l: s }] = await c.sql<{ l: string }>('select pg_current_wal_lsn()::text l')
  const t0 = performance.now()
  await c.sql(`insert into ${table} select g, repeat(md5(g::text), 3) from generate_series(1, ${rows}) g`)
  const ms = performance.now() - t0
  const [{ l: e }] = await c.sql<{ l: string }>('select pg_current_wal_flush_lsn()::text l')
  return { start: parseLsn(s), end: parseLsn(e), ms }
}

it(`WAL archiving: a ~${WAL_MB} MB burst, wal get of 100 segments, synchronous commit latency`, async () => {
  ensureBuilt()
  const c = await startCluster({ major: 15, tablespaces: 0, conf: { max_wal_size: '8GB', wal_keep_size: '8GB', checkpoint_timeout: '1h' } })
  const work = await mkdtemp(join(tmpdir(), 'pgkeep-walbench-'))
  const s3 = await startS3Server()
  try {
    console.log(
      `load average at start: ${loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')} (2 cores)`,
    )
    const [{ sys }] = await c.sql<{ sys: string }>('select system_identifier::text sys from pg_control_system()')

    // 1. Bursts, alternating pgkeep wal stream / pg_receivewal / no streamer (ROUNDS rounds, medians: this machine is
    //    shared and noisy). Each streamer is started, allowed to catch up, measured over one burst, and stopped.
    // PGKEEP_BENCH_REPO_ROOT puts the streamed repository elsewhere (e.g. /dev/shm, to take the disk out).
    const repoDir = join(process.env.PGKEEP_BENCH_REPO_ROOT ? await mkdtemp(join(process.env.PGKEEP_BENCH_REPO_ROOT, 'pgkeep-walbench-')) : work, 'repo')
    for (const r of [repoDir, join(work, 'repo-sync')]) await runMain(['init', '--repo', r]) // only init creates one
    const receivewal = debianTool('pg_receivewal')
    const rwDir = join(work, 'receivewal')
    await mkdir(rwDir)
    if (receivewal)
      await execFileP(receivewal, ['-h', '127.0.0.1', '-p', String(c.port), '-U', ROLES.repl, '--slot', 'bench_rw', '--create-slot'], {
        env: { PGPASSWORD: PASSWORD },
      })
    const caughtUp = async (app: string) => {
      for (;;) {
        const rows = await c.sql<{ state: string; behind: string }>(
          `select state, (pg_current_wal_flush_lsn() - write_lsn)::text behind from pg_stat_replication where application_name = $1`,
          [app],
        )
        if (rows[0]?.state === 'streaming' && Number(rows[0].behind) < 1 << 20) return
        await new Promise((r) => setTimeout(r, 200))
      }
    }
    const runs: Record<string, { serverMiBs: number; catchUpMs?: number; lagBytes?: number; cpuMs?: number }[]> = { pgkeep: [], pg_receivewal: [], none: [] }
    let firstBurst: { start: bigint; end: bigint } | undefined
    const tools = ['pgkeep', 'pg_receivewal', 'none'].filter((t) => t !== 'pg_receivewal' || receivewal)
    const rounds = PARTS.has('stream') ? ROUNDS : 1
    for (let round = 0; round < rounds; round++) {
      for (const tool of PARTS.has('stream') ? tools : ['pgkeep']) {
        const table = `burst_${tool.replace(/\W/g, '')}_${round}`
        if (tool === 'none') {
          const b = await burst(c, table)
          runs.none!.push({ serverMiBs: mb(b.end - b.start) / (b.ms / 1000) })
          await c.sql(`drop table ${table}`)
          continue
        }
        let proc: ReturnType<typeof spawnPgkeep> | undefined
        let rw: ReturnType<typeof spawn> | undefined
        if (tool === 'pgkeep') {
          proc = spawnPgkeep(['wal', 'stream', '-d', c.url(), '--repo', repoDir, '--slot', 'bench', '--create-slot', '--status-interval', '1', ...STREAM_ARGS])
          await proc.waitFor(/streaming cluster/)
        } else {
          rw = spawn(receivewal!, ['-h', '127.0.0.1', '-p', String(c.port), '-U', ROLES.repl, '--slot', 'bench_rw', '-D', rwDir, '-s', '1', '-n'], {
            env: { PGPASSWORD: PASSWORD, PGAPPNAME: 'bench_rw' },
            stdio: 'ignore',
          })
        }
        const app = tool === 'pgkeep' ? 'bench' : 'bench_rw'
        await caughtUp(app)
        const storedAt = new Map<string, number>()
        proc?.child.stderr?.on('data', (d: Buffer) => {
          for (const m of d.toString().matchAll(/stored segment ([0-9A-F]{24})/g)) storedAt.set(m[1]!, performance.now())
        })
        const sample = await sampler(c, app)
        const cpu0 = proc ? await procCpuMs(proc.child.pid!) : 0
        const b = await burst(c, table)
        firstBurst ??= b
        const committedAt = performance.now()
        const last = walName((b.end - 1n) / SEG - 1n) // the last segment the burst completed
        const done = () => (proc ? storedAt.has(last) : existsSync(join(rwDir, last)))
        while (!done()) await new Promise((r) => setTimeout(r, 20))
        const catchUpMs = (proc ? storedAt.get(last)! : performance.now()) - committedAt
        const cpuMs = proc ? (await procCpuMs(proc.child.pid!)) - cpu0 : undefined
        const lagBytes = await sample.stop()
        runs[tool]!.push({ serverMiBs: mb(b.end - b.start) / (b.ms / 1000), catchUpMs, lagBytes, cpuMs })
        await c.sql(`drop table ${table}`)
        if (rw) {
          const exited = new Promise((r) => rw!.once('exit', r))
          rw.kill('SIGINT')
          await exited
          // Disk: it restarts from its slot (PostgreSQL 15: READ_REPLICATION_SLOT) with an empty directory.
          for (const f of await readdir(rwDir)) await rm(join(rwDir, f), { force: true })
        } else {
          proc!.kill('SIGTERM')
          await proc!.exited
        }
      }
    }
    for (const [tool, rs] of Object.entries(runs)) {
      if (rs.length === 0) continue
      const med = (f: (r: (typeof rs)[number]) => number | undefined) => median(rs.map(f).filter((x): x is number => x !== undefined))
      report(
        `burst of ~${WAL_MB} MiB, ${rs.length} runs, ${tool}: server generates ${med((r) => r.serverMiBs).toFixed(0)} MiB/s (runs ${rs.map((r) => r.serverMiBs.toFixed(0)).join(' ')})` +
          (tool === 'none'
            ? ''
            : `; last segment stored ${(med((r) => r.catchUpMs) / 1000).toFixed(2)} s after the commit; max lag ${mb(med((r) => r.lagBytes)).toFixed(0)} MiB`) +
          (tool === 'pgkeep' ? `; streamer CPU ${(med((r) => r.cpuMs) / 1000).toFixed(1)} s per burst` : ''),
        { what: 'stream', tool, runs: rs },
      )
    }
    const b1 = firstBurst!

    // The storing side alone: the burst's segments from pg_wal fed to a WalSegmentWriter in this process (128 KiB
    // chunks, as XLogData brings them), into a fresh repository. Its rate is what the streamer can absorb.
    {
      const first = b1.start / SEG + 1n
      const last = (b1.end - 1n) / SEG - 1n
      const repo = await initRepository(await openStorage(join(work, 'capacity'), {}))
      const w = new WalSegmentWriter(repo, { systemId: BigInt(sys), timeline: 1, segmentSizeBytes: Number(SEG), startLsn: first * SEG })
      let fed = 0
      let ms = 0
      for (let s = first; s <= last; s++) {
        const seg = await readFile(join(c.dataDir, 'pg_wal', walName(s)))
        const t0 = performance.now()
        for (let at = 0; at < seg.length; at += 128 << 10) await w.write(s * SEG + BigInt(at), seg.subarray(at, at + (128 << 10)))
        ms += performance.now() - t0
        fed += seg.length
      }
      const t0 = performance.now()
      await w.close()
      ms += performance.now() - t0
      const stats = repo.sessionStats
      await repo.close()
      report(
        `storing capacity (WalSegmentWriter, fs, zstd level 3): ${mb(fed).toFixed(0)} MiB in ${(ms / 1000).toFixed(1)} s = ${(mb(fed) / (ms / 1000)).toFixed(0)} MiB/s; ` +
          `stored ${mb(stats.storedBytes).toFixed(0)} MiB (${(fed / Math.max(1, stats.storedBytes)).toFixed(1)}x compression)`,
        { what: 'capacity', bytes: fed, ms, storedBytes: stats.storedBytes },
      )
    }

    if (PARTS.has('get')) await getPart()
    if (PARTS.has('sync')) await syncPart()

    async function getPart() {
      // 2. wal get of 100 segments.
      const names: string[] = []
      {
        const repo = await openFsRepo(repoDir)
        for (const k of await listWalKeys(repo, sys, '00000001')) {
          const p = parseWalKey(k)
          if (p?.kind === 'segment') names.push(p.name)
        }
        await repo.close()
      }
      const hundred = names.slice(-101, -1)
      const archive = join(work, 'archive')
      await mkdir(archive)
      for (const n of hundred) await copyFile(join(c.dataDir, 'pg_wal', n), join(archive, n))
      const s3Env = {
        AWS_ENDPOINT_URL: s3.endpoint,
        AWS_ACCESS_KEY_ID: s3.accessKeyId,
        AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
        AWS_REGION: s3.region,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        PGKEEP_PASSPHRASE: 'bench passphrase',
      }
      const s3Url = `s3://${s3.bucket}/${s3.prefix}walbench`
      {
        const repo = await initRepository(await openStorage(s3Url, s3Env), { encrypt: { passphrase: s3Env.PGKEEP_PASSPHRASE } })
        for (const n of hundred) await pushWalFile(repo, join(c.dataDir, 'pg_wal', n))
        await repo.close()
      }
      const runGets = async (label: string, cmd: (name: string, dest: string) => [string, string[]], env: Record<string, string>, spool?: string) => {
        const dest = join(work, `restore-${label.replace(/\W+/g, '-')}`, 'pg_wal')
        await mkdir(dest, { recursive: true })
        let total = 0
        for (const n of hundred) {
          const [file, args] = cmd(n, join(dest, 'RECOVERYXLOG'))
          const t0 = performance.now()
          const code = await new Promise<number>((resolve) => {
            spawn(file, args, { env: { PATH: process.env.PATH, ...env }, stdio: 'ignore' }).on('exit', (x) => resolve(x ?? -1))
          })
          total += performance.now() - t0
          if (code !== 0) throw new Error(`${label}: ${n} exited ${code}`)
          if (!(await readFile(join(dest, 'RECOVERYXLOG'))).equals(await readFile(join(archive, n)))) throw new Error(`${label}: ${n} differs`)
        }
        const daemonFile = join(spool ?? join(dest, '.pgkeep-prefetch'), 'daemon.json')
        if (existsSync(daemonFile)) {
          try {
            process.kill(JSON.parse(await readFile(daemonFile, 'utf8')).pid, 'SIGTERM')
          } catch {
            /* gone */
          }
        }
        report(
          `wal get ×100, ${label}: ${(total / 1000).toFixed(2)} s, ${(1600 / (total / 1000)).toFixed(0)} MiB/s, ${(total / 100).toFixed(0)} ms per segment`,
          {
            what: 'get',
            label,
            ms: total,
          },
        )
      }
      await runGets('cp from a directory archive', (n, d) => ['cp', [join(archive, n), d]], {})
      const get =
        (url: string, more: string[]) =>
        (n: string, d: string): [string, string[]] => [process.execPath, [BIN, 'wal', 'get', '--repo', url, '--cluster', sys, ...more, n, d]]
      await runGets('pgkeep fs, prefetch 8', get(repoDir, ['--linger', '5']), {})
      await runGets('pgkeep fs, no prefetch', get(repoDir, ['--prefetch', '0']), {})
      await runGets('pgkeep s3 encrypted, prefetch 8', get(s3Url, ['--linger', '5']), s3Env)
      await runGets('pgkeep s3 encrypted, prefetch 16 concurrency 8', get(s3Url, ['--linger', '5', '--prefetch', '16', '--concurrency', '8']), s3Env)
      await runGets('pgkeep s3 encrypted, no prefetch', get(s3Url, ['--prefetch', '0']), s3Env)
    }

    async function syncPart() {
      // 3. Synchronous commit latency under pgbench.
      const pgbench = debianTool('pgbench')
      if (pgbench && PARTS.has('sync')) {
        await execFileP(pgbench, ['-i', '-q', '-s', '5', '-h', c.socketDir, '-p', String(c.port), '-U', 'postgres', 'postgres'])
        const run = async () => {
          const { stdout } = await execFileP(pgbench, ['-n', '-c', '4', '-T', '15', '-h', c.socketDir, '-p', String(c.port), '-U', 'postgres', 'postgres'])
          return { tps: Number(/tps = ([\d.]+)/.exec(stdout)?.[1]), latencyMs: Number(/latency average = ([\d.]+) ms/.exec(stdout)?.[1]) }
        }
        const local = await run()
        // A new slot starts at the last checkpoint's redo point: checkpoint first, and list the streamer as
        // synchronous only once it caught up (state 'streaming'), as one would in production.
        await c.sql('checkpoint')
        const sync = spawnPgkeep([
          'wal',
          'stream',
          '-d',
          c.url(),
          '--repo',
          join(work, 'repo-sync'),
          '--slot',
          'bench_sync',
          '--create-slot',
          '--synchronous',
          '--status-interval',
          '1',
        ])
        await sync.waitFor(/streaming cluster/)
        for (;;) {
          const rows = await c.sql<{ state: string }>(`select state from pg_stat_replication where application_name = 'bench_sync'`)
          if (rows[0]?.state === 'streaming') break
          await new Promise((r) => setTimeout(r, 200))
        }
        await c.configure({ synchronous_standby_names: 'bench_sync' })
        await c.reload()
        await new Promise((r) => setTimeout(r, 1000))
        const remote = await run()
        sync.kill('SIGTERM')
        await c.configure({ synchronous_standby_names: '' })
        await c.reload()
        await sync.exited
        report(
          `pgbench -c 4 -T 15 (scale 5): no synchronous standby ${local.tps.toFixed(0)} tps, ${local.latencyMs} ms average; ` +
            `pgkeep wal stream --synchronous (fs) ${remote.tps.toFixed(0)} tps, ${remote.latencyMs} ms average`,
          { what: 'sync', local, remote },
        )
      }
    }
  } finally {
    await mkdir(join(import.meta.dirname, 'results'), { recursive: true })
    await appendFile(
      join(import.meta.dirname, 'results', 'wal-throughput.jsonl'),
      JSON.stringify({ at: new Date().toISOString(), walMb: WAL_MB, loadavg: loadavg(), results }) + '\n',
    )
    await s3.stop()
    await c.destroy()
    await rm(work, { recursive: true, force: true })
  }
})

const walName = (segno: bigint) => ['1', (segno / 256n).toString(16), (segno % 256n).toString(16)].map((x) => x.toUpperCase().padStart(8, '0')).join('')

/** CPU time (user + system) of a process so far, from /proc (clock ticks of 10 ms). */
async function procCpuMs(pid: number): Promise<number> {
  const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')
  return (Number(f[11]) + Number(f[12])) * 10
}
