// Restores on the same host as their running source, where a tablespace's original location is the live server's.
// A delta restore without --tablespace-mapping keeps the tablespace where the target's own link points; when the
// target has no link (or its link was turned to the source's location), the original location belongs to the
// running source and the restore is refused before anything is written, with a hint that does not lead to harm.
// After every attempt the source still serves the tables in its tablespace.

import { readdir, readlink, rm, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runBin } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'
import { addOwnTables, tableChecksums } from './restore-fixture.js'
import { ensureBuilt } from './wal-helpers.js'

beforeAll(() => ensureBuilt(), 120_000)

for (const major of [15, 17] as const) {
  describe(`PostgreSQL ${major}: restore --delta beside the running source`, () => {
    let pg: Cluster
    let r: TestRepo
    let want: Record<string, string>
    let tsFiles: string[]
    beforeAll(async () => {
      pg = await startCluster({ major })
      r = await freshFsRepo()
      await addOwnTables(pg)
      const res = await runBin(['backup', '-d', pg.url(), '--repo', r.dir])
      expect(res.code, res.stderr).toBe(0)
      want = await tableChecksums(pg)
      tsFiles = await listAll(pg.tablespaceDirs[0]!)
    })
    afterAll(async () => {
      await pg?.destroy()
      await r?.close()
    })

    /** The source still serves its tablespace's table and index, and its tablespace directory lost nothing. */
    async function sourceIntact(): Promise<void> {
      const [row] = await pg.sql<{ n: string }>(`select count(*)::text as n from ts_table where v = md5('4242')`)
      expect(row!.n).toBe('1')
      expect(await tableChecksums(pg)).toEqual(want)
      const now = await listAll(pg.tablespaceDirs[0]!)
      for (const f of tsFiles) expect(now).toContain(f)
    }

    it('keeps the tablespace where the target links it, and refuses the live original location', async () => {
      const target = join(pg.baseDir, 'copy')
      const mapped = join(pg.baseDir, 'copy-ts')
      const first = await runBin(['restore', '--repo', r.dir, '--pgdata', target, '--tablespace-mapping', `${pg.tablespaceDirs[0]}=${mapped}`])
      expect(first.code, first.stderr).toBe(0)

      // What was seen before: a later delta without the mapping. It now stays in the target's own location.
      const again = await runBin(['restore', '--repo', r.dir, '--pgdata', target, '--delta'])
      expect(again.code, again.stderr).toBe(0)
      const link = join(target, 'pg_tblspc', (await readdir(join(target, 'pg_tblspc')))[0]!)
      expect(await readlink(link)).toBe(mapped)
      await sourceIntact()

      // The target lost its link: the tablespace would go to its original location, the running source's.
      await rm(link)
      const noLink = await runBin(['restore', '--repo', r.dir, '--pgdata', target, '--delta'])
      expect(noLink.code, noLink.stderr).toBe(2)
      expect(noLink.stderr).toMatch(
        new RegExp(`'${pg.tablespaceDirs[0]}' overlaps the (data directory|tablespace location) '[^']+' of the server running with pid \\d+`),
      )
      expect(noLink.stderr).toMatch(/HINT: map the tablespace to a new, empty directory with --tablespace-mapping \d+=/)
      expect(noLink.stderr).not.toContain('--delta')
      await sourceIntact()

      // The target's link was turned to the source's live location.
      await symlink(pg.tablespaceDirs[0]!, link)
      const turned = await runBin(['restore', '--repo', r.dir, '--pgdata', target, '--delta'])
      expect(turned.code, turned.stderr).toBe(2)
      expect(turned.stderr).toContain('of the server running with pid')
      await sourceIntact()
    })

    it('refuses the source itself as a delta target', async () => {
      const res = await runBin(['restore', '--repo', r.dir, '--pgdata', pg.dataDir, '--delta'])
      expect(res.code, res.stderr).toBe(2)
      expect(res.stderr).toMatch(/server \(pid \d+\) seems to be running|of the server running with pid/)
      await sourceIntact()
    })
  })
}

async function listAll(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).sort()
}
