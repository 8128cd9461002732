// Tablespace mappings, extent slicing (byte by byte), the task
// pool (bounds, pieces, failure, abort) and the blob cache (sharing, eviction, failures not cached).

import { describe, expect, it } from 'vitest'
import { extentsIn, type Extent } from '../../src/repo/file-map.js'
import { BlobCache } from '../../src/restore/blob-cache.js'
import { parseTablespaceMapping, resolveTablespaceLocations } from '../../src/restore/tablespace-mapping.js'
import { runTaskPool } from '../../src/restore/task-pool.js'

describe('tablespace mapping', () => {
  it('parses OLD=NEW with escaped equals signs', () => {
    expect(parseTablespaceMapping('/a=/b')).toEqual({ from: '/a', to: '/b' })
    expect(parseTablespaceMapping('16385=/new/place')).toEqual({ from: '16385', to: '/new/place' })
    expect(parseTablespaceMapping('/a\\=b=/c\\=d')).toEqual({ from: '/a=b', to: '/c=d' })
    for (const bad of ['/a', '=/b', '/a=', '/a=/b=/c', '/a=relative', 'relative=/b']) expect(() => parseTablespaceMapping(bad), bad).toThrow()
  })

  const ts = [
    { oid: 16385, location: '/srv/ts1' },
    { oid: 16386, location: '/srv/ts2/' },
  ]
  it('maps by location or oid and leaves the rest where they were', () => {
    const m = resolveTablespaceLocations(ts, [{ from: '/srv/ts1/', to: '/new/1' }], '/data')
    expect([...m]).toEqual([
      [16385, '/new/1'],
      [16386, '/srv/ts2'],
    ])
    expect([...resolveTablespaceLocations(ts, [{ from: '16386', to: '/new/2' }], '/data')]).toEqual([
      [16385, '/srv/ts1'],
      [16386, '/new/2'],
    ])
  })
  it('refuses mappings that match nothing, overlap, or collide with the data directory', () => {
    expect(() => resolveTablespaceLocations(ts, [{ from: '/srv/other', to: '/x' }], '/data')).toThrow(
      expect.objectContaining({ message: expect.stringMatching(/matches no tablespace/), hint: expect.stringMatching(/16385 at '\/srv\/ts1'/) }),
    )
    expect(() =>
      resolveTablespaceLocations(
        ts,
        [
          { from: '16385', to: '/x' },
          { from: '/srv/ts1', to: '/y' },
        ],
        '/data',
      ),
    ).toThrow(/more than once/)
    expect(() => resolveTablespaceLocations(ts, [{ from: '16385', to: '/srv/ts2/sub' }], '/data')).toThrow(/overlapping/)
    expect(() => resolveTablespaceLocations(ts, [{ from: '16385', to: '/data/ts' }], '/data')).toThrow(/overlaps the data directory/)
    expect(() => resolveTablespaceLocations(ts, [], '/srv/ts1/data')).toThrow(/overlaps the data directory/)
    // A name that starts with two dots is still inside the data directory; '..' itself leaves it.
    expect(() => resolveTablespaceLocations(ts, [{ from: '16385', to: '/data/..ts' }], '/data')).toThrow(/overlaps the data directory/)
    expect(() => resolveTablespaceLocations(ts, [{ from: '16385', to: '/data/../ts' }], '/data')).not.toThrow()
    // Siblings that merely share a prefix are fine.
    expect(() => resolveTablespaceLocations(ts, [{ from: '16385', to: '/data2' }], '/data')).not.toThrow()
  })
})

describe('extentsIn', () => {
  /** Where each byte of [from, from + len) comes from, byte by byte: 'hole' or 'blob@offset'. */
  const bytesOf = (extents: readonly Extent[], from: number, len: number) => {
    const out: string[] = []
    for (const e of extents) {
      for (let i = 0; i < e.length; i++) {
        const at = e.offset + i
        if (at >= from && at < from + len) out[at - from] = e.blob === null ? 'hole' : `${e.blob.slice(0, 2)}@${e.blobOffset + i}`
      }
    }
    return out
  }

  it('cuts a file map to any range, byte for byte the same content', () => {
    let seed = 7
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n
    for (let round = 0; round < 200; round++) {
      const extents: Extent[] = []
      let at = 0
      for (let i = 0, n = 1 + rnd(20); i < n; i++) {
        const length = 1 + rnd(500)
        extents.push({ offset: at, length, blob: rnd(4) === 0 ? null : ['ab', 'cd'][rnd(2)]!.repeat(32), blobOffset: rnd(4) === 0 ? 0 : rnd(1000) })
        at += length
      }
      const from = rnd(at)
      const len = 1 + rnd(at - from)
      const cut = extentsIn(extents, from, len)
      expect(cut.reduce((s, x) => s + x.length, 0)).toBe(len)
      expect(cut[0]!.offset).toBe(from)
      expect(bytesOf(cut, from, len)).toEqual(bytesOf(extents, from, len))
    }
  })
})

