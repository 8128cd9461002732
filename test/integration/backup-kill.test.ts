// SIGKILL at several points of running backups: afterwards the repository verifies, no partial backup is listed,
// no slot is left behind, and the run after them completes while reusing what the killed runs had stored.

import { spawn } from 'node:child_process'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { loadPgbench } from '../harness/load.js'

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'pgkeep.js')

/** Starts `pgkeep backup` in a child process and SIGKILLs it after `ms`; resolves once it is gone. */
async function killBackupAfter(url: string, repo: string, ms: number): Promise<{ stderr: string; signal: string | null }> {
  const child = spawn(process.execPath, [BIN, 'backup', '-d', url, '--repo', repo, '--init', '--max-rate', '16M'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d) => (stderr += d))
  const exited = new Promise<string | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)))
  const timer = setTimeout(() => child.kill('SIGKILL'), ms)
  const signal = await exited
  clearTimeout(timer)
  return { stderr, signal }
}

describe('backups killed with SIGKILL (PG 16)', () => {
  let pg: Cluster
  beforeAll(async () => {
    pg = await startCluster({ major: 16 })
    await loadPgbench(pg, 20) // ~300 MB: throttled to 16 MB/s a backup takes ~20 s
  })
  afterAll(async () => pg?.destroy())

  it('leave a sound repository with nothing listed, and the next run reuses their blobs', async () => {
    const repo = join(pg.baseDir, 'repo')
    await mkdir(repo)
    for (const ms of [300, 1500, 6000, 11000, 16000]) {
      const { signal, stderr } = await killBackupAfter(pg.url(), repo, ms)
      expect(signal, `the backup finished before the kill at ${ms} ms: ${stderr}`).toBe('SIGKILL')
      const verify = await runMain(['verify', '--repo', repo, '--json'])
      // killed before init finished (with --json the error is the one object on stdout)
      if (/is not a pgkeep repository|there is no repository at/.test(verify.stdout + verify.stderr)) continue
      expect(verify.code, `after the kill at ${ms} ms: ${verify.stdout}${verify.stderr}`).toBe(0)
      const info = await runMain(['info', '--repo', repo, '--json'])
      expect(info.code).toBe(0)
      expect(JSON.parse(info.stdout).clusters.flatMap((c: { backups: unknown[] }) => c.backups)).toEqual([])
      await expect.poll(async () => (await pg.sql(`select 1 from pg_replication_slots`)).length, { timeout: 10_000 }).toBe(0)
    }

    const resumed = await runMain(['backup', '-d', pg.url(), '--repo', repo, '--init', '--json'])
    expect(resumed.code, resumed.stderr).toBe(0)
    const fresh = await runMain(['backup', '-d', pg.url(), '--repo', join(pg.baseDir, 'fresh-repo'), '--init', '--json'])
    expect(fresh.code, fresh.stderr).toBe(0)
    const r = JSON.parse(resumed.stdout)
    const f = JSON.parse(fresh.stdout)
    console.log(`after 5 killed runs the backup stored ${(r.storedBytes / 1e6).toFixed(2)} MB; into an empty repository ${(f.storedBytes / 1e6).toFixed(2)} MB`)
    expect(r.type).toBe('full')
    expect(r.storedBytes).toBeLessThan(0.7 * f.storedBytes)
    const verify = await runMain(['verify', '--repo', repo, '--read-data'])
    expect(verify.code, verify.stdout + verify.stderr).toBe(0)
  })
})
