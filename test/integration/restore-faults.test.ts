// Restores that must fail, and fail safely: a damaged pack, a missing pack, a wrong passphrase, a non-empty target,
// and a restore killed with SIGKILL half-way. Each exits non-zero naming what is wrong; a directory left behind has
// no global/pg_control, so the server refuses to start on it; and `--delta` finishes the interrupted one. And one
// that need not fail: a damaged file map that the restore has no need to read.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readdir, writeFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { takeBackup, type BackupResult } from '../../src/backup/backup.js'
import { findBackup } from '../../src/repo/backup-record.js'
import { FileListReader } from '../../src/repo/file-list.js'
import { fileMapOf, inlineFileMapOf } from '../../src/repo/inline-file-map.js'
import { decodeFileMap } from '../../src/repo/file-map.js'
import { packKey } from '../../src/repo/layout.js'
import { openRepository } from '../../src/repo/index.js'
import { RESTORE_MARKER } from '../../src/restore/target-directory.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { runBin, runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { type BackedUpCluster, backedUpCluster } from '../harness/backed-up-cluster.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'
import { damage, flipByte } from '../harness/repo-fixtures.js'
import { cp, rm } from 'node:fs/promises'
import { ensureBuilt } from './wal-helpers.js'
import { startRestored, stopRestored, tableChecksums, waitForPromotion } from './restore-fixture.js'

const MAJOR = 15
const ROOT = join(import.meta.dirname, '..', '..')

beforeAll(() => ensureBuilt(), 120_000)

