// Backups whose hashing, CRC-32C and encoding run on ingest worker threads, against real servers: PG 15 (client-side
// incremental) and PG 17 (server-side INCREMENTAL files), plain and encrypted repositories. Every backup passes the
// engine's own check of each file's CRC-32C against the server's manifest (CRCs joined from per-window CRCs);
// extracted backups pass pg_verifybackup where it fits; the pgbench tables' file maps equal those of a backup taken
// on the main thread only (same repository, so equal maps have equal ids).

import { rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { findBackup } from '../../src/repo/backup-record.js'
import { FileListReader } from '../../src/repo/file-list.js'
import { openRepository } from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { runMain } from '../harness/cli.js'
import { restoreAndCheck } from '../harness/restore-check.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { loadPgbench, startPgbench, touchPages } from '../harness/load.js'
import { execFileP, noteSkip, verifyBackupPlan } from '../harness/reference-tools.js'

const PASSPHRASE = 'ingest workers test'

interface Result {
  id: string
  type: string
  incrementalMode: string | null
  sizeBytes: number
  storedBytes: number
}

describe.each([
  { major: 15 as const, passphrase: undefined },
  { major: 17 as const, passphrase: PASSPHRASE },
])('backups with ingest workers on PG $major', ({ major, passphrase }) => {
  let pg: Cluster
  let repoDir: string
  const env = passphrase ? { PGKEEP_PASSPHRASE: passphrase } : {}

  async function backup(workers: number, extra: string[] = []): Promise<Result> {
    // The workers run the build's compiled module (dist/), as the installed CLI's do.
    const res = await runMain(['backup', '-d', pg.url(), '--repo', repoDir, '--init', '--json', '--workers', String(workers), ...extra], env)
    expect(res.code, res.stderr).toBe(0)
    return JSON.parse(res.stdout)
  }

  /** File map blob ids (or inline maps) of the pgbench tables' and index's files in backup `id`. */
  async function pgbenchMaps(id: string): Promise<Map<string, string>> {
    const paths = await pg.sql<{ p: string }>(
      `select pg_relation_filepath(c.oid) p from pg_class c where relname in ('pgbench_accounts', 'pgbench_accounts_pkey', 'pgbench_branches', 'pgbench_tellers')`,
    )
    const repo = await openRepository(await openFsStorage(repoDir), { passphrase })
    try {
      const files = new FileListReader(repo, (await findBackup(repo, id)).files)
      const out = new Map<string, string>()
      for (const { p } of paths) {
        // Tablespace paths come back as pg_tblspc/<oid>/PG_…/<db>/<file>, as the backup lists them.
        const e = await files.get(p)
        expect(e?.fileMap, p).toBeDefined()
        const ref = e!.fileMap!
        out.set(p, typeof ref === 'string' ? ref : `inline ${ref.pages}`)
      }
      return out
    } finally {
      await repo.close()
    }
  }

  beforeAll(async () => {
    pg = await startCluster({ major })
    repoDir = join(pg.baseDir, 'repo') // created by the first backup (--init), encrypted when a passphrase is set
    await loadPgbench(pg, 5)
  })
  afterAll(async () => {
    await pg?.destroy()
  })

  it('takes full and incremental backups on workers that match the server manifest and restore', async () => {
    const load = startPgbench(pg)
    let underLoad: Result
    try {
      underLoad = await backup(2, ['--type', 'full'])
    } finally {
      await load.stop()
    }
    expect(underLoad.type).toBe('full')
    await pg.sql('vacuum freeze')
    await pg.sql('checkpoint')

    // The same settled data on the main thread and on one and two workers: identical file maps.
    const onMain = await backup(0, ['--type', 'full'])
    const onOne = await backup(1, ['--type', 'full'])
    const onTwo = await backup(2, ['--type', 'full'])
    const mainMaps = await pgbenchMaps(onMain.id)
    expect(mainMaps.size).toBe(4)
    expect(await pgbenchMaps(onOne.id)).toEqual(mainMaps)
    expect(await pgbenchMaps(onTwo.id)).toEqual(mainMaps)
    expect(onTwo.storedBytes).toBeLessThan(0.05 * onMain.storedBytes + 200_000) // everything was there already

    await touchPages(pg, 1)
    const inc = await backup(2)
    expect(inc.type).toBe('incremental')
    expect(inc.incrementalMode).toBe(major >= 17 ? 'server' : 'client')
    expect(inc.storedBytes).toBeLessThan(0.03 * inc.sizeBytes)

    // Extract the backup taken under load and the incremental; check every file against the server's manifest.
    const repo = await openRepository(await openFsStorage(repoDir), { passphrase })
    try {
      for (const id of [underLoad.id, inc.id]) {
        const b = await findBackup(repo, id)
        const target = join(pg.baseDir, `x-${id}`)
        // Decoded on a worker too: restore's default has none on two cores.
        const { manifest, checked, tablespaces } = await restoreAndCheck(repo, b, target, { workers: 1 })
        expect(checked).toBeGreaterThan(200)
        if (b.incrementalMode === 'server') continue
        // The server's manifest instead of the one restore wrote: pg_verifybackup then checks against the server.
        await writeFile(join(target, 'backup_manifest'), manifest)
        const plan = verifyBackupPlan(major)
        if (!plan.tool) noteSkip(`pg_verifybackup (PG ${major})`, plan.note!)
        else {
          // WAL is not extracted here: only the files are verified.
          const { stdout } = await execFileP(plan.tool, [...plan.args.filter((a) => a !== '-n'), '-n', target])
          expect(stdout).toMatch(/backup successfully verified/)
        }
        await rm(target, { recursive: true, force: true })
        for (const ts of tablespaces.values()) await rm(ts, { recursive: true, force: true })
      }
    } finally {
      await repo.close()
    }
  })
})
