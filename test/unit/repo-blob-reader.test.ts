// BlobReader against a real repository in a temporary directory: blobs asked for together are fetched in few
// storage reads and come back exactly; a damaged or unknown blob fails through Repository.readBlob with its own
// message while the others of the same run are still delivered; an encrypted repository works the same.

import { randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it, onTestFinished } from 'vitest'
import { packKey } from '../../src/repo/layout.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { openRepository } from '../../src/repo/index.js'
import { damage, flipByte } from '../harness/repo-fixtures.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'

let r: TestRepo | undefined
afterEach(async () => {
  await r?.close()
  r = undefined
})

async function repoWithBlobs(passphrase?: string): Promise<{ ids: string[]; contents: Buffer[] }> {
  r = await freshFsRepo({ passphrase })
  const contents = Array.from({ length: 24 }, (_, i) => (i % 3 === 0 ? randomBytes(70_000) : Buffer.alloc(200_000, i)))
  const ids: string[] = []
  for (const c of contents) ids.push((await r.repo.putBlob('data', c)).id)
  await r.repo.flush()
  return { ids, contents }
}

describe.each([undefined, 'secret'])('BlobReader (passphrase %s)', (passphrase) => {
  it('reads blobs asked for together in a few runs, byte for byte', async () => {
    const { ids, contents } = await repoWithBlobs(passphrase)
    const repo = await openRepository(await openFsStorage(r!.dir), { passphrase })
    try {
      const reader = repo.openBlobReader({ workers: 0 })
      const got = await Promise.all(ids.map((id) => reader.read(id)))
      for (const [i, g] of got.entries()) expect(g.equals(contents[i]!), `blob ${i}`).toBe(true)
      expect(reader.stats.blobs).toBe(24)
      expect(reader.stats.fallbacks).toBe(0)
      expect(reader.stats.runs).toBeLessThanOrEqual(3)
      // The same through worker threads (the build's compiled worker module).
      const pooled = repo.openBlobReader({ workers: 2 })
      try {
        const again = await Promise.all(ids.map((id) => pooled.read(id)))
        for (const [i, g] of again.entries()) expect(g.equals(contents[i]!), `blob ${i} through workers`).toBe(true)
        expect(pooled.workers).toBe(2)
      } finally {
        await pooled.close()
      }
      // Asked for one at a time, each is a run of its own.
      const single = repo.openBlobReader({ workers: 0 })
      for (const id of ids.slice(0, 3)) await single.read(id)
      expect(single.stats.runs).toBe(3)
      // One at a time with read-ahead (a parent's file maps): the first read brings the next blobs along, and a
      // blob beyond what was read, then one before it, are read or found again exactly.
      const ahead = repo.openBlobReader({ workers: 0, readAheadBytes: 100_000, keepRanges: 2 })
      const order = [0, 1, 2, 3, 4, 5, 23, 2]
      for (const i of order) expect((await ahead.read(ids[i]!)).equals(contents[i]!), `blob ${i} read ahead`).toBe(true)
      expect(ahead.stats.runs + ahead.stats.readAheadHits).toBe(order.length)
      expect(ahead.stats.readAheadHits).toBeGreaterThanOrEqual(3) // 1 and 2 with 0 (a 70 kB blob and small ones), 2 again
      expect(ahead.stats.fallbacks).toBe(0)
      // The same through storage reading 8 KiB chunks: a range kept is made of many, each of its own (not one
      // buffer read into again and again). Fewer hits: a blob arrives before the rest of its range is read.
      const smallChunks = await openRepository(await openFsStorage(r!.dir, { readChunkBytes: 8192 }), { passphrase })
      onTestFinished(() => smallChunks.close())
      const aheadInSmallChunks = smallChunks.openBlobReader({ workers: 0, readAheadBytes: 100_000, keepRanges: 2 })
      for (const i of order) expect((await aheadInSmallChunks.read(ids[i]!)).equals(contents[i]!), `blob ${i} read ahead, small chunks`).toBe(true)
      expect(aheadInSmallChunks.stats.readAheadHits).toBeGreaterThanOrEqual(1)
      expect(aheadInSmallChunks.stats.fallbacks).toBe(0)
    } finally {
      await repo.close()
    }
  })

  it('window-sized blobs given back are decoded into again, byte for byte; a blob asked for twice at once arrives twice', async () => {
    // (The small ones below lie within a chunk of the read, whose buffer the storage reuses: with workers, those
    // waiting for one must not be left as views of it.)
    r = await freshFsRepo({ passphrase })
    // 1 MiB windows, stored compressed and not (random bytes do not compress), spanning chunks of the pack read.
    const contents = Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? randomBytes(1 << 20) : Buffer.alloc(1 << 20, i)))
    const ids: string[] = []
    for (const c of contents) ids.push((await r.repo.putBlob('data', c)).id)
    await r.repo.flush()
    const repo = await openRepository(await openFsStorage(r.dir), { passphrase })
    try {
      // Blobs read again on their own (a blob asked for twice whose bytes began in an earlier chunk), per setting.
      const fallbacks: number[] = []
      for (const workers of [0, 2]) {
        const reader = repo.openBlobReader({ workers, spareBuffers: 2 })
        try {
          for (let round = 0; round < 3; round++) {
            const got = await Promise.all([...ids, ids[3]!, ids[0]!].map((id) => reader.read(id)))
            for (const [i, g] of got.entries()) {
              expect(g.equals(contents[i < 8 ? i : i === 8 ? 3 : 0]!), `blob ${i}, round ${round}, ${workers} workers`).toBe(true)
            }
            // Given back: the next round's blobs are decoded into these buffers.
            for (const g of got.slice(0, 8)) reader.giveBack(g)
          }
          fallbacks.push(reader.stats.fallbacks)
        } finally {
          await reader.close()
        }
      }
      // With workers as without: none waited for a worker as a view into a chunk the storage then read over.
      expect(fallbacks[1]).toBe(fallbacks[0])
    } finally {
      await repo.close()
    }
  })

  it('small data blobs of whole pages given back are decoded into again; metadata, odd sizes and a second give-back are not', async () => {
    r = await freshFsRepo({ passphrase })
    // Random pages (stored as they are) and repeated bytes (stored compressed), in sets of equal sizes.
    const page = 8192
    const sizes = [page, 2 * page, 8 * page, 9 * page, 5000]
    const make = (set: number) => sizes.map((n, i) => (i % 2 === 0 ? randomBytes(n) : Buffer.alloc(n, set * 16 + i + 1)))
    const sets = [make(0), make(1), make(2), make(3)]
    const ids = sets.map(() => [] as string[])
    for (const [s, contents] of sets.entries()) for (const c of contents) ids[s]!.push((await r.repo.putBlob('data', c)).id)
    const meta = randomBytes(page)
    const metaId = (await r.repo.putBlob('meta', meta)).id
    await r.repo.flush()
    const repo = await openRepository(await openFsStorage(r.dir), { passphrase })
    const reader = repo.openBlobReader({ workers: 0 })
    const readSet = async (s: number) => {
      const got = await Promise.all(ids[s]!.map((id) => reader.read(id)))
      for (const [i, g] of got.entries()) expect(g.equals(sets[s]![i]!), `set ${s}, blob ${i}`).toBe(true)
      return got
    }
    try {
      const first = await readSet(0)
      for (const b of first) reader.giveBack(b)
      // Given back twice: still lent to one blob only.
      reader.giveBack(first[0]!)
      const [second, third] = await Promise.all([readSet(1), readSet(2)])
      // One to eight pages: the same buffers again. Nine pages and 5,000 bytes: buffers of their own.
      expect(second.map((g, i) => g.buffer === first[i]!.buffer)).toEqual([true, true, true, false, false])
      expect(third[0]!.buffer).not.toBe(second[0]!.buffer)
      // A metadata blob's buffer is never lent to a data blob (its reader may keep views of it).
      const metaBytes = await reader.read(metaId)
      expect(metaBytes.equals(meta)).toBe(true)
      reader.giveBack(metaBytes)
      const fourth = await readSet(3)
      expect(fourth[0]!.buffer).not.toBe(metaBytes.buffer)
      expect(reader.stats.fallbacks).toBe(0)
    } finally {
      await reader.close()
      await repo.close()
    }
  })

  it('a window-sized blob goes to a worker while one has a free turn; with every turn taken, the calling thread decodes it', async () => {
    r = await freshFsRepo({ passphrase })
    const contents = Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? randomBytes(1 << 20) : Buffer.alloc(1 << 20, i + 1)))
    const ids: string[] = []
    for (const c of contents) ids.push((await r.repo.putBlob('data', c)).id)
    await r.repo.flush()
    const repo = await openRepository(await openFsStorage(r.dir), { passphrase })
    // One worker, two turns. The first read keeps the whole pack, so the next seven are decoded as they are asked
    // for, all in one turn of the event loop: two go to the worker, five to this thread.
    const reader = repo.openBlobReader({ workers: 1, readAheadBytes: 16 << 20, keepRanges: 1 })
    try {
      expect((await reader.read(ids[0]!)).equals(contents[0]!)).toBe(true)
      const rest = await Promise.all(ids.slice(1).map((id) => reader.read(id)))
      for (const [i, g] of rest.entries()) expect(g.equals(contents[i + 1]!), `blob ${i + 1}`).toBe(true)
      expect(reader.stats.readAheadHits).toBe(7)
      expect(reader.stats.decodedByCaller).toBe(5)
      expect(reader.stats.fallbacks).toBe(0)
    } finally {
      await reader.close()
      await repo.close()
    }
  })

  it('a damaged blob fails with the repository message; its neighbours still arrive', async () => {
    const { ids, contents } = await repoWithBlobs(passphrase)
    const repo = await openRepository(await openFsStorage(r!.dir), { passphrase })
    try {
      const loc = repo.locateBlob(ids[5]!)!
      const storage = await openFsStorage(r!.dir)
      await damage(storage, packKey(loc.packId), flipByte(loc.offset + 10))
      const reader = repo.openBlobReader({ workers: 0 })
      const results = await Promise.allSettled(ids.map((id) => reader.read(id)))
      expect(results[5]!.status).toBe('rejected')
      expect(String((results[5] as PromiseRejectedResult).reason.message)).toContain(`blob '${ids[5]}' in pack '${packKey(loc.packId)}'`)
      results.forEach((res, i) => {
        if (i !== 5) expect(res.status === 'fulfilled' && res.value.equals(contents[i]!), `blob ${i}`).toBe(true)
      })
      await expect(reader.read('ab'.repeat(32))).rejects.toThrow(/is not in repository/)
    } finally {
      await repo.close()
    }
  })
})
