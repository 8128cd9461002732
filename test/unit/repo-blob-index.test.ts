// The in-memory blob index against a plain Map as oracle: 200k random ids (with growth and rehashing on the way),
// lookups of present and absent ids, and duplicates resolved to the same location whatever the insertion order.

import { describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'

import { BlobIndex } from '../../src/repo/blob-index.js'
import type { PackEntry } from '../../src/repo/pack-format.js'

function entry(id: Buffer, i: number): PackEntry {
  return { id, type: i % 3 === 0 ? 'meta' : 'data', flags: i % 2, offset: i * 7, storedLength: 1000 + i, plainLength: 3000 + i }
}

describe('BlobIndex', () => {
  it('grows from any initial capacity, a power of two or not, and finds every id', () => {
    for (const initial of [1, 3, 64, 100]) {
      const index = new BlobIndex(initial)
      const ids = randomBytes(5000 * 32)
      for (let i = 0; i < 5000; i++) index.add('p', entry(ids.subarray(i * 32, i * 32 + 32), i))
      expect(index.size).toBe(5000)
      for (let i = 0; i < 5000; i += 7) expect(index.get(ids.subarray(i * 32, i * 32 + 32))?.offset).toBe(i * 7)
      expect(index.has(randomBytes(32))).toBe(false)
    }
  })

  // Ids come from one random buffer (a call per id made this test slow on a busy machine); the generous timeout
  // is for a machine with every core taken, the work itself takes about a second.
  it('agrees with a Map on 200k random ids', { timeout: 120_000 }, () => {
    const count = 200_000
    const index = new BlobIndex()
    const oracle = new Map<string, { packId: string; e: PackEntry }>()
    const packs = Array.from({ length: 500 }, () => randomBytes(32).toString('hex'))
    const ids = randomBytes(count * 32)
    for (let i = 0; i < count; i++) {
      const e = entry(ids.subarray(i * 32, i * 32 + 32), i)
      const packId = packs[i % packs.length]!
      index.add(packId, e)
      oracle.set(e.id.toString('hex'), { packId, e })
    }
    expect(index.size).toBe(count)
    expect(index.duplicates).toBe(0)
    const mismatches: string[] = []
    for (const [hex, { packId, e }] of oracle) {
      const got = index.get(Buffer.from(hex, 'hex'))
      const same =
        got?.packId === packId &&
        got.type === e.type &&
        got.flags === e.flags &&
        got.offset === e.offset &&
        got.storedLength === e.storedLength &&
        got.plainLength === e.plainLength
      if (!same) mismatches.push(hex)
    }
    expect(mismatches).toEqual([])
    const absent = randomBytes(10_000 * 32)
    let falsePositives = 0
    for (let i = 0; i < 10_000; i++) if (index.has(absent.subarray(i * 32, i * 32 + 32))) falsePositives++
    expect(falsePositives).toBe(0)
    expect([...index.entries()].length).toBe(count)
    console.log(`BlobIndex: ${(index.retainedBytes / index.size).toFixed(1)} bytes per blob at 200k`)
  })

  it('keeps the copy in the smallest pack id, whatever the order of adds', () => {
    const id = randomBytes(32)
    const copies = ['ff'.repeat(32), '0a'.repeat(32), '7f'.repeat(32)].map((packId, i) => ({ packId, e: entry(id, i) }))
    const orders = [
      [0, 1, 2],
      [2, 1, 0],
      [1, 0, 2],
      [1, 2, 0],
    ]
    for (const order of orders) {
      const index = new BlobIndex()
      for (const k of order) index.add(copies[k]!.packId, copies[k]!.e)
      expect(index.size).toBe(1)
      expect(index.duplicates).toBe(2)
      expect(index.get(id)).toMatchObject({ packId: '0a'.repeat(32), offset: copies[1]!.e.offset })
    }
  })
})
