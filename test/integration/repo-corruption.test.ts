// Damage is detected, named, and never returned as data: a flipped byte in a pack (blob bytes or header), a
// truncated pack, a missing pack, a damaged index object and a damaged record are each found by verify (naming the
// object) and by a read that touches them (IntegrityError naming it). The damage is done to the stored objects
// directly, through the storage, as a failing disk or a careless person would.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { initRepository, openRepository, verifyRepository, type Repository } from '../../src/repo/index.js'
import { packKey } from '../../src/repo/layout.js'
import type { Storage } from '../../src/storage/storage.js'
import {
  blobContent,
  damage,
  flipByte,
  listKeys,
  openSpec,
  readAll,
  startStorageFactory,
  type StorageFactory,
  type StorageSpec,
} from '../harness/repo-fixtures.js'

const PASSPHRASE = 'corruption test'

interface Fixture {
  spec: StorageSpec
  storage: Storage
  repo: Repository
  ids: string[]
  /** Opens a second, fresh instance (it loads the index anew). */
  reopen(): Promise<Repository>
}

describe.each([
  { driver: 'fs' as const, encrypted: false },
  { driver: 'fs' as const, encrypted: true },
  { driver: 's3' as const, encrypted: false },
])('damage on $driver (encrypted: $encrypted)', ({ driver, encrypted }) => {
  let factory: StorageFactory
  const opened: Storage[] = []
  beforeAll(async () => {
    factory = await startStorageFactory(driver)
  })
  afterAll(async () => {
    for (const s of opened) await s.close()
    await factory?.stop()
  })
  const passphrase = encrypted ? PASSPHRASE : undefined

  async function fixture(): Promise<Fixture> {
    const spec = factory.spec()
    const storage = await openSpec(spec)
    opened.push(storage)
    const repo = await initRepository(storage, {
      packTargetBytes: 256 * 1024,
      compression: { level: 1 },
      encrypt: encrypted ? { passphrase: PASSPHRASE, scrypt: { N: 1 << 12, r: 8, p: 1 } } : undefined,
    })
    const ids: string[] = []
    for (let i = 0; i < 12; i++) ids.push((await repo.putBlob('data', blobContent(3, i))).id)
    await repo.flush()
    const reopen = async () => {
      const s = await openSpec(spec)
      opened.push(s)
      return openRepository(s, { passphrase })
    }
    return { spec, storage, repo, ids, reopen }
  }

  /** A blob that is not the first in its pack, with its location. */
  function pick(f: Fixture) {
    for (const [i, id] of f.ids.entries()) {
      const loc = f.repo.locateBlob(id)!
      if (loc.offset > 0) return { i, id, loc, pack: packKey(loc.packId) }
    }
    throw new Error('no blob past the start of a pack')
  }

  function neighbours(f: Fixture, packId: string, except: string) {
    return f.ids.filter((id) => id !== except && f.repo.locateBlob(id)!.packId === packId)
  }

  it('a flipped byte inside a blob: read-data verify names the pack and blob; readBlob refuses it', async () => {
    const f = await fixture()
    const { id, loc, pack } = pick(f)
    await damage(f.storage, pack, flipByte(loc.offset + Math.floor(loc.storedLength / 2)))
    const repo = await f.reopen()
    await expect(repo.readBlob(id)).rejects.toMatchObject({
      code: 'INTEGRITY',
      message: expect.stringMatching(new RegExp(`blob '${id}' in pack '${pack}'`)),
    })
    for (const other of neighbours(f, loc.packId, id)) {
      const i = f.ids.indexOf(other)
      expect((await repo.readBlob(other)).equals(blobContent(3, i))).toBe(true)
    }
    const result = await verifyRepository(repo, { readData: true })
    expect(result.ok).toBe(false)
    expect(result.problems.map((p) => p.object)).toContain(pack)
    expect(result.problems.some((p) => p.message.includes(`blob '${id}'`))).toBe(true)
    expect(new Set(result.problems.map((p) => p.object))).toEqual(new Set([pack]))
  })

  it('a flipped byte in a pack header is named by a structure-only verify', async () => {
    const f = await fixture()
    const { pack } = pick(f)
    await damage(f.storage, pack, flipByte(-10))
    const result = await verifyRepository(await f.reopen())
    expect(result.ok).toBe(false)
    expect(result.problems).toEqual([expect.objectContaining({ object: pack, message: expect.stringContaining('header') })])
  })

  it('a truncated pack: verify names it; reading a blob in the cut-off part is an IntegrityError', async () => {
    const f = await fixture()
    const { id, loc, pack } = pick(f)
    await damage(f.storage, pack, (b) => b.subarray(0, loc.offset + 10))
    const repo = await f.reopen()
    await expect(repo.readBlob(id)).rejects.toMatchObject({
      code: 'INTEGRITY',
      message: expect.stringMatching(new RegExp(`blob '${id}' in pack '${pack}' is truncated`)),
    })
    for (const readData of [false, true]) {
      const result = await verifyRepository(repo, { readData })
      expect(result.ok).toBe(false)
      expect(new Set(result.problems.map((p) => p.object))).toEqual(new Set([pack]))
    }
  })

  it('a missing pack: verify names it; readBlob is an IntegrityError naming it', async () => {
    const f = await fixture()
    const { id, pack } = pick(f)
    await f.storage.remove(pack)
    const repo = await f.reopen()
    await expect(repo.readBlob(id)).rejects.toMatchObject({
      code: 'INTEGRITY',
      message: expect.stringContaining(`pack '${pack}' holding blob '${id}' is missing`),
    })
    const result = await verifyRepository(repo)
    expect(result.ok).toBe(false)
    expect(result.problems).toEqual([expect.objectContaining({ object: pack, message: expect.stringContaining('missing') })])
  })

  it('a damaged index object: verify names it; readBlob names it; rebuilding the index repairs the repository', async () => {
    const f = await fixture()
    const [indexKey] = await listKeys(f.storage, 'index/')
    expect(indexKey).toBeDefined()
    await damage(f.storage, indexKey!, flipByte(40))
    const repo = await f.reopen()
    expect(repo.damagedIndexObjects.map((d) => d.object)).toEqual([indexKey])
    await expect(repo.readBlob(f.ids[0]!)).rejects.toMatchObject({
      code: 'INTEGRITY',
      message: expect.stringContaining(`'${indexKey}'`),
    })
    const result = await verifyRepository(repo)
    expect(result.ok).toBe(false)
    expect(result.problems.map((p) => p.object)).toContain(indexKey)

    const rebuilt = await repo.rebuildIndex()
    expect(rebuilt.problems).toEqual([])
    expect(rebuilt.indexObjectsRemoved).toEqual([indexKey!.slice('index/'.length)])
    expect(rebuilt.blobs).toBe(12)
    const fresh = await f.reopen()
    expect(fresh.damagedIndexObjects).toEqual([])
    expect((await verifyRepository(fresh, { readData: true })).problems).toEqual([])
    for (const [i, id] of f.ids.entries()) expect((await fresh.readBlob(id)).equals(blobContent(3, i))).toBe(true)
  })

  it('a damaged record: readRecord refuses it and verify names it', async () => {
    const f = await fixture()
    await f.repo.writeRecord('backup', 'c/1', { label: 'nightly', files: 3 }, { blobRefs: [f.ids[0]!] })
    const key = 'records/backup/c/1'
    await damage(f.storage, key, flipByte(-3))
    const repo = await f.reopen()
    await expect(repo.readRecord('backup', 'c/1')).rejects.toMatchObject({
      code: 'INTEGRITY',
      message: expect.stringContaining(`'${key}'`),
    })
    const result = await verifyRepository(repo)
    expect(result.problems).toEqual([expect.objectContaining({ object: key })])
  })

  it('a record moved to another key is refused (it names its own key)', async () => {
    const f = await fixture()
    await f.repo.writeRecord('backup', 'c/1', { label: 'first' })
    const bytes = await readAll(f.storage, 'records/backup/c/1')
    await f.storage.write('records/backup/c/2', bytes)
    await expect((await f.reopen()).readRecord('backup', 'c/2')).rejects.toMatchObject({ code: 'INTEGRITY' })
  })

  it('verify reports blobs referenced from outside that are not indexed', async () => {
    const f = await fixture()
    const missing = 'ee'.repeat(32)
    const result = await verifyRepository(f.repo, { referencedBlobs: [f.ids[0]!, missing] })
    expect(result.problems).toEqual([{ object: `blob ${missing}`, message: expect.stringContaining(missing) }])
    expect(result.stats.referencedBlobs).toBe(2)
  })
})
