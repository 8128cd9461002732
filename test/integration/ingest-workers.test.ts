// Backups whose hashing, CRC-32C and encoding run on ingest worker threads, against real servers: PG 15 (client-side
// incremental) and PG 17 (server-side INCREMENTAL files), plain and encrypted repositories. Every backup passes the
// engine's own check of each file's CRC-32C against the server's manifest (CRCs joined from per-window CRCs);
// extracted backups pass pg_verifybackup where it fits; the pgbench tables' file maps equal those of a backup taken
// on the main thread only (same repository, so equal maps have equal ids).

import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { configureIngestWorkers, DEFAULT_MIN_POOLED_FILE_BYTES, DEFAULT_WARMUP_BYTES } from '../../src/backup/window-pool.js'
import { crc32c, crc32cHexLE } from '../../src/pg/crc32c.js'
import { parseServerManifest } from '../../src/pg/backup-manifest.js'
import { findBackup } from '../../src/repo/backup-record.js'
import { FileListReader } from '../../src/repo/file-list.js'
import { openRepository } from '../../src/repo/repository.js'
import { extractBackup } from '../../src/restore/extract.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { loadPgbench, startPgbench, touchPages } from '../harness/load.js'
import { execFileP, noteSkip, verifyBackupPlan } from '../harness/reference-tools.js'

const ROOT = join(import.meta.dirname, '..', '..')
const PASSPHRASE = 'ingest workers test'

/** Compiles the worker module and its imports (the suite runs from TypeScript sources; a worker needs JavaScript). */
async function compileWorker(): Promise<{ url: URL; dir: string }> {
  await mkdir(join(ROOT, 'node_modules', '.cache'), { recursive: true })
  const dir = await mkdtemp(join(ROOT, 'node_modules', '.cache', 'pgkeep-window-worker-'))
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
  const args = ['--outDir', dir, '--rootDir', ROOT, '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022']
  await promisify(execFile)(process.execPath, [tsc, ...args, '--skipLibCheck', '--strict', '--types', 'node', join(ROOT, 'src/backup/window-worker.ts')])
  await writeFile(join(dir, 'package.json'), '{"type":"module"}\n')
  return { url: pathToFileURL(join(dir, 'src', 'backup', 'window-worker.js')), dir }
}

interface Result {
  id: string
  type: string
  incrementalMode: string | null
  sizeBytes: number
  storedBytes: number
}

let worker: { url: URL; dir: string }
beforeAll(async () => {
  worker = await compileWorker()
}, 120_000)
afterAll(async () => {
  configureIngestWorkers({ workers: 'auto', minPooledFileBytes: DEFAULT_MIN_POOLED_FILE_BYTES, warmupBytes: DEFAULT_WARMUP_BYTES })
  if (worker) await rm(worker.dir, { recursive: true, force: true })
})

describe.each([
  { major: 15 as const, passphrase: undefined },
  { major: 17 as const, passphrase: PASSPHRASE },
])('backups with ingest workers on PG $major', ({ major, passphrase }) => {
  let pg: Cluster
  let repoDir: string
  const env = passphrase ? { PGKEEP_PASSPHRASE: passphrase } : {}

  async function backup(workers: number, extra: string[] = []): Promise<Result> {
    // Every file through the pool from the start (the defaults keep small files and small backups on the main thread).
    configureIngestWorkers({ workers, minPooledFileBytes: 0, warmupBytes: 0, workerUrl: worker.url })
    const res = await runMain(['backup', '-d', pg.url(), '--repo', repoDir, '--init', '--json', ...extra], env)
    expect(res.code, res.stderr).toBe(0)
    return JSON.parse(res.stdout)
  }

  /** File map blob ids of the pgbench tables' and index's files in backup `id`. */
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
        out.set(p, e!.fileMap!)
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
        const ts = `${target}_ts`
        await extractBackup(repo, b, target, { tablespaceLocations: new Map(b.tablespaces.map((t) => [t.oid, ts])) })
        const parts: Buffer[] = []
        for (const blob of b.serverManifest) parts.push(await repo.readBlob(blob))
        const manifest = Buffer.concat(parts)
        let checked = 0
        for (const f of parseServerManifest(manifest, { verifyChecksum: true }).files) {
          if (/(^|\/)INCREMENTAL\./.test(f.path) || f.path === 'backup_label') continue
          expect(crc32cHexLE(crc32c(await readFile(join(target, f.path)))), f.path).toBe(f.checksum)
          checked++
        }
        expect(checked).toBeGreaterThan(200)
        if (b.incrementalMode === 'server') continue
        await writeFile(join(target, 'backup_manifest'), manifest)
        const plan = verifyBackupPlan(major)
        if (!plan.tool) noteSkip(`pg_verifybackup (PG ${major})`, plan.note!)
        else {
          // WAL is not extracted here: only the files are verified.
          const { stdout } = await execFileP(plan.tool, [...plan.args.filter((a) => a !== '-n'), '-n', target])
          expect(stdout).toMatch(/backup successfully verified/)
        }
        await rm(target, { recursive: true, force: true })
        await rm(ts, { recursive: true, force: true })
      }
    } finally {
      await repo.close()
    }
  })
})
