// Repository round trips on every driver: plain, compressed and encrypted blobs come back byte for byte; ids are
// SHA-256 of the content in plain repositories (an independent fact) and keyed in encrypted ones; equal content is
// stored once within a session and across instances; records round-trip and are immutable.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'

import { initRepository, openRepository, verifyRepository, type InitRepositoryOptions } from '../../src/repo/index.js'
import type { Storage } from '../../src/storage/storage.js'
import { blobContent, listKeys, openSpec, readAll, sha256Hex, startStorageFactory, type StorageFactory } from '../harness/repo-fixtures.js'

const FAST_SCRYPT = { N: 1 << 12, r: 8, p: 1 }
const PASSPHRASE = 'correct horse battery staple'

const variants: { name: string; init: InitRepositoryOptions; passphrase?: string }[] = [
  { name: 'plain, uncompressed', init: { compression: 'none', packTargetBytes: 256 * 1024 } },
  { name: 'plain, zstd 3', init: { compression: { level: 3 }, packTargetBytes: 256 * 1024 } },
  {
    name: 'encrypted, zstd 1',
    init: { compression: { level: 1 }, packTargetBytes: 256 * 1024, encrypt: { passphrase: PASSPHRASE, scrypt: FAST_SCRYPT } },
    passphrase: PASSPHRASE,
  },
]

async function packBytes(storage: Storage): Promise<number> {
  let total = 0
  for await (const o of storage.list('packs/')) total += o.sizeBytes
  return total
}