describe('runTaskPool', () => {
  async function* items(n: number) {
    for (let i = 0; i < n; i++) yield i
  }
  const tick = () => new Promise((r) => setTimeout(r, 1))

  it('runs every task and spawned piece, never more than jobs at once', async () => {
    let running = 0
    let peak = 0
    const seen: string[] = []
    await runTaskPool<number | string>(items(20), 3, async (t, spawn) => {
      running++
      peak = Math.max(peak, running)
      await tick()
      seen.push(String(t))
      if (typeof t === 'number' && t % 5 === 0) spawn([`${t}a`, `${t}b`, `${t}c`])
      running--
    })
    expect(peak).toBe(3)
    expect(seen.sort()).toEqual([...Array.from({ length: 20 }, (_, i) => String(i)), ...[0, 5, 10, 15].flatMap((i) => [`${i}a`, `${i}b`, `${i}c`])].sort())
  })

  it('spreads the pieces of the last task over idle workers', async () => {
    let running = 0
    let peak = 0
    await runTaskPool<string>(
      (async function* () {
        yield 'big'
      })(),
      4,
      async (t, spawn) => {
        if (t === 'big') return spawn(['p1', 'p2', 'p3', 'p4'])
        running++
        peak = Math.max(peak, running)
        await new Promise((r) => setTimeout(r, 20))
        running--
      },
    )
    expect(peak).toBe(4)
  })

  it('stops at the first failure, lets running tasks settle, and pulls no more', async () => {
    let pulled = 0
    let settled = 0
    const src = (async function* () {
      for (let i = 0; i < 1000; i++) {
        pulled++
        yield i
      }
    })()
    await expect(
      runTaskPool(src, 4, async (t) => {
        await tick()
        if (t === 10) throw new Error('boom')
        settled++
      }),
    ).rejects.toThrow('boom')
    expect(pulled).toBeLessThan(20)
    expect(settled).toBeGreaterThan(5)
  })

  it('rejects when the source fails, and on abort', async () => {
    const bad = (async function* () {
      yield 1
      throw new Error('source broke')
    })()
    await expect(runTaskPool(bad, 2, async () => {})).rejects.toThrow('source broke')
    const ac = new AbortController()
    let done = 0
    const p = runTaskPool(
      items(1000),
      2,
      async () => {
        await tick()
        if (++done === 10) ac.abort(new Error('stop'))
      },
      ac.signal,
    )
    await expect(p).rejects.toThrow('stop')
    expect(done).toBeLessThan(15)
  })
})

