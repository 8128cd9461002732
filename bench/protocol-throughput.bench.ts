// Receive throughput of BASE_BACKUP through protocol/ against pg_basebackup -D - -Ft -X none > /dev/null,
// on the same single-tablespace PostgreSQL 15 server, alternating runs, medians. Size: PGKEEP_BENCH_SCALE
// (pgbench scale, default 70 ≈ 1 GB).

import { spawn } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { mkdir, appendFile } from 'node:fs/promises'
import { join } from 'node:path'
import { it } from 'vitest'
import { baseBackup, connect } from '../protocol/index.js'
import { PASSWORD, ROLES, startCluster } from '../test/harness/cluster.js'
import { debianTool, execFileP } from '../test/harness/reference-tools.js'

const scale = Number(process.env.PGKEEP_BENCH_SCALE ?? 70)
const runs = Number(process.env.PGKEEP_BENCH_RUNS ?? 3)

async function viaProtocol(url: string, sink: 'discard' | 'devnull'): Promise<{ ms: number; bytes: number; cpuMs: number }> {
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  const c = await connect(url)
  const out = sink === 'devnull' ? createWriteStream('/dev/null') : undefined
  let bytes = 0
  for await (const e of baseBackup(c, { checkpoint: 'fast', manifest: false, verifyChecksums: true })) {
    if (e.type !== 'data') continue
    bytes += e.data.length
    if (out && !out.write(e.data)) await new Promise<void>((r) => out.once('drain', () => r()))
  }
  if (out) await new Promise<void>((r) => out.end(() => r()))
  await c.close()
  const cpu = process.cpuUsage(cpu0)
  return { ms: performance.now() - t0, bytes, cpuMs: (cpu.user + cpu.system) / 1000 }
}

function viaPgBasebackup(port: number): Promise<{ ms: number }> {
  const tool = debianTool('pg_basebackup')!
  const t0 = performance.now()
  return new Promise((resolve, reject) => {
    const child = spawn(tool, ['-h', '127.0.0.1', '-p', String(port), '-U', ROLES.repl, '-D', '-', '-Ft', '-X', 'none', '--checkpoint=fast', '--no-manifest'], {
      env: { ...process.env, PGPASSWORD: PASSWORD },
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let err = ''
    child.stderr.on('data', (d) => (err += d))
    child.on('close', (code) => (code === 0 ? resolve({ ms: performance.now() - t0 }) : reject(new Error(err))))
  })
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

it(`BASE_BACKUP receive throughput, pgbench scale ${scale}`, async () => {
  const pg = await startCluster({ major: 15, tablespaces: 0 })
  try {
    const pgbench = debianTool('pgbench')
    if (!pgbench) throw new Error('pgbench from Debian PostgreSQL 15 is needed to load the benchmark data')
    await execFileP(pgbench, ['-i', '-q', '-s', String(scale), '-h', pg.socketDir, '-p', String(pg.port), '-U', 'postgres', 'postgres'])
    await pg.sql('checkpoint')
    const url = pg.url()
    await viaProtocol(url, 'discard') // warm-up: page cache and server
    await viaPgBasebackup(pg.port)
    const rows: Record<string, number[]> = { 'protocol/ (discard)': [], 'protocol/ (> /dev/null)': [], 'pg_basebackup -D - -Ft -X none > /dev/null': [] }
    let bytes = 0
    const cpu: number[] = []
    for (let i = 0; i < runs; i++) {
      const a = await viaProtocol(url, 'discard')
      bytes = a.bytes
      rows['protocol/ (discard)'].push(a.ms)
      cpu.push(a.cpuMs)
      rows['pg_basebackup -D - -Ft -X none > /dev/null'].push((await viaPgBasebackup(pg.port)).ms)
      rows['protocol/ (> /dev/null)'].push((await viaProtocol(url, 'devnull')).ms)
    }
    const ref = median(rows['pg_basebackup -D - -Ft -X none > /dev/null'])
    const lines = [`BASE_BACKUP of ${(bytes / 1e6).toFixed(0)} MB (pgbench -s ${scale}, PG 15, one tablespace), ${runs} alternating runs, medians:`]
    for (const [name, ms] of Object.entries(rows)) {
      const m = median(ms)
      lines.push(
        `  ${name.padEnd(46)} ${(m / 1000).toFixed(2)} s  ${(bytes / 1e6 / (m / 1000)).toFixed(0)} MB/s  ratio ${(m / ref).toFixed(2)}  runs ${ms.map((x) => (x / 1000).toFixed(2)).join(' ')}`,
      )
    }
    lines.push(`  CPU of the client process per protocol/ (discard) run: median ${(median(cpu) / 1000).toFixed(2)} s`)
    console.log(lines.join('\n'))
    await mkdir(join(import.meta.dirname, 'results'), { recursive: true })
    await appendFile(
      join(import.meta.dirname, 'results', 'protocol-throughput.jsonl'),
      JSON.stringify({ at: new Date().toISOString(), scale, bytes, runs: rows }) + '\n',
    )
  } finally {
    await pg.destroy()
  }
})
