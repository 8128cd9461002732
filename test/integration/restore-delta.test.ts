// --delta: a restored copy is started, diverges (rows changed, a table created, an index dropped, new WAL on a new
// timeline), is stopped, and is then restored again in place from the same backup. The result must equal a full
// restore of that backup into a fresh directory, file by file (content, mode, time), while writing far fewer bytes;
// and it must start with the backup's content.

import { lstat, readFile, readdir, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { BackupResult } from '../../src/backup/backup.js'
import { parseServerManifest } from '../../src/pg/backup-manifest.js'
import { openRepository, type Repository } from '../../src/repo/index.js'
import { restoreBackup, type RestoreResult } from '../../src/restore/restore.js'
import { openFsStorage } from '../../src/storage/fs.js'
import type { Cluster } from '../harness/cluster.js'
import { touchPages } from '../harness/load.js'
import { type BackedUpCluster, backedUpCluster } from '../harness/backed-up-cluster.js'
import type { TestRepo } from '../harness/repo.js'
import { checkOwnManifest, startRestored, stopRestored, tableChecksums, testRestoreCommand, waitForPromotion } from './restore-fixture.js'

const MAJOR = 16

/** Every entry under `dir` (following nothing): type, mode, and for files size, time and content. */
async function snapshot(dir: string, skip: (rel: string) => boolean): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  const walk = async (abs: string, rel: string) => {
    for (const name of (await readdir(abs)).sort()) {
      const r = rel ? `${rel}/${name}` : name
      if (skip(r)) continue
      const p = join(abs, name)
      const st = await lstat(p)
      if (st.isDirectory()) {
        out.set(r, `dir ${(st.mode & 0o7777).toString(8)}`)
        await walk(p, r)
      } else if (st.isSymbolicLink()) {
        out.set(r, `link`)
        await walk(await readlink(p), r) // tablespace links: compare what they hold
      } else {
        const sum = (await import('node:crypto'))
          .createHash('sha256')
          .update(await readFile(p))
          .digest('hex')
        // Files pgkeep writes itself at restore time (WAL, its status, the recovery settings) carry that time.
        const written = /^(pg_wal\/|postgresql\.auto\.conf$|recovery\.signal$)/.test(r)
        out.set(r, `file ${(st.mode & 0o7777).toString(8)} ${st.size} ${written ? '-' : Math.floor(st.mtimeMs / 1000)} ${sum}`)
      }
    }
  }
  await walk(dir, '')
  return out
}

describe('delta restore', () => {
  let pg: Cluster
  let r: TestRepo
  let b: BackupResult
  let want: Record<string, string>
  let fixture: BackedUpCluster
  beforeAll(async () => {
    fixture = await backedUpCluster({ major: MAJOR, pgbenchScale: 5 })
    ;({ pg, r, want } = fixture)
    b = fixture.backup!
  })
  afterAll(async () => {
    await fixture?.destroy()
  })

  const restore = (repo: Repository, pgdata: string, ts: string, delta: boolean): Promise<RestoreResult> =>
    restoreBackup({
      repo,
      pgdata,
      backup: b.id,
      tablespaceMapping: [{ from: pg.tablespaceDirs[0]!, to: ts }],
      recovery: { restoreCommand: testRestoreCommand(r.dir), target: { type: 'immediate' }, targetAction: 'promote' },
      delta,
    })

  it('over a copy that diverged equals a full restore, and writes far fewer bytes', async () => {
    const repo = await openRepository(await openFsStorage(r.dir))
    try {
      const copy = join(pg.baseDir, 'copy')
      const copyTs = join(pg.baseDir, 'copy-ts')
      const first = await restore(repo, copy, copyTs, false)
      const c = await startRestored(MAJOR, copy, pg.baseDir, [copyTs], { repoDir: r.dir })
      try {
        await waitForPromotion(c)
        const pages = await touchPages(c, 1)
        await c.sql(`insert into ts_table select g, 'new' from generate_series(100001, 101000) g`)
        await c.sql(`create table brand_new as select g from generate_series(1, 10000) g`)
        await c.sql(`drop index ts_table_v`)
        await c.sql(`delete from wide where id % 10 = 0`)
        await c.sql('vacuum wide')
        await c.sql('checkpoint')
        expect(await tableChecksums(c)).not.toEqual(want)
        console.log(`diverged the copy: ${pages} pages of pgbench_accounts touched, rows inserted and deleted, a table created, an index dropped`)

        // A delta restore refuses to run under a live server.
        await expect(restore(repo, copy, copyTs, true)).rejects.toThrow(/seems to be running on/)
      } finally {
        await stopRestored(c)
      }

      const delta = await restore(repo, copy, copyTs, true)
      const fresh = join(pg.baseDir, 'fresh')
      const freshTs = join(pg.baseDir, 'fresh-ts')
      const full = await restore(repo, fresh, freshTs, false)
      console.log(
        `delta restore wrote ${delta.bytesWritten} bytes (${delta.filesWritten} files written, ${delta.filesUnchanged} unchanged, ${delta.removed} entries removed) ` +
          `in ${delta.durationMs} ms; a full restore wrote ${full.bytesWritten} bytes (${full.filesWritten} files) in ${full.durationMs} ms; ` +
          `the first restore of the copy wrote ${first.bytesWritten} bytes`,
      )
      expect(full.bytesWritten).toBe(first.bytesWritten)
      expect(delta.bytesWritten).toBeLessThan(full.bytesWritten * 0.1)
      expect(delta.filesUnchanged).toBeGreaterThan(delta.filesWritten)
      expect(delta.removed).toBeGreaterThan(0)

      // File by file equal to the full restore. The manifests list the same files (in the order the workers finished).
      const skip = (rel: string) => rel === 'backup_manifest'
      const [a, f] = await Promise.all([snapshot(copy, skip), snapshot(fresh, skip)])
      const differences = [...new Set([...a.keys(), ...f.keys()])].filter((k) => a.get(k) !== f.get(k)).map((k) => `${k}: delta ${a.get(k)} / full ${f.get(k)}`)
      expect(differences).toEqual([])
      expect(a.size).toBeGreaterThan(1000)
      const files = async (d: string) =>
        parseServerManifest(await readFile(join(d, 'backup_manifest')))
          .files.map((x) => JSON.stringify(['postgresql.auto.conf', 'recovery.signal'].includes(x.path) ? { ...x, lastModified: '-' } : x))
          .sort()
      expect(await files(copy)).toEqual(await files(fresh))
      expect(await checkOwnManifest(copy)).toBeGreaterThan(500)

      const c2 = await startRestored(MAJOR, copy, pg.baseDir, [copyTs], { repoDir: r.dir })
      try {
        await waitForPromotion(c2)
        expect(await tableChecksums(c2)).toEqual(want)
      } finally {
        await stopRestored(c2)
      }
    } finally {
      await repo.close()
    }
  })
})
