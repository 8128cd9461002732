// A repository that holds two clusters (two real PostgreSQL 15 servers backed up into one repository): restore
// and `wal get` need --cluster and name both clusters when it is missing or matches none; with it, the right
// cluster comes back, by name (checked by starting the copy and reading its marker table) and by system
// identifier (checked with Debian's pg_controldata, an oracle outside pgkeep).

import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { debianTool, noteSkip } from '../harness/reference-tools.js'
import { startRestored, stopRestored, waitForPromotion } from './restore-fixture.js'

const MAJOR = 15

describe('restore from a repository of two clusters', () => {
  let alpha: Cluster
  let beta: Cluster
  let work: string
  let repo: string
  const ids: Record<'alpha' | 'beta', { systemId: string; backup: string }> = {} as never
  const restored: Cluster[] = []

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'pgkeep-clusters-'))
    repo = join(work, 'repo')
    alpha = await startCluster({ major: MAJOR, tablespaces: 0 })
    beta = await startCluster({ major: MAJOR, tablespaces: 0 })
    for (const [name, c] of [
      ['alpha', alpha],
      ['beta', beta],
    ] as const) {
      await c.sql(`create table which as select '${name}'::text v`)
      const res = await runMain(['backup', '-d', c.url(), '--repo', repo, '--init', '--cluster', name, '--json'])
      expect(res.code, res.stderr).toBe(0)
      const r = JSON.parse(res.stdout) as { id: string; systemId: string }
      ids[name] = { systemId: r.systemId, backup: r.id }
      expect((await c.sql<{ s: string }>('select system_identifier::text s from pg_control_system()'))[0]!.s).toBe(r.systemId)
    }
    expect(ids.alpha.systemId).not.toBe(ids.beta.systemId)
  })
  afterAll(async () => {
    for (const c of restored) await stopRestored(c).catch(() => {})
    for (const c of restored) await c.destroy()
    await alpha?.destroy()
    await beta?.destroy()
    if (work) await rm(work, { recursive: true, force: true })
  })

  const both = () => [new RegExp(`cluster ${ids.alpha.systemId} \\('alpha'\\)`), new RegExp(`cluster ${ids.beta.systemId} \\('beta'\\)`)]

  it('refuses a restore without --cluster, or with one that matches none, naming both clusters; nothing is written', async () => {
    for (const extra of [[], ['--cluster', 'gamma'], ['--cluster', '7000000000000000001'], ['--target-lsn', '0/3000000']]) {
      const dir = join(work, 'refused')
      const res = await runMain(['restore', '--repo', repo, '--pgdata', dir, ...extra])
      expect(res.code, res.stderr).toBe(2)
      for (const re of both()) expect(res.stderr).toMatch(re)
      expect(res.stderr).toMatch(/^HINT: /m)
      expect(existsSync(dir), 'nothing written').toBe(false)
    }
    // A backup id names its cluster; a --cluster that disagrees is refused.
    const res = await runMain(['restore', '--repo', repo, '--pgdata', join(work, 'refused'), '--backup', ids.alpha.backup, '--cluster', 'beta'])
    expect(res.code).toBe(2)
    expect(res.stderr).toMatch(new RegExp(`backup ${ids.alpha.backup} is of cluster ${ids.alpha.systemId} \\('alpha'\\), not of --cluster beta`))
  })

  it('restores the cluster --cluster names: by name, and by system identifier', async () => {
    const byName = join(work, 'by-name')
    const res = await runMain(['restore', '--repo', repo, '--pgdata', byName, '--cluster', 'alpha', '--target-immediate', '--target-action', 'promote'])
    expect(res.code, res.stderr).toBe(0)
    expect(res.stdout).toMatch(new RegExp(`restored backup ${ids.alpha.backup} `))
    const c = await startRestored(MAJOR, byName, work, [], { repoDir: repo })
    restored.push(c)
    await waitForPromotion(c)
    expect((await c.sql<{ v: string }>('select v from which'))[0]!.v).toBe('alpha')

    const bySystemId = join(work, 'by-system-id')
    const res2 = await runMain(['restore', '--repo', repo, '--pgdata', bySystemId, '--cluster', ids.beta.systemId])
    expect(res2.code, res2.stderr).toBe(0)
    expect(res2.stdout).toMatch(new RegExp(`restored backup ${ids.beta.backup} `))
    const controldata = debianTool('pg_controldata')
    if (!controldata) return noteSkip('pg_controldata check of the restored cluster', 'no Debian PostgreSQL 15 tools')
    const out = execFileSync(controldata, [bySystemId], { encoding: 'utf8' })
    expect(out).toMatch(new RegExp(`Database system identifier:\\s+${ids.beta.systemId}\\n`))
  })

  it("wal get outside a data directory needs --cluster too, and serves that cluster's WAL with it", async () => {
    const walKeys = await readdir(join(repo, 'records', 'wal', ids.beta.systemId))
    const segment = walKeys.map((k) => k.slice(0, 24)).find((k) => /^[0-9A-F]{24}$/.test(k))!
    const dest = join(work, 'fetched')
    const res = await runMain(['wal', 'get', '--repo', repo, '--prefetch', '0', segment, dest])
    expect(res.code).toBe(255)
    for (const re of both()) expect(res.stderr).toMatch(re)
    const ok = await runMain(['wal', 'get', '--repo', repo, '--prefetch', '0', '--cluster', 'beta', segment, dest])
    expect(ok.code, ok.stderr).toBe(0)
    expect(existsSync(dest)).toBe(true)
  })
})
