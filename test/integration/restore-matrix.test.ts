// Restore on PG 14–19, each with an extra tablespace relocated by --tablespace-mapping: a full and an incremental
// backup, both taken while pgbench wrote, are restored (the full through the library, the incremental through
// `pgkeep restore`), checked by pg_verifybackup where a local one fits, against the server's own manifest, and by
// pgkeep's manifest; then started, compared table by table with the source at the recovery point, and amchecked.
//
// The source's content at the recovery point is known because pgbench is frozen (its tables locked EXCLUSIVE)
// part-way through each backup, before the backup's end LSN, and until the content is read: every recovery point
// from that moment to the end of the backup sees the same rows.

import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { takeBackup, type BackupResult } from '../../src/backup/backup.js'
import { parseLsn } from '../../src/pg/lsn.js'
import { findBackup } from '../../src/repo/backup-record.js'
import { openRepository } from '../../src/repo/index.js'
import { restoreBackup } from '../../src/restore/restore.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { loadPgbench, startPgbench } from '../harness/load.js'
import { MAJORS } from '../harness/pg-binaries.js'
import { noteSkip } from '../harness/reference-tools.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'
import {
  addOwnTables,
  amcheckAll,
  checkAgainstServerManifest,
  checkOwnManifest,
  freezePgbench,
  startRestored,
  stopRestored,
  tableChecksums,
  testRestoreCommand,
  verifyRestored,
  waitForPromotion,
} from './restore-fixture.js'

/**
 * A backup taken while pgbench writes; pgbench is frozen part-way through and the source's content read then. On
 * a loaded machine the freeze can land after the backup's end (the lock waits for running transactions): then the
 * backup is taken again, slower.
 */
async function backupUnderLoad(pg: Cluster, r: TestRepo, maxRateKbps: number): Promise<{ b: BackupResult; want: Record<string, string> }> {
  for (let attempt = 1; ; attempt++) {
    let freeze: ReturnType<typeof freezePgbench> | undefined
    const b = await takeBackup({
      server: { conninfo: pg.url() },
      repo: r.repo,
      maxRateKbps,
      onEvent: (p) => {
        if (p.type !== 'progress' || p.phase !== 'files') return
        if (!freeze && p.bytesDone > 0 && (p.bytesTotal === null || p.bytesDone >= 0.4 * p.bytesTotal)) freeze = freezePgbench(pg)
      },
    })
    const frozen = await (freeze ?? freezePgbench(pg))
    const inside = parseLsn(frozen.lsn) < parseLsn(b.endLsn) && parseLsn(frozen.lsn) > parseLsn(b.startLsn)
    if (!inside) {
      await frozen.release()
      if (attempt === 3) throw new Error(`three times pgbench froze outside the backup (last: at ${frozen.lsn}, backup ${b.startLsn}..${b.endLsn})`)
      console.log(`pgbench froze at ${frozen.lsn}, outside backup ${b.startLsn}..${b.endLsn}: taking it again, slower`)
      maxRateKbps = Math.max(32, Math.floor(maxRateKbps / 4))
      continue
    }
    try {
      return { b, want: await tableChecksums(pg) }
    } finally {
      await frozen.release()
    }
  }
}

