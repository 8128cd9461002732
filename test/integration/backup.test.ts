// `pgkeep backup` on PG 14–19, each with an extra tablespace, pgbench writing during the full backup; then an
// incremental after ~1% of the pages changed. Every backup is restored from the repository (pgkeep's own restore)
// and checked by external oracles: pg_verifybackup where it fits, the server's own manifest checksums, and starting
// it.

import { readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type BackupRecord, findBackup } from '../../src/repo/backup-record.js'
import { openRepository } from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster, startOnDataDir } from '../harness/cluster.js'
import { loadPgbench, startPgbench, tableChecksum, touchPages } from '../harness/load.js'
import { MAJORS } from '../harness/pg-binaries.js'
import { execFileP, noteSkip, verifyBackupPlan } from '../harness/reference-tools.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'
import { restoreAndCheck } from '../harness/restore-check.js'

interface Result {
  id: string
  type: string
  parent: string | null
  incrementalMode: string | null
  startLsn: string
  endLsn: string
  sizeBytes: number
  receivedBytes: number
  storedBytes: number
  files: number
}

async function backup(pg: Cluster, repoDir: string, extra: string[] = []): Promise<Result> {
  const r = await runMain(['backup', '-d', pg.url(), '--repo', repoDir, '--json', ...extra])
  expect(r.stderr.replace(/^pgkeep: created .*\n/, '')).not.toMatch(/error/)
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout)
}

/** Restores a backup with its WAL, then checks it against the server's manifest and pg_verifybackup. */
async function extractAndVerify(repoDir: string, major: number, b: BackupRecord, target: string): Promise<string> {
  const repo = await openRepository(await openFsStorage(repoDir))
  const ts = `${target}_ts`
  try {
    const { manifest, checked } = await restoreAndCheck(repo, b, target)
    expect((await readdir(join(target, 'pg_wal'))).some((n) => /^[0-9A-F]{24}$/.test(n))).toBe(true)
    // A server-side incremental sends most relation files as INCREMENTAL.*; the rest still number in the hundreds.
    expect(checked).toBeGreaterThan(b.incrementalMode === 'server' ? 200 : 500)
    if (b.incrementalMode !== 'server') {
      await rm(join(target, 'backup_manifest'), { force: true })
      const { writeFile } = await import('node:fs/promises')
      await writeFile(join(target, 'backup_manifest'), manifest)
      const plan = verifyBackupPlan(major)
      if (!plan.tool) noteSkip(`pg_verifybackup of backup ${b.id} (PG ${major})`, plan.note!)
      else {
        if (plan.note) noteSkip(`part of pg_verifybackup (PG ${major})`, plan.note)
        const { stdout } = await execFileP(plan.tool, [...plan.args, target])
        expect(stdout).toMatch(/backup successfully verified/)
      }
    } else {
      noteSkip(`pg_verifybackup of server-side incremental ${b.id}`, "the server's manifest lists INCREMENTAL files, not the rebuilt ones")
    }
    return ts
  } finally {
    await repo.close()
  }
}

describe.each(MAJORS)('pgkeep backup on PG %i', (major) => {
  let pg: Cluster
  let r: TestRepo
  beforeAll(async () => {
    pg = await startCluster({ major })
    r = await freshFsRepo()
    await loadPgbench(pg, 5)
  })
  afterAll(async () => {
    await pg?.destroy()
    await r?.close()
  })

  it('takes a full backup under load, then a small incremental, both restorable', async () => {
    const load = startPgbench(pg)
    let full: Result
    try {
      full = await backup(pg, r.dir, ['--label', 'full under load'])
    } finally {
      await load.stop()
    }
    expect(full.type).toBe('full')
    expect(full.parent).toBeNull()
    expect(full.sizeBytes).toBeGreaterThan(70e6)

    await pg.sql('vacuum freeze')
    await pg.sql('checkpoint')
    const settled = await backup(pg, r.dir) // pages settled by the vacuum: the base for a clean 1% measurement
    const pages = await touchPages(pg, 1)
    const inc = await backup(pg, r.dir)
    expect(inc.type).toBe('incremental')
    expect(inc.parent).toBe(settled.id)
    expect(inc.incrementalMode).toBe(major >= 17 ? 'server' : 'client')
    console.log(
      `PG ${major}: full ${(full.sizeBytes / 1e6).toFixed(1)} MB stored ${(full.storedBytes / 1e6).toFixed(2)} MB; ` +
        `incremental after touching ${pages} pages: stored ${(inc.storedBytes / 1e6).toFixed(3)} MB ` +
        `(${((100 * inc.storedBytes) / inc.sizeBytes).toFixed(2)}% of the database, ${((100 * inc.storedBytes) / full.storedBytes).toFixed(1)}% of the full), ` +
        `received ${(inc.receivedBytes / 1e6).toFixed(1)} MB vs ${(full.receivedBytes / 1e6).toFixed(1)} MB (${inc.incrementalMode})`,
    )
    expect(inc.storedBytes).toBeLessThan(0.03 * inc.sizeBytes)
    expect(inc.storedBytes).toBeLessThan(0.25 * full.storedBytes)
    if (major >= 17) expect(inc.receivedBytes).toBeLessThan(0.2 * full.receivedBytes)
    else expect(inc.receivedBytes).toBeGreaterThan(0.9 * full.receivedBytes)

    const repo = await openRepository(await openFsStorage(r.dir))
    const fullRec = await findBackup(repo, full.id)
    const incRec = await findBackup(repo, inc.id)
    await repo.close()

    // The full backup, taken while pgbench wrote: it must verify and start.
    const t1 = join(pg.baseDir, 'full')
    const ts1 = await extractAndVerify(r.dir, major, fullRec, t1)
    const c1 = await startOnDataDir(major, t1, { baseDir: pg.baseDir, tablespaceDirs: [ts1] })
    const [{ n }] = await c1.sql<{ n: string }>(`select count(*)::text n from pgbench_accounts`)
    expect(Number(n)).toBe(500000)
    await c1.stop()

    // The incremental: nothing wrote since, so every table equals the source's.
    const t2 = join(pg.baseDir, 'incr')
    const ts2 = await extractAndVerify(r.dir, major, incRec, t2)
    const c2 = await startOnDataDir(major, t2, { baseDir: pg.baseDir, tablespaceDirs: [ts2] })
    for (const [table, key] of [
      ['pgbench_accounts', 'aid'],
      ['pgbench_branches', 'bid'],
      ['pgbench_tellers', 'tid'],
    ]) {
      const [want] = await pg.sql(tableChecksum(table, key))
      const [got] = await c2.sql(tableChecksum(table, key))
      expect(got, table).toEqual(want)
    }
    await c2.stop()

    const info = await runMain(['info', '--repo', r.dir, '--json'])
    expect(info.code).toBe(0)
    const [cluster] = JSON.parse(info.stdout).clusters
    expect(cluster.backups.map((b: { id: string }) => b.id)).toEqual([full.id, settled.id, inc.id])
    expect(cluster.wal[0].timeline).toBe(1)
  })
})
