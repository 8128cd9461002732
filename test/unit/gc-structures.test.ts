// The compact structures garbage collection relies on, against exact oracles: the Bloom filter never forgets an id
// and its measured false-positive rate stays near the planned one; the id table agrees with a Set; the in-memory
// index prefers copies outside condemned packs whatever the order of adds, and skips condemned ones only for new
// references; and the CLI's duration and size parsers.

import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { parseByteSize, parseDuration } from '../../src/cli/parse.js'
import { BlobIndex } from '../../src/repo/blob-index.js'
import { BloomFilter } from '../../src/repo/bloom-filter.js'
import { IdTable } from '../../src/repo/id-table.js'
import type { PackEntry } from '../../src/repo/pack-format.js'

/** `count` random ids of `bytes` bytes, cut from one random buffer (one call instead of `count`). */
const randomIds = (count: number, bytes = 32) => {
  const pool = randomBytes(count * bytes)
  return Array.from({ length: count }, (_, i) => pool.subarray(i * bytes, (i + 1) * bytes))
}

describe('BloomFilter', () => {
  it('holds every id added, and lets through about the planned share of others', () => {
    const n = 100_000
    const bloom = new BloomFilter(n, 0.01)
    const ids = randomIds(n)
    for (const id of ids) bloom.add(id)
    expect(ids.every((id) => bloom.has(id))).toBe(true)
    let fp = 0
    const probes = 100_000
    for (const p of randomIds(probes)) if (bloom.has(p)) fp++
    const rate = fp / probes
    console.log(
      `Bloom filter: ${((bloom.sizeBytes * 8) / n).toFixed(1)} bits per id, ${bloom.hashes} probes, false positives ${(100 * rate).toFixed(2)}% (planned 1%, expected ${(100 * bloom.expectedFalsePositiveRate()).toFixed(2)}%)`,
    )
    expect(rate).toBeGreaterThan(0.006)
    expect(rate).toBeLessThan(0.014)
  })

  it('draws a new salt per filter, so the ids that collide differ from one run to the next', () => {
    const n = 20_000
    const ids = randomIds(n)
    const probes = randomIds(50_000)
    const positives = () => {
      const bloom = new BloomFilter(n, 0.02)
      for (const id of ids) bloom.add(id)
      return new Set(probes.filter((p) => bloom.has(p)).map((p) => p.toString('hex')))
    }
    const a = positives()
    const b = positives()
    const both = [...a].filter((x) => b.has(x)).length
    expect(a.size).toBeGreaterThan(0)
    // Independent runs share about rate × positives of their false positives, not all of them.
    expect(both).toBeLessThan(a.size / 4)
  })
})

describe('IdTable', () => {
  it('agrees with a Map on 50k ids of 16 and 32 bytes, numbering them in order', () => {
    for (const bytes of [16, 32]) {
      const table = new IdTable(bytes)
      const oracle = new Map<string, number>()
      const wrong: string[] = []
      for (const [i, id] of randomIds(50_000, bytes).entries()) {
        const n = table.add(id)
        if (n !== i || table.add(id) !== n) wrong.push(`add ${i}`)
        oracle.set(id.toString('hex'), n)
      }
      expect(table.size).toBe(oracle.size)
      for (const [hex, n] of oracle) if (table.find(Buffer.from(hex, 'hex')) !== n || table.hex(n) !== hex) wrong.push(hex)
      for (const p of randomIds(10_000, bytes)) if (table.has(p)) wrong.push('false positive')
      expect(wrong).toEqual([])
    }
  })
})

describe('BlobIndex and condemned packs', () => {
  const entry = (id: Buffer, offset: number): PackEntry => ({ id, type: 'data', flags: 0, offset, storedLength: 10, plainLength: 10 })

  it('prefers a copy outside condemned packs, whatever the order of adds', () => {
    const id = randomBytes(32)
    const small = '0a'.repeat(32)
    const large = 'fe'.repeat(32)
    for (const order of [
      [small, large],
      [large, small],
    ]) {
      const index = new BlobIndex()
      index.setCondemned(new Set([small]))
      for (const p of order) index.add(p, entry(id, 0))
      expect(index.get(id)?.packId).toBe(large)
    }
    // Without condemnation, the smallest pack id wins (the rule every reader follows).
    const plain = new BlobIndex()
    plain.add(large, entry(id, 0))
    plain.add(small, entry(id, 0))
    expect(plain.get(id)?.packId).toBe(small)
  })

  it('skips blobs of condemned packs for new references only, and marks used packs', () => {
    const a = randomBytes(32)
    const b = randomBytes(32)
    const packA = '11'.repeat(32)
    const packB = '22'.repeat(32)
    const index = new BlobIndex()
    index.add(packA, entry(a, 0))
    index.add(packB, entry(b, 0))
    index.setCondemned(new Set([packA]))
    expect(index.getLive(a)).toBeUndefined()
    expect(index.get(a)?.packId).toBe(packA)
    expect(index.isUsed(packA)).toBe(false)
    expect(index.getLive(b)?.packId).toBe(packB)
    expect(index.isUsed(packB)).toBe(true)
    // Lifted again (absolved): usable.
    index.setCondemned(new Set())
    expect(index.getLive(a)?.packId).toBe(packA)
  })
})

describe('CLI parsers', () => {
  it('reads durations and sizes, and refuses anything else with a hint', () => {
    expect(parseDuration('0', '--grace', { allowZero: true })).toBe(0)
    expect(() => parseDuration('0', '--max-wal-age')).toThrow(/invalid --max-wal-age/)
    expect(parseDuration('90s', '--grace')).toBe(90_000)
    expect(parseDuration('500ms', '--grace')).toBe(500)
    expect(parseDuration('1h30m', '--grace')).toBe(5_400_000)
    expect(parseDuration('2d', '--grace')).toBe(172_800_000)
    for (const bad of ['', '5', '1 h', '-1h', 'h', '1y']) expect(() => parseDuration(bad, '--grace')).toThrow(/invalid --grace/)
    expect(parseByteSize('1000', '--max-repack-bytes')).toBe(1000)
    expect(parseByteSize('512M', '--max-repack-bytes')).toBe(512 * 1024 ** 2)
    expect(parseByteSize('10GiB', '--max-repack-bytes')).toBe(10 * 1024 ** 3)
    expect(parseByteSize('2GB', '--max-repack-bytes')).toBe(2e9)
    for (const bad of ['', 'M', '-5', '5Q']) expect(() => parseByteSize(bad, '--max-repack-bytes')).toThrow(/invalid --max-repack-bytes/)
  })
})
