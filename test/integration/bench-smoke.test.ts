// The benchmark suite (`npm run bench`, bench/run.js → bench/suite.bench.ts) at a tiny scale, one run, no warm-up:
// it must keep working. Checks what it wrote against facts that do not depend on timing (no time is asserted).

import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { debianTool, noteSkip } from '../harness/reference-tools.js'

const ROOT = join(import.meta.dirname, '..', '..')
const WAL_SEGMENTS = 2
const SEGMENT_BYTES = 16 * 1024 * 1024
const RECOVERY_WAL_MB = 32

/** Every group and variant the issue asks the suite to measure (fs repository). */
const EXPECTED = [
  'limit/receive BASE_BACKUP, discard (protocol/)',
  'limit/tar -cf - of PGDATA and tablespace | wc -c',
  'limit/SHA-256 and zstd -1 of each 1 MiB of the files, one thread',
  'limit/zstd decode and SHA-256 check of those windows, one thread',
  'full/pg_basebackup -Ft -X stream',
  'full/pg_basebackup -Ft -X stream --compress=client-zstd:1',
  'full/pgkeep backup (full)',
  'incremental/pg_basebackup -Ft -X stream',
  'incremental/pgkeep backup (incremental)',
  'restore/tar -xf of the pg_basebackup tars',
  'restore/pgkeep restore --jobs 1',
  'restore/pgkeep restore --jobs 4',
  'restore/pgkeep restore --jobs 4 --no-sync',
  'pg17/pgkeep backup (full)',
  'pg17/pgkeep backup (incremental, server-side)',
  'wal/cp from a directory archive',
  'wal/curl GET from S3 (s3rver)',
  'wal/pgkeep wal get (fs repository)',
  'wal/pgkeep wal get (S3 repository)',
  'recovery/restore_command = cp from a directory archive',
  'recovery/restore_command = pgkeep wal get (fs repository)',
  'recovery/restore_command = pgkeep wal get (S3 repository)',
  'relations-200/pg_basebackup -Ft -X stream',
  'relations-200/pgkeep backup (full)',
  'relations-200/pgkeep backup (incremental)',
  'relations-200/tar -xf of the pg_basebackup tars',
  'relations-200/tar -xf of the pg_basebackup tars, then sync',
  'relations-200/pgkeep restore --jobs 4',
  'relations-200/pgkeep restore --jobs 4 --no-sync',
  'doubled/pg_basebackup -Ft -X stream',
  'doubled/pgkeep backup (full)',
]

interface Line {
  group?: string
  variant?: string
  side?: string
  warmup?: boolean
  wallMs?: number
  maxRssKb?: number | null
  bytesWritten?: number
  repoGrowthBytes?: number
  bytesRead?: number
  databaseBytes?: number
  restoreCalls?: number
  summary?: { meta: { databaseBytes: number; zstd: { rawBytes: number; zstdBytes: number; ratio: number } }; bars: { text: string; holds: boolean | null }[] }
}

function runLauncher(args: string[]): Promise<{ code: number | null; output: string }> {
  // The nested vitest must not take this worker's variables for its own.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VITEST') && k !== 'NODE_OPTIONS'))
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bench', 'run.js'), ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (d) => (output += d))
    child.stderr.on('data', (d) => (output += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, output }))
  })
}