describe('restore faults', () => {
  let pg: Cluster
  let r: TestRepo
  let b: BackupResult
  let want: Record<string, string>
  let fixture: BackedUpCluster
  beforeAll(async () => {
    fixture = await backedUpCluster({ major: MAJOR, pgbenchScale: 4 })
    ;({ pg, r, want } = fixture)
    b = fixture.backup!
  })
  afterAll(async () => {
    await fixture?.destroy()
  })

  const restoreArgs = (repoDir: string, target: string) => [
    'restore',
    '--repo',
    repoDir,
    '--pgdata',
    target,
    '--tablespace-mapping',
    `${pg.tablespaceDirs[0]}=${target}-ts`,
    '--target-immediate',
    '--target-action',
    'promote',
  ]

  /** A copy of the repository to damage. */
  async function repoCopy(name: string): Promise<string> {
    const dir = join(pg.baseDir, name)
    await cp(r.dir, dir, { recursive: true })
    return dir
  }

  /** Where the data of a file lives: for a relation file, the blob holding its middle; or where its file map lives. */
  async function blobOf(repoDir: string, path: string, of: 'data' | 'map' = 'data'): Promise<{ packId: string; offset: number; storedLength: number }> {
    const repo = await openRepository(await openFsStorage(repoDir))
    try {
      const rec = await findBackup(repo, b.id)
      const entry = (await new FileListReader(repo, rec.files).get(path))!
      const extents = entry.fileMap ? (await fileMapOf(entry, entry.fileMap, (id) => repo.readBlob(id))).extents : entry.extents!
      const x = extents.find((e) => e.blob !== null && e.offset + e.length > entry.sizeBytes / 2)!
      if (of === 'map' && typeof entry.fileMap !== 'string') throw new Error(`'${path}' has no file map blob`)
      const loc = repo.locateBlob(of === 'map' ? (entry.fileMap as string) : x.blob!)!
      return { packId: loc.packId, offset: loc.offset, storedLength: loc.storedLength }
    } finally {
      await repo.close()
    }
  }

  /** The directory a failed restore left: marked incomplete, without pg_control, and no server starts on it. */
  async function expectUnstartable(target: string, why = /pg_control|postgresql\.conf/): Promise<void> {
    expect(existsSync(join(target, RESTORE_MARKER))).toBe(true)
    expect(existsSync(join(target, 'global', 'pg_control'))).toBe(false)
    expect(existsSync(join(target, 'backup_manifest'))).toBe(false)
    expect(existsSync(join(target, 'recovery.signal'))).toBe(false)
    // Whatever else is missing, the server refuses: pg_control is always the last file written.
    await expect(startRestored(MAJOR, target, pg.baseDir, [`${target}-ts`], { repoDir: r.dir })).rejects.toThrow(why)
  }

  it('a damaged blob (the last one read): exits with the integrity status naming the file and the backup; no server starts', async () => {
    // Damage pg_control's own bytes: the restore then gets through every data file and the WAL, so the directory
    // it leaves lacks little but pg_control, which is exactly what must keep a server from starting on it.
    const dir = await repoCopy('repo-damaged')
    const blob = await blobOf(dir, 'global/pg_control')
    const storage = await openFsStorage(dir)
    await damage(storage, packKey(blob.packId), flipByte(blob.offset + Math.floor(blob.storedLength / 2)))
    await storage.close()
    const target = join(pg.baseDir, 'target-damaged')
    // The installed binary: blobs are decoded in its worker threads, whose failure must surface the same way.
    const res = await runBin(restoreArgs(dir, target))
    expect(res.code, res.stderr).toBe(30)
    expect(res.stderr).toContain(`cannot restore 'global/pg_control' of backup ${b.id}`)
    expect(res.stderr).toMatch(/warning: the restore into .* did not finish: the directory is incomplete and will not start/)
    expect(existsSync(join(target, 'postgresql.conf'))).toBe(true)
    expect((await readdir(join(target, 'pg_wal'))).filter((n) => /^[0-9A-F]{24}$/.test(n)).length).toBeGreaterThan(0)
    await expectUnstartable(target, /could not open file.*global\/pg_control/)
  })

  it('a missing pack: the same', async () => {
    const dir = await repoCopy('repo-missing')
    const [{ path }] = await pg.sql<{ path: string }>(`select pg_relation_filepath('pgbench_accounts') as path`)
    const blob = await blobOf(dir, path)
    await rm(join(dir, packKey(blob.packId)))
    const target = join(pg.baseDir, 'target-missing')
    const res = await runMain(restoreArgs(dir, target))
    expect(res.code, res.stderr).toBe(30)
    expect(res.stderr).toMatch(new RegExp(`cannot restore '[^']+' of backup ${b.id}: pack '${packKey(blob.packId)}' holding blob '[0-9a-f]{64}' is missing`))
    // The restore stops at the first file it cannot write: depending on how far the other jobs got, the server
    // misses pg_control, postgresql.conf or even PG_VERSION ("not a database cluster directory").
    await expectUnstartable(target, /pg_control|postgresql\.conf|not a database cluster directory/)
  })

  it("a small relation file's map is not read, its entry lists the extents; a larger file's map is", async () => {
    // pg_attribute: tens of pages, a map blob of its own; pgbench_branches: one page, its map inline.
    const [{ small, tiny, large }] = await pg.sql<{ small: string; tiny: string; large: string }>(
      `select pg_relation_filepath('pg_attribute') as small, pg_relation_filepath('pgbench_branches') as tiny,
        pg_relation_filepath('pgbench_accounts') as large`,
    )
    const repo = await openRepository(await openFsStorage(r.dir))
    try {
      const list = new FileListReader(repo, (await findBackup(repo, b.id)).files)
      const [s, t, l] = [(await list.get(small))!, (await list.get(tiny))!, (await list.get(large))!]
      expect(t.sizeBytes).toBe(8192)
      if (typeof t.fileMap !== 'object') throw new Error(`'${tiny}' has no inline file map: ${t.fileMap}`)
      expect(inlineFileMapOf(t, t.fileMap).pageHashes.length).toBe(8)
      expect(s.sizeBytes).toBeLessThanOrEqual(1 << 20)
      if (typeof s.fileMap !== 'string') throw new Error(`'${small}' has no file map blob`)
      expect(s.extents).toEqual(decodeFileMap(await repo.readBlob(s.fileMap)).extents)
      expect(l.sizeBytes).toBeGreaterThan(1 << 20)
      expect(l.fileMap).toBeDefined()
      expect(l.extents).toBeUndefined()
    } finally {
      await repo.close()
    }
    const dir = await repoCopy('repo-maps')
    const storage = await openFsStorage(dir)
    const smallMap = await blobOf(dir, small, 'map')
    await damage(storage, packKey(smallMap.packId), flipByte(smallMap.offset + Math.floor(smallMap.storedLength / 2)))
    const target = join(pg.baseDir, 'target-small-map')
    const ok = await runMain(restoreArgs(dir, target))
    expect(ok.code, ok.stderr).toBe(0)
    const c = await startRestored(MAJOR, target, pg.baseDir, [`${target}-ts`], { repoDir: dir })
    try {
      await waitForPromotion(c)
      expect(await tableChecksums(c)).toEqual(want)
    } finally {
      await stopRestored(c)
    }
    const largeMap = await blobOf(dir, large, 'map')
    await damage(storage, packKey(largeMap.packId), flipByte(largeMap.offset + Math.floor(largeMap.storedLength / 2)))
    await storage.close()
    const res = await runMain(restoreArgs(dir, join(pg.baseDir, 'target-large-map')))
    expect(res.code, res.stderr).toBe(30)
    expect(res.stderr).toContain(`cannot restore '${large}' of backup ${b.id}`)
  })

  it('a wrong passphrase: refused before anything is written', async () => {
    const enc = await freshFsRepo({ passphrase: 'the right one' })
    try {
      await takeBackup({ server: { conninfo: pg.url() }, repo: enc.repo })
      const target = join(pg.baseDir, 'target-passphrase')
      const res = await runMain(restoreArgs(enc.dir, target), { PGKEEP_PASSPHRASE: 'the wrong one' })
      expect(res.code, res.stderr).toBe(23)
      expect(res.stderr).toMatch(/wrong passphrase for repository/)
      expect(existsSync(target)).toBe(false)
      // With the right one it works, and the passphrase is nowhere in the directory.
      const ok = await runMain(restoreArgs(enc.dir, target), { PGKEEP_PASSPHRASE: 'the right one' })
      expect(ok.code, ok.stderr).toBe(0)
      expect(ok.stdout).toMatch(/needs PGKEEP_PASSPHRASE or PGKEEP_PASSPHRASE_FILE/)
      // Restored as root: the files are root's, and the output says how to hand them over.
      if (process.getuid?.() === 0) expect(ok.stdout).toContain(`chown -R postgres:postgres '${target}' '${target}-ts'`)
      const grep = spawnSync('grep', ['-rl', '--binary-files=text', 'the right one', target, `${target}-ts`], { encoding: 'utf8' })
      expect(grep.status, `grep found the passphrase in: ${grep.stdout}`).toBe(1)
    } finally {
      await enc.close()
    }
  })

  it('a non-empty target or tablespace location: refused, nothing touched', async () => {
    const target = join(pg.baseDir, 'target-nonempty')
    await mkdir(target)
    await writeFile(join(target, 'precious'), 'keep me')
    const res = await runMain(restoreArgs(r.dir, target))
    expect(res.code, res.stderr).toBe(2)
    expect(res.stderr).toContain(`data directory '${target}' exists and is not empty`)
    expect(res.stderr).toMatch(/HINT: .*--delta/)
    expect(await readdir(target)).toEqual(['precious'])

    const target2 = join(pg.baseDir, 'target-tsbusy')
    const res2 = await runMain(['restore', '--repo', r.dir, '--pgdata', target2]) // tablespace unmapped: the live source's
    expect(res2.code, res2.stderr).toBe(2)
    expect(res2.stderr).toContain(`the location of tablespace`)
    expect(res2.stderr).toMatch(new RegExp(`'${pg.tablespaceDirs[0]}' of the server running with pid \\d+`))
    expect(res2.stderr).not.toMatch(/HINT: .*--delta/)
    expect(existsSync(target2)).toBe(false)

    // A non-empty location that no server uses is refused too, with a hint that leads to a new directory.
    const busyTs = join(pg.baseDir, 'ts-not-empty')
    await mkdir(busyTs)
    await writeFile(join(busyTs, 'precious'), 'keep me')
    const res2b = await runMain(['restore', '--repo', r.dir, '--pgdata', target2, '--tablespace-mapping', `${pg.tablespaceDirs[0]}=${busyTs}`])
    expect(res2b.code, res2b.stderr).toBe(2)
    expect(res2b.stderr).toContain(`the location of tablespace`)
    expect(res2b.stderr).toContain(`'${busyTs}' is not empty`)
    expect(res2b.stderr).toMatch(/HINT: .*--tablespace-mapping \d+=/)
    expect(await readdir(busyTs)).toEqual(['precious'])
    expect(existsSync(target2)).toBe(false)

    // --delta over a directory of another cluster is refused too.
    const other = await startCluster({ major: MAJOR, noStart: true, tablespaces: 0 })
    try {
      const res3 = await runMain([
        'restore',
        '--repo',
        r.dir,
        '--pgdata',
        other.dataDir,
        '--delta',
        '--tablespace-mapping',
        `${pg.tablespaceDirs[0]}=${other.baseDir}/ts`,
      ])
      expect(res3.code, res3.stderr).toBe(2)
      expect(res3.stderr).toMatch(/holds cluster \d+, but backup \S+ is of cluster \d+/)
    } finally {
      await other.destroy()
    }
  })

  it('killed with SIGKILL half-way: the directory does not start; --delta finishes it', async () => {
    const target = join(pg.baseDir, 'target-killed')
    const child: ChildProcess = spawn(process.execPath, [join(ROOT, 'bin', 'pgkeep.js'), ...restoreArgs(r.dir, target), '--jobs', '1'], { stdio: 'ignore' })
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)))
    // Kill it once it is writing database files.
    const until = Date.now() + 30_000
    let killed = false
    while (Date.now() < until) {
      const files = await readdir(join(target, 'base')).catch(() => [] as string[])
      if (files.length > 0 && existsSync(join(target, RESTORE_MARKER))) {
        child.kill('SIGKILL')
        killed = true
        break
      }
      if (child.exitCode !== null) break
      await new Promise((res) => setTimeout(res, 5))
    }
    await exited
    expect(killed, 'the restore finished before it could be killed').toBe(true)
    await expectUnstartable(target)

    // Finished by the installed binary: its worker threads hash the pages already there.
    const res = await runBin([...restoreArgs(r.dir, target), '--delta', '--json'])
    expect(res.code, res.stderr).toBe(0)
    const out = JSON.parse(res.stdout)
    expect(out.filesUnchanged).toBeGreaterThan(0)
    expect(out.bytesWritten).toBeLessThan(out.sizeBytes)
    expect(existsSync(join(target, RESTORE_MARKER))).toBe(false)
    expect((await stat(join(target, 'global', 'pg_control'))).size).toBe(8192)
    const c = await startRestored(MAJOR, target, pg.baseDir, [`${target}-ts`], { repoDir: r.dir })
    try {
      await waitForPromotion(c)
      expect(await tableChecksums(c)).toEqual(want)
    } finally {
      await stopRestored(c)
    }
  })
})
