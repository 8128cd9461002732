// `pgkeep gc` on real backups of a PostgreSQL 17 cluster, after `pgkeep expire --keep-last 1` removed two of three:
// on a file system, the real binary is SIGKILLed at several phases and the repository verifies (`pgkeep verify
// --read-data`) after every kill; a last run finishes the job, the space is returned (measured on the storage, not
// taken from gc's report), and the remaining backup restores, starts, and has the source's tables. On S3
// (encrypted), one run does the same.

import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { takeBackup } from '../../src/backup/backup.js'
import { type BackupRecord, findBackup, initRepository, listBackups, openRepository } from '../../src/repo/index.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { loadPgbench, touchPages } from '../harness/load.js'
import { openSpec, specLocation, startStorageFactory, type StorageFactory, type StorageSpec } from '../harness/repo-fixtures.js'
import { restoreAndCheck } from '../harness/restore-check.js'
import { addOwnTables, startRestored, stopRestored, tableChecksums } from './restore-fixture.js'
import { ensureBuilt, spawnPgkeep } from './wal-helpers.js'

const MAJOR = 17
const PASSPHRASE = 'gc on s3'

/** Bytes of every object of the repository, and of its packs, as the storage lists them. */
async function measure(spec: StorageSpec): Promise<{ total: number; packs: number; packCount: number }> {
  const storage = await openSpec(spec)
  let total = 0
  let packs = 0
  let packCount = 0
  for await (const o of storage.list('')) {
    total += o.sizeBytes
    if (o.key.startsWith('packs/')) {
      packs += o.sizeBytes
      packCount++
    }
  }
  await storage.close()
  return { total, packs, packCount }
}

async function verifyCli(spec: StorageSpec, passphrase?: string): Promise<void> {
  const { url, env } = specLocation(spec)
  const r = await runMain(['verify', '--repo', url, '--read-data', '--json'], { ...env, ...(passphrase ? { PGKEEP_PASSPHRASE: passphrase } : {}) })
  expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0)
  expect(JSON.parse(r.stdout).ok).toBe(true)
}