describe('npm run bench (tiny scale)', () => {
  let out: string | undefined
  afterAll(async () => {
    if (out) await rm(out, { recursive: true, force: true })
  })

  it('documents its options in --help and refuses malformed ones before it starts anything', async () => {
    const help = await runLauncher(['--help'])
    expect(help.code).toBe(0)
    for (const option of ['--scale N', '--runs N', '--relations LIST', '--recovery-wal-mb N', '--doubled', '--profile', '--no-build'])
      expect(help.output).toContain(option)
    for (const bad of [
      ['--relations', '20k'],
      ['--recovery-wal-mb', '-1'],
      ['--relations', '1,,2'],
      ['--relations', '-5'],
      ['--doubled=yes'],
      ['--scale', '0'],
    ]) {
      const res = await runLauncher(bad)
      expect(res.code, bad.join(' ')).toBe(2)
      expect(res.output, bad.join(' ')).toMatch(/invalid|Option|option/)
    }
  })

  it('measures every variant and writes JSON lines, the table with its bars, and the chart', async () => {
    if (!debianTool('pg_basebackup') || !debianTool('pgbench')) {
      noteSkip('benchmark smoke run', 'needs pg_basebackup and pgbench from Debian PostgreSQL 15')
      return
    }
    out = await mkdtemp(join(tmpdir(), 'pgkeep-bench-smoke-'))
    const res = await runLauncher([
      '--scale',
      '1',
      '--runs',
      '1',
      '--warmup',
      '0',
      '--wal-segments',
      String(WAL_SEGMENTS),
      '--recovery-wal-mb',
      String(RECOVERY_WAL_MB),
      '--relations',
      '200',
      '--doubled',
      '--out',
      out,
      '--no-build',
    ])
    expect(res.code, res.output.slice(-4000)).toBe(0)

    const lines = (await readFile(join(out, 'suite.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Line)
    const samples = lines.filter((l) => l.variant !== undefined)
    const summary = lines.find((l) => l.summary)?.summary
    expect([...new Set(samples.map((s) => `${s.group}/${s.variant}`))].sort()).toEqual([...EXPECTED].sort())
    expect(samples).toHaveLength(EXPECTED.length) // one run each, no warm-up
    for (const s of samples) {
      expect(s.warmup).toBe(false)
      expect(s.wallMs).toBeGreaterThan(0)
      expect(s.maxRssKb, `${s.variant}: peak RSS from /usr/bin/time`).toBeGreaterThan(0)
    }
    const get = (group: string, variant: string) => samples.find((s) => s.group === group && s.variant === variant)!
    // CPU-s per GB has its base: the size of the database each backup row worked on; the doubled data is larger.
    for (const s of samples.filter((x) => x.group !== 'wal' && x.group !== 'recovery')) expect(s.databaseBytes, `${s.group}/${s.variant}`).toBeGreaterThan(0)
    expect(get('doubled', 'pgkeep backup (full)').databaseBytes).toBeGreaterThan(get('full', 'pgkeep backup (full)').databaseBytes!)

    // Every WAL variant delivered exactly the segments asked for, whole.
    for (const s of samples.filter((x) => x.group === 'wal')) expect(s.bytesWritten, s.variant).toBe(WAL_SEGMENTS * SEGMENT_BYTES)

    // Every recovery replayed at least the WAL asked for (the run checks it reached the last row), fetching each
    // segment through restore_command.
    for (const s of samples.filter((x) => x.group === 'recovery')) {
      expect(s.bytesRead, s.variant).toBeGreaterThanOrEqual(RECOVERY_WAL_MB * 1024 * 1024)
      expect(s.restoreCalls, s.variant).toBeGreaterThan(RECOVERY_WAL_MB / 16)
    }

    // Sizes that follow from what each command is: pg_basebackup's tars hold at least the database; pgkeep's
    // repository holds it compressed; 1% of pages changed costs a small fraction of a full backup.
    expect(summary).toBeDefined()
    const dbBytes = summary!.meta.databaseBytes
    expect(get('full', 'pg_basebackup -Ft -X stream').bytesWritten).toBeGreaterThan(dbBytes)
    const fullGrowth = get('full', 'pgkeep backup (full)').repoGrowthBytes!
    expect(fullGrowth).toBeGreaterThan(0)
    expect(fullGrowth).toBeLessThan(get('full', 'pg_basebackup -Ft -X stream').bytesWritten! / 2)
    expect(get('incremental', 'pgkeep backup (incremental)').repoGrowthBytes).toBeLessThan(fullGrowth / 5)
    expect(get('pg17', 'pgkeep backup (incremental, server-side)').repoGrowthBytes).toBeLessThan(get('pg17', 'pgkeep backup (full)').repoGrowthBytes! / 5)
    const received = get('limit', 'receive BASE_BACKUP, discard (protocol/)').bytesRead!
    expect(received).toBeGreaterThan(dbBytes)
    // The store limit hashes and compresses the files BASE_BACKUP sends (it leaves pg_wal out, as the server does,
    // and has no tar headers); the load limit reads back every byte of them.
    const stored = get('limit', 'SHA-256 and zstd -1 of each 1 MiB of the files, one thread').bytesRead!
    expect(stored).toBeGreaterThan(0.9 * received)
    expect(stored).toBeLessThan(received)
    expect(get('limit', 'zstd decode and SHA-256 check of those windows, one thread').bytesRead).toBe(stored)
    // The restored directories hold the same database as the extracted tars (pg_wal and manifests differ a little).
    const extracted = get('restore', 'tar -xf of the pg_basebackup tars').bytesWritten!
    for (const v of ['pgkeep restore --jobs 1', 'pgkeep restore --jobs 4', 'pgkeep restore --jobs 4 --no-sync']) {
      expect(Math.abs(get('restore', v).bytesWritten! - extracted) / extracted, v).toBeLessThan(0.1)
    }
    const extractedMany = get('relations-200', 'tar -xf of the pg_basebackup tars').bytesWritten!
    expect(extractedMany).toBeGreaterThan(0)
    expect(Math.abs(get('relations-200', 'pgkeep restore --jobs 4').bytesWritten! - extractedMany) / extractedMany).toBeLessThan(0.1)
    const z = summary!.meta.zstd
    expect(z.zstdBytes).toBeGreaterThan(0)
    expect(z.zstdBytes).toBeLessThan(z.rawBytes)
    expect(summary!.bars.length).toBeGreaterThanOrEqual(8)

    const md = await readFile(join(out, 'suite.md'), 'utf8')
    for (const key of EXPECTED) expect(md).toContain(key.slice(key.indexOf('/') + 1).replace(/\|/g, '\\|'))
    expect(md).toContain('| bar (goal, not a test assert) | measured | goal | holds |')
    expect(md).not.toMatch(/NaN|undefined|Infinity/)

    const svg = await readFile(join(out, 'suite.svg'), 'utf8')
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true)
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true)
    expect(svg.match(/<rect x="380"/g)).toHaveLength(EXPECTED.length) // one bar per variant
    expect(svg).not.toMatch(/NaN|undefined|Infinity/)
  }, 400_000)
})