describe.each(['fs', 's3'] as const)('repository round trips on %s', (driver) => {
  let factory: StorageFactory
  beforeAll(async () => {
    factory = await startStorageFactory(driver)
  })
  afterAll(async () => {
    await factory?.stop()
  })

  describe.each(variants)('$name', ({ init, passphrase }) => {
    it('stores blobs and reads them back from a fresh instance, byte for byte', async () => {
      const spec = factory.spec()
      const storage = await openSpec(spec)
      const repo = await initRepository(storage, init)
      const contents = [
        Buffer.alloc(0),
        Buffer.from('x'),
        randomBytes(100 * 1024), // incompressible
        Buffer.alloc(1024 * 1024, 'pgbench filler '), // very compressible
        ...Array.from({ length: 20 }, (_, i) => blobContent(1, i)),
      ]
      const ids: string[] = []
      for (const [i, c] of contents.entries()) {
        const r = await repo.putBlob(i % 3 === 0 ? 'meta' : 'data', c)
        expect(r.stored).toBe(true)
        ids.push(r.id)
      }
      // Readable before flush too (from the session's own buffers).
      expect((await repo.readBlob(ids[3]!)).equals(contents[3]!)).toBe(true)
      await repo.flush()
      await repo.close()

      const storage2 = await openSpec(spec)
      const again = await openRepository(storage2, { passphrase })
      for (const [i, c] of contents.entries()) {
        expect((await again.readBlob(ids[i]!)).equals(c)).toBe(true)
      }
      if (init.encrypt) {
        // A keyed id: equal content must not be recognisable by its plain SHA-256.
        expect(ids.every((id, i) => id !== sha256Hex(contents[i]!))).toBe(true)
      } else {
        expect(ids).toEqual(contents.map(sha256Hex))
      }
      const plainBytes = contents.reduce((n, c) => n + c.length, 0)
      const stored = await packBytes(storage2)
      if (init.compression === 'none') expect(stored).toBeGreaterThan(plainBytes)
      else expect(stored).toBeLessThan(plainBytes * 0.75)
      expect((await listKeys(storage2, 'index/')).length).toBeGreaterThan(0)
      await again.close()
      await storage.close()
      await storage2.close()
    })

    it("owns its bytes: changing the caller's buffer after put, or a buffer read back, changes nothing stored", async () => {
      const spec = factory.spec()
      const storage = await openSpec(spec)
      const repo = await initRepository(storage, init)
      const original = blobContent(2, 0)
      const mine = Buffer.from(original)
      const { id } = await repo.putBlob('data', mine)
      mine.fill(0)
      const early = await repo.readBlob(id) // from the pack still in memory
      expect(early.equals(original)).toBe(true)
      early.fill(1)
      await repo.flush()
      const again = await openRepository(await openSpec(spec), { passphrase })
      expect((await again.readBlob(id)).equals(original)).toBe(true)
      expect((await verifyRepository(again, { readData: true })).problems).toEqual([])
      await repo.close()
      await storage.close()
    })

    it('stores equal content once, within a session and across two instances', async () => {
      const spec = factory.spec()
      const storage = await openSpec(spec)
      const a = await initRepository(storage, init)
      const content = blobContent(7, 1)
      const first = await a.putBlob('data', content)
      const second = await a.putBlob('data', Buffer.from(content))
      expect(first).toEqual({ id: first.id, stored: true })
      expect(second).toEqual({ id: first.id, stored: false })
      await a.flush()
      const packsBefore = await listKeys(storage, 'packs/')

      const storageB = await openSpec(spec)
      const b = await openRepository(storageB, { passphrase })
      expect(b.hasBlob(first.id)).toBe(true)
      expect(await b.putBlob('data', content)).toEqual({ id: first.id, stored: false })
      const other = await b.putBlob('meta', blobContent(7, 2))
      expect(other.stored).toBe(true)
      await b.flush()
      // The first instance sees the second's blob once it refreshes its index, and does not store it again.
      expect(a.hasBlob(other.id)).toBe(false)
      await a.refreshIndex()
      expect(await a.putBlob('meta', blobContent(7, 2))).toEqual({ id: other.id, stored: false })
      await a.flush()
      const packsAfter = await listKeys(storage, 'packs/')
      expect(packsAfter.length).toBe(packsBefore.length + 1)
      expect(b.indexStats.duplicates).toBe(0)
      await a.close()
      await b.close()
      await storage.close()
      await storageB.close()
    })

    it('keeps records: write, read, list, refuse overwrite, remove', async () => {
      const spec = factory.spec()
      const storage = await openSpec(spec)
      const repo = await initRepository(storage, init)
      const blob = await repo.putBlob('meta', blobContent(9, 0))
      const big = { files: Array.from({ length: 2000 }, (_, i) => ({ path: `base/1/${i}`, size: i * 8192 })) }
      await repo.writeRecord('backup', 'cluster-1/20260101T000000', big, { blobRefs: [blob.id] })
      await repo.writeRecord('backup', 'cluster-1/20260102T000000', { n: 2 })
      await repo.writeRecord('wal', '00000001/000000010000000000000001', { blobs: [blob.id] }, { blobRefs: [blob.id] })
      await expect(repo.writeRecord('backup', 'cluster-1/20260102T000000', { n: 3 })).rejects.toMatchObject({
        code: 'ALREADY_EXISTS',
      })
      await expect(repo.writeRecord('backup', 'x', {}, { blobRefs: ['ab'.repeat(32)] })).rejects.toMatchObject({
        code: 'NOT_FOUND',
      })
      // The record was written after its blob became durable: a fresh instance resolves both.
      const again = await openRepository(await openSpec(spec), { passphrase })
      const r = await again.readRecord<typeof big>('backup', 'cluster-1/20260101T000000')
      expect(r.value).toEqual(big)
      expect(r.blobRefs).toEqual([blob.id])
      expect((await again.readBlob(blob.id)).equals(blobContent(9, 0))).toBe(true)
      const listed: string[] = []
      for await (const info of again.listRecords('backup', 'cluster-1/')) listed.push(info.key)
      expect(listed.sort()).toEqual(['cluster-1/20260101T000000', 'cluster-1/20260102T000000'])
      await again.removeRecord('backup', 'cluster-1/20260102T000000')
      await expect(again.readRecord('backup', 'cluster-1/20260102T000000')).rejects.toMatchObject({ code: 'NOT_FOUND' })
      // Stored records hold no plain JSON when encrypted, and are compressed when large.
      const raw = await readAll(storage, 'records/backup/cluster-1/20260101T000000')
      if (init.encrypt) expect(raw.includes(Buffer.from('base/1/'))).toBe(false)
      if (init.compression !== 'none') expect(raw.length).toBeLessThan(JSON.stringify(big).length / 4)
      await repo.close()
      await again.close()
      await storage.close()
    })
  })

  it('refuses to init twice and names a location that is not a repository', async () => {
    const spec = factory.spec()
    const storage = await openSpec(spec)
    await expect(openRepository(storage)).rejects.toMatchObject({ code: 'REPO_FORMAT', hint: expect.stringContaining('pgkeep init') })
    const repo = await initRepository(storage, { compression: 'none' })
    await repo.close()
    await expect(initRepository(storage)).rejects.toMatchObject({ code: 'ALREADY_EXISTS' })
    await storage.close()
  })

  it('seals a pack of many small blobs at 8,192 of them, long before its bytes fill it, and reads every one back', async () => {
    const spec = factory.spec()
    const storage = await openSpec(spec)
    const repo = await initRepository(storage)
    // 8,200 distinct blobs of 40 bytes: about 330 KB stored, far under the pack's 8 MiB (and within its 5 s).
    const contents = Array.from({ length: 8200 }, (_, i) => Buffer.from(`small blob ${String(i).padStart(8, '0')} ${'-'.repeat(20)}`))
    const ids: string[] = []
    for (const c of contents) ids.push((await repo.putBlob('data', c)).id)
    await repo.flush()
    expect(repo.sessionStats.packsWritten).toBe(2)
    expect(await listKeys(storage, 'packs/')).toHaveLength(2)
    await repo.close()
    const again = await openRepository(await openSpec(spec))
    for (const i of [0, 8191, 8192, 8199]) expect((await again.readBlob(ids[i]!)).equals(contents[i]!)).toBe(true)
    await again.close()
    await storage.close()
  })
})