describe.each(MAJORS)('restore on PG %i', (major) => {
  let pg: Cluster
  let r: TestRepo
  beforeAll(async () => {
    pg = await startCluster({ major })
    r = await freshFsRepo()
    await loadPgbench(pg, 5)
    await addOwnTables(pg)
  })
  afterAll(async () => {
    await pg?.destroy()
    await r?.close()
  })

  // Two backups under load, two restores, four server starts: minutes on a busy two-core machine.
  it('restores a full and an incremental backup taken under pgbench, tablespace relocated', { timeout: 600_000 }, async () => {
    const load = startPgbench(pg, 4)
    let full: Awaited<ReturnType<typeof backupUnderLoad>>
    let incr: Awaited<ReturnType<typeof backupUnderLoad>>
    try {
      full = await backupUnderLoad(pg, r, 32 * 1024)
      await new Promise((res) => setTimeout(res, 1500))
      // A server-side incremental (17+) sends little: slow it down so that the freeze lands inside it.
      incr = await backupUnderLoad(pg, r, major >= 17 ? 2048 : 32 * 1024)
    } finally {
      await load.stop()
    }
    expect(incr.b.type).toBe('incremental')
    expect(incr.b.parent).not.toBeNull()
    expect(incr.want).not.toEqual(full.want)
    const tsOid = (await pg.sql<{ oid: number }>(`select oid from pg_tablespace where spcname = 'ts1'`))[0]!.oid

    // The full backup, through the library; the tablespace mapped by its original location.
    const repo = await openRepository(await openFsStorage(r.dir))
    try {
      const t1 = join(pg.baseDir, 'restored-full')
      const ts1 = join(pg.baseDir, 'restored-full-ts1')
      const res = await restoreBackup({
        repo,
        pgdata: t1,
        backup: full.b.id,
        tablespaceMapping: [{ from: pg.tablespaceDirs[0]!, to: ts1 }],
        recovery: { restoreCommand: testRestoreCommand(r.dir), target: { type: 'immediate' }, targetAction: 'promote' },
        jobs: 4,
        // Every small file through the writer's thread (by default only a restore of thousands of them uses it).
        smallFileThreadAfter: 0,
      })
      expect(res.tablespaces).toEqual([{ oid: tsOid, location: ts1 }])
      expect(res.filesWritten).toBe(res.files)
      await checkRestoredDir(repo, full.b.id, t1)
      await startAndCompare(t1, ts1, full.want)

      // The incremental, through the CLI; the tablespace mapped by oid.
      const t2 = join(pg.baseDir, 'restored-incr')
      const ts2 = join(pg.baseDir, 'restored-incr-ts1')
      const cli = await runMain([
        'restore',
        '--repo',
        r.dir,
        '--pgdata',
        t2,
        '--tablespace-mapping',
        `${tsOid}=${ts2}`,
        '--target-immediate',
        '--target-action',
        'promote',
        '--jobs',
        '2',
        '--json',
      ])
      expect(cli.code, cli.stderr).toBe(0)
      const out = JSON.parse(cli.stdout)
      expect(out.backupId).toBe(incr.b.id)
      expect(out.restoreCommand).toContain(' wal get --repo ')
      await checkRestoredDir(repo, incr.b.id, t2)
      await startAndCompare(t2, ts2, incr.want)
    } finally {
      await repo.close()
    }
  })

  async function checkRestoredDir(repo: Awaited<ReturnType<typeof openRepository>>, id: string, dir: string): Promise<void> {
    const rec = await findBackup(repo, id)
    const serverChecked = await checkAgainstServerManifest(repo, rec, dir)
    expect(serverChecked).toBeGreaterThan(rec.incrementalMode === 'server' ? 100 : 500)
    const ownChecked = await checkOwnManifest(dir)
    expect(ownChecked).toBeGreaterThan(500)
    const v = await verifyRestored(major, dir)
    if (!v.ran) noteSkip(`pg_verifybackup of the restored ${rec.type} backup (PG ${major})`, v.output)
    else {
      console.log(`pg_verifybackup of the restored ${rec.type} backup (PG ${major}): ${v.output.trim()}`)
      expect(v.output).toMatch(/backup successfully verified/)
    }
  }

  async function startAndCompare(dir: string, ts: string, want: Record<string, string>): Promise<void> {
    const c = await startRestored(major, dir, pg.baseDir, [ts], { repoDir: r.dir })
    try {
      await waitForPromotion(c)
      expect(await tableChecksums(c)).toEqual(want)
      expect(await amcheckAll(c)).toEqual([])
      // The relocated tablespace is where the mapping said.
      const [{ loc }] = await c.sql<{ loc: string }>(`select pg_tablespace_location(oid) as loc from pg_tablespace where spcname = 'ts1'`)
      expect(loc).toBe(ts)
    } finally {
      await stopRestored(c)
    }
  }
})