describe(`gc after expire (PG ${MAJOR})`, () => {
  let pg: Cluster
  const factories: StorageFactory[] = []
  beforeAll(async () => {
    ensureBuilt()
    pg = await startCluster({ major: MAJOR })
    await loadPgbench(pg, 1)
    await addOwnTables(pg)
  })
  afterAll(async () => {
    await pg?.destroy()
    for (const f of factories) await f.stop()
  })

  /**
   * Three backups with changes between them; the first two also hold a table of hard-to-compress rows that is
   * dropped before the third, and are removed. Returns the third and the tables at its time.
   */
  async function backupsWithGarbage(spec: StorageSpec, passphrase?: string): Promise<{ kept: BackupRecord; want: Record<string, string> }> {
    const repo = await initRepository(await openSpec(spec), { packTargetBytes: 256 << 10, ...(passphrase ? { encrypt: { passphrase } } : {}) })
    await pg.sql('create table junk as select g, md5(random()::text) || md5(random()::text) as v from generate_series(1, 80000) g')
    const ids: string[] = []
    for (let i = 0; i < 3; i++) {
      if (i > 0) await touchPages(pg, 40)
      if (i === 2) await pg.sql('drop table junk')
      ids.push((await takeBackup({ server: { conninfo: pg.url() }, repo })).id)
    }
    const want = await tableChecksums(pg)
    const all = await listBackups(repo)
    expect(all.map((b) => b.id)).toEqual(ids)
    await repo.close()
    // The first two go by a retention policy, through the real command: records only, the space stays until gc.
    const { url, env } = specLocation(spec)
    const expired = await runMain(['expire', '--repo', url, '--keep-last', '1', '--json'], { ...env, ...(passphrase ? { PGKEEP_PASSPHRASE: passphrase } : {}) })
    expect(expired.code, expired.stderr).toBe(0)
    expect(JSON.parse(expired.stdout).clusters[0].removedBackups).toBe(2)
    const check = await openRepository(await openSpec(spec), { passphrase })
    try {
      expect((await listBackups(check)).map((b) => b.id)).toEqual([ids[2]])
      return { kept: await findBackup(check, ids[2]!), want }
    } finally {
      await check.close()
    }
  }

  async function restoreAndCompare(spec: StorageSpec, b: BackupRecord, want: Record<string, string>, name: string, passphrase?: string) {
    const repo = await openRepository(await openSpec(spec), { passphrase })
    const dir = join(pg.baseDir, name)
    try {
      const r = await restoreAndCheck(repo, b, dir)
      expect(r.checked).toBeGreaterThan(100)
    } finally {
      await repo.close()
    }
    const c = await startRestored(MAJOR, dir, pg.baseDir, [`${dir}_ts`])
    try {
      expect(await tableChecksums(c)).toEqual(want)
    } finally {
      await stopRestored(c)
    }
  }

  it('on a file system, survives SIGKILL at several phases, then returns the space; the kept backup restores', async () => {
    const factory = await startStorageFactory('fs')
    factories.push(factory)
    const spec = factory.spec()
    const { url } = specLocation(spec)
    const { kept, want } = await backupsWithGarbage(spec)
    const before = await measure(spec)

    // A dry run changes nothing.
    const dry = await runMain(['gc', '--repo', url, '--dry-run', '--grace', '0', '--json'])
    expect(dry.code, dry.stderr).toBe(0)
    expect(JSON.parse(dry.stdout).freeableBytes).toBeGreaterThan(0)
    expect(await measure(spec)).toEqual(before)

    // The real binary, killed as it enters each of these phases (each run starts over from what the last left).
    const reached: string[] = []
    for (const phase of ['mark', 'repack', 'condemn', 'compact', 'delete']) {
      const p = spawnPgkeep(['gc', '--repo', url, '--grace', '0', '--progress'])
      const hit = await p
        .waitFor(new RegExp(`pgkeep: gc: ${phase}\\b`), 120_000)
        .then(() => true)
        .catch(() => false)
      p.kill('SIGKILL')
      const code = await p.exited
      if (hit) reached.push(phase)
      else expect(code, p.output()).toBe(0) // finished before that phase: nothing left for it to do
      await verifyCli(spec)
    }
    console.log(`gc killed in phases: ${reached.join(', ')}`)
    expect(reached.length).toBeGreaterThanOrEqual(3)

    const last = await runMain(['gc', '--repo', url, '--grace', '0', '--json'])
    expect(last.code, last.stderr).toBe(0)
    const result = JSON.parse(last.stdout)
    expect(result.pendingPacks).toBe(0)
    const after = await measure(spec)
    console.log(
      `fs: ${before.packCount} packs, ${before.packs} bytes before; ${after.packCount} packs, ${after.packs} bytes after; index objects ${result.indexObjectsBefore} -> ${result.indexObjectsAfter}`,
    )
    // Two of three backups removed, each changing 40% of pgbench_accounts: a good part of the bytes was theirs.
    expect(after.packs).toBeLessThan(before.packs * 0.85)
    await verifyCli(spec)
    await restoreAndCompare(spec, kept, want, 'restored-fs')
    // Nothing more to do.
    const again = JSON.parse((await runMain(['gc', '--repo', url, '--grace', '0', '--json'])).stdout)
    expect(again.packsDeleted + again.packsCondemned + again.packsRepacked).toBe(0)
  })

  it('on S3 (encrypted), returns the space in one run; the kept backup restores', async () => {
    const factory = await startStorageFactory('s3')
    factories.push(factory)
    const spec = factory.spec()
    const { url, env } = specLocation(spec)
    const { kept, want } = await backupsWithGarbage(spec, PASSPHRASE)
    const before = await measure(spec)
    const r = await runMain(['gc', '--repo', url, '--grace', '0', '--json'], { ...env, PGKEEP_PASSPHRASE: PASSPHRASE })
    expect(r.code, r.stderr).toBe(0)
    const result = JSON.parse(r.stdout)
    expect(result.packsDeleted).toBeGreaterThan(0)
    const after = await measure(spec)
    console.log(`s3: ${before.packCount} packs, ${before.packs} bytes before; ${after.packCount} packs, ${after.packs} bytes after`)
    expect(after.packs).toBeLessThan(before.packs * 0.85)
    await verifyCli(spec, PASSPHRASE)
    await restoreAndCompare(spec, kept, want, 'restored-s3', PASSPHRASE)
  })
})
