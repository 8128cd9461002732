// pgkeep as a library, the way a user gets it: the package packed (`npm pack`) and installed into a project of its
// own, imported by its name. Its exports are the documented ones, and the complete program of docs/library.md, run
// as written there, backs up a real server, lists the backup and restores it; the restored directory starts and
// holds the source's tables (PostgreSQL 15 and 18).

import { execFile } from 'node:child_process'
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'
import { addOwnTables, startRestored, stopRestored, tableChecksums } from './restore-fixture.js'
import { ensureBuilt } from './wal-helpers.js'

const ROOT = join(import.meta.dirname, '..', '..')
const run = promisify(execFile)
let project: string

beforeAll(async () => {
  await ensureBuilt()
  await mkdir(join(ROOT, '.tmp'), { recursive: true })
  project = await mkdtemp(join(ROOT, '.tmp', 'library-user-'))
  // The package as it would be published (dist/ is built by `npm test` first; no second build here).
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', project], { cwd: ROOT })
  const tarball = (JSON.parse(stdout) as { filename: string }[])[0]!.filename
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'library-user', private: true, type: 'module' }))
  // A real install from the registry (npm's cache serves what it holds). Install scripts are skipped: zstd-napi
  // would compile its addon again (~25 s); the one this checkout built is the same version, copied over.
  await run('npm', ['install', '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', join(project, tarball)], { cwd: project })
  await cp(join(ROOT, 'node_modules', 'zstd-napi', 'build'), join(project, 'node_modules', 'zstd-napi', 'build'), { recursive: true })
}, 240_000)

afterAll(async () => {
  if (project) await rm(project, { recursive: true, force: true })
})

/** The first ```js block of docs/library.md: the complete program. */
async function documentedProgram(): Promise<string> {
  const doc = await readFile(join(ROOT, 'docs', 'library.md'), 'utf8')
  const m = /```js\n([\s\S]*?)```/.exec(doc)
  if (!m) throw new Error('docs/library.md has no js block')
  return m[1]!
}

it('imports by the package name; every export is documented, every documented operation exported', async () => {
  const { stdout } = await run(
    process.execPath,
    ['--input-type=module', '-e', "const m = await import('pgkeep'); console.log(JSON.stringify(Object.keys(m)))"],
    {
      cwd: project,
    },
  )
  const exported = (JSON.parse(stdout) as string[]).sort()
  const doc = await readFile(join(ROOT, 'docs', 'library.md'), 'utf8')
  const documented = new Set([...doc.matchAll(/`([A-Za-z_]+)[`(]/g)].map((m) => m[1]!))
  expect(exported.filter((name) => !documented.has(name))).toEqual([])
  for (const name of [
    'openStorage',
    'initRepository',
    'openRepository',
    'checkServer',
    'takeBackup',
    'restoreBackup',
    'WalStreamer',
    'pushWalFile',
    'fetchWalFile',
    'listBackups',
    'verifyRepository',
    'hasErrorCode',
  ]) {
    expect(exported, name).toContain(name)
  }
  // Deep imports are closed: only the entry point is public.
  const deep = await run(process.execPath, ['--input-type=module', '-e', "await import('pgkeep/dist/src/backup/backup.js')"], { cwd: project }).then(
    () => 'imported',
    (err: { stderr: string }) => err.stderr,
  )
  expect(deep).toMatch(/ERR_PACKAGE_PATH_NOT_EXPORTED/)
})

for (const major of [15, 18] as const) {
  describe(`the documented program against PostgreSQL ${major}`, () => {
    let pg: Cluster
    let r: TestRepo
    beforeAll(async () => {
      pg = await startCluster({ major })
      r = await freshFsRepo()
      await r.repo.close()
      await addOwnTables(pg)
    })
    afterAll(async () => {
      await pg?.destroy()
      await r?.close()
    })

    it('backs up, lists and restores; the restored server holds the source tables', async () => {
      const program = join(project, `backup-and-restore-${major}.mjs`)
      await writeFile(program, await documentedProgram())
      const want = await tableChecksums(pg)
      const target = join(pg.baseDir, 'restored')
      const { stdout } = await run(process.execPath, [program, pg.url(), r.dir, target], { cwd: project, env: { PATH: process.env.PATH } })
      const id = /^backup (\S+): full/m.exec(stdout)?.[1]
      expect(id, stdout).toBeDefined()
      expect(stdout).toMatch(new RegExp(`^${id} full `, 'm'))
      expect(stdout).toMatch(/^restored \d+ files into /m)
      expect((await readdir(target)).sort()).toContain('PG_VERSION')
      const tablespaceDirs = (await readdir(join(target, 'pg_tblspc'))).map((oid) => `${target}-ts-${oid}`)
      expect(tablespaceDirs).toHaveLength(1)
      const restored = await startRestored(major, target, pg.baseDir, tablespaceDirs)
      try {
        expect(await tableChecksums(restored)).toEqual(want)
      } finally {
        await stopRestored(restored)
      }
    })
  })
}