describe('BlobCache', () => {
  const id = (n: number) => n.toString(16).padStart(64, '0')
  /** Blobs 1..`smallUpTo` of 10 bytes, the others of 100; a small budget of 25 bytes; the reads made, in order. */
  const budgetedCache = (smallUpTo: number, maxBytes: number) => {
    const reads: string[] = []
    const read = async (b: string) => {
      reads.push(b)
      return Buffer.alloc(Number.parseInt(b, 16) <= smallUpTo ? 10 : 100)
    }
    return { cache: new BlobCache(read, maxBytes, () => {}, { small: { belowBytes: 50, maxBytes: 25 } }), reads }
  }
  it('shares one read between concurrent requests and evicts beyond its size', async () => {
    const reads: string[] = []
    const cache = new BlobCache(async (b) => {
      reads.push(b)
      await new Promise((r) => setTimeout(r, 2))
      return Buffer.alloc(100, b.slice(-1))
    }, 250)
    const [a, b] = await Promise.all([cache.get(id(1)), cache.get(id(1))])
    expect(a.bytes).toBe(b.bytes)
    expect(reads).toEqual([id(1)])
    await cache.get(id(2))
    await cache.get(id(1)) // now most recent
    await cache.get(id(3)) // 300 bytes > 250: the least recent (2) goes
    expect(cache.stats.bytes).toBeLessThanOrEqual(250)
    await cache.get(id(1))
    await cache.get(id(2))
    expect(reads).toEqual([id(1), id(2), id(3), id(2)])
  })
  it('does not keep a failed read', async () => {
    let n = 0
    const cache = new BlobCache(async () => {
      if (n++ === 0) throw new Error('transient')
      return Buffer.alloc(1)
    }, 100)
    await expect(cache.get(id(9))).rejects.toThrow('transient')
    expect((await cache.get(id(9))).bytes).toHaveLength(1)
  })
  it('gives a buffer back only once it left the cache and every lease on it is released', async () => {
    const recycled: string[] = []
    const cache = new BlobCache(
      async (b) => Buffer.alloc(100, b.slice(-1)),
      150,
      (bytes) => recycled.push(bytes.toString('latin1', 0, 1)),
    )
    const one = await cache.get(id(1))
    const again = await cache.get(id(1))
    await cache.get(id(2)) // 200 bytes > 150: 1 leaves the cache, still leased twice
    expect(recycled).toEqual([])
    one.release()
    one.release() // a second release of the same lease counts once
    expect(recycled).toEqual([])
    again.release()
    expect(recycled).toEqual(['1'])
    const three = await cache.get(id(3)) // 2 leaves the cache: its lease was never released
    expect(recycled).toEqual(['1'])
    three.release() // 3 is still cached: nothing goes back
    expect(recycled).toEqual(['1'])
    cache.prefetch(id(4)) // read ahead, no lease: 3 leaves and goes back at once
    await new Promise((r) => setTimeout(r, 1))
    expect(recycled).toEqual(['1', '3'])
  })
  it('keeps small blobs within their own budget and large ones within the whole', async () => {
    // Blobs 1-4 are small (10 bytes), 5 and 6 large (100 bytes); small budget 25 bytes, whole cache 300.
    const { cache, reads } = budgetedCache(4, 300)
    for (const n of [5, 1, 2, 6, 3]) (await cache.get(id(n))).release()
    // The third small blob pushed the least recent small one (1) out; the large ones stay.
    expect(cache.stats).toMatchObject({ bytes: 220, smallBytes: 20, entries: 4 })
    for (const n of [5, 6, 2, 3]) (await cache.get(id(n))).release()
    expect(reads).toEqual([id(5), id(1), id(2), id(6), id(3)])
    ;(await cache.get(id(1))).release()
    expect(reads).toEqual([id(5), id(1), id(2), id(6), id(3), id(1)])
    ;(await cache.get(id(4))).release()
    expect(cache.stats).toMatchObject({ bytes: 220, smallBytes: 20, entries: 4 })
  })
  it('keeps large blobs used and released within the reuse budget, never one in use or only fetched ahead', async () => {
    const recycled: string[] = []
    const reads: string[] = []
    const cache = new BlobCache(
      async (b) => {
        reads.push(b.slice(-1))
        return Buffer.alloc(100, b.slice(-1))
      },
      1000,
      (bytes) => recycled.push(bytes.toString('latin1', 0, 1)),
      { reuseMaxBytes: 150 },
    )
    const three = await cache.get(id(3))
    const four = await cache.get(id(4))
    ;(await cache.get(id(1))).release()
    ;(await cache.get(id(2))).release() // idle 1 and 2: 200 bytes > 150; 1 goes back, 3 and 4 (older, in use) stay
    expect(recycled).toEqual(['1'])
    expect(cache.stats).toMatchObject({ bytes: 300, idleBytes: 100, entries: 3 })
    cache.prefetch(id(6)) // fetched ahead, not used: not counted as idle
    await new Promise((r) => setTimeout(r, 1))
    ;(await cache.get(id(5))).release() // idle 2 and 5: 2 goes
    expect(recycled).toEqual(['1', '2'])
    expect(cache.stats).toMatchObject({ bytes: 400, idleBytes: 100, entries: 4 })
    const five = await cache.get(id(5)) // asked again: from the cache, and in use, so no longer idle
    expect(cache.stats.idleBytes).toBe(0)
    three.release() // idle 3 alone: within the budget
    expect(recycled).toEqual(['1', '2'])
    four.release() // idle 3 and 4: 3, the least recently got, goes
    expect(recycled).toEqual(['1', '2', '3'])
    five.release() // idle 4 and 5: 4 goes
    expect(recycled).toEqual(['1', '2', '3', '4'])
    expect(cache.stats).toMatchObject({ bytes: 200, idleBytes: 100, entries: 2 })
    expect(reads).toEqual(['3', '4', '1', '2', '6', '5'])
  })
  it('lets large blobs push out large ones only, used ones first, then the furthest fetched ahead', async () => {
    // Blobs 1-2 are small (10 bytes), 5-9 large (100 bytes); small budget 25 bytes, whole cache 320.
    const { cache, reads } = budgetedCache(2, 320)
    const settle = () => new Promise((r) => setTimeout(r, 1))
    // Small blobs fetched first (the look-ahead's file maps), then a large one used and three fetched ahead.
    for (const n of [1, 2]) cache.prefetch(id(n))
    ;(await cache.get(id(5))).release()
    for (const n of [6, 7, 8]) cache.prefetch(id(n))
    await settle()
    // 420 bytes > 320: the used large blob 5 goes, though the small ones are older. Then one more fetched ahead: of
    // those not used yet, the furthest ahead (9 itself) goes, the nearer ones stay.
    cache.prefetch(id(9))
    await settle()
    expect(cache.stats).toMatchObject({ bytes: 320, smallBytes: 20, entries: 5 })
    for (const n of [1, 2, 6, 7, 8]) (await cache.get(id(n))).release()
    expect(reads).toEqual([id(1), id(2), id(5), id(6), id(7), id(8), id(9)])
    ;(await cache.get(id(9))).release()
    ;(await cache.get(id(5))).release()
    expect(reads.slice(7)).toEqual([id(9), id(5)])
  })
})
