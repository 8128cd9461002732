// The page hashes of file maps (docs/backup-format.md §4): XXH64 against values printed by xxHash's own `xxhsum
// -H64` (0.8.1), the SHA-256 prefix of version 1 maps against node:crypto, and the all-zero rule.

import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { pageHashesOf } from '../../src/repo/codec-work.js'
import { hashPagesInto } from '../../src/repo/page-hash.js'

const PAGE = 8192
/** XXH64 as the hex `xxhsum -H64` prints, turned into the 8 bytes a file map stores (a little-endian u64). */
const stored = (hex: string) => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(BigInt(`0x${hex}`))
  return b
}

// Inputs and what `xxhsum -H64` printed for them.
const patterned = Buffer.from(Array.from({ length: PAGE }, (_, i) => (i * 31 + 7) & 0xff))
const ones = Buffer.alloc(PAGE, 0xff)
const lastByteSet = Buffer.alloc(PAGE)
lastByteSet[PAGE - 1] = 1
const VECTORS: [string, Buffer, string][] = [
  ['bytes (i * 31 + 7) & 0xff', patterned, '92a0061e07d7338f'],
  ['8192 bytes of 0xff', ones, 'b746f89938b7b253'],
  ['zeros but the last byte 1', lastByteSet, '4185069d731f1917'],
  ["'abc' (a short last page)", Buffer.from('abc'), '44bc2cf5ad770999'],
  ["'x' × 100", Buffer.from('x'.repeat(100)), '92f0de5a88a3c094'],
]

describe('page hashes', () => {
  it('XXH64 (seed 0) gives the values of the reference implementation', () => {
    for (const [what, bytes, hex] of VECTORS) expect(pageHashesOf(bytes, 'xxh64'), what).toEqual(stored(hex))
  })

  it('hashes every page of a buffer in place, and counts the all-zero ones (hash 0)', () => {
    // Pages 0..199, every third one all zeros.
    const pages = 200
    const bytes = Buffer.alloc(pages * PAGE)
    const kinds = [patterned, ones, lastByteSet]
    for (let i = 0; i < pages; i++) if (i % 3 !== 0) kinds[(i % 3) - 1]!.copy(bytes, i * PAGE)
    const out = Buffer.alloc(8 + pages * 8, 0xee)
    const zeros = hashPagesInto(bytes, out, 8, 'xxh64')
    expect(zeros).toBe(Math.ceil(pages / 3))
    expect(out.subarray(0, 8)).toEqual(Buffer.alloc(8, 0xee)) // nothing written before the offset
    for (let i = 0; i < pages; i++) {
      const want = i % 3 === 0 ? Buffer.alloc(8) : stored(VECTORS[(i % 3) - 1]![2])
      expect(out.subarray(8 + i * 8, 16 + i * 8), `page ${i}`).toEqual(want)
    }
    // A short last page of zeros counts too (its hash is not a whole zero page's); one with a byte set does not.
    for (const [last, zero] of [
      [Buffer.alloc(100), true],
      [Buffer.from([0, 0, 7]), false],
    ] as const) {
      const short = Buffer.concat([ones, last])
      const o = Buffer.alloc(16)
      expect(hashPagesInto(short, o, 0, 'xxh64'), `short page of ${last.length} bytes`).toBe(zero ? 1 : 0)
      expect(o.subarray(8).equals(Buffer.alloc(8)), `short page of ${last.length} bytes`).toBe(zero)
    }
  })

  it('sha256-64 (file maps of version 1): the first 8 bytes of SHA-256, zeros for an all-zero page', () => {
    const bytes = Buffer.concat([patterned, Buffer.alloc(PAGE), ones])
    const h = pageHashesOf(bytes, 'sha256-64')
    expect(h.subarray(0, 8)).toEqual(createHash('sha256').update(patterned).digest().subarray(0, 8))
    expect(h.subarray(8, 16)).toEqual(Buffer.alloc(8))
    expect(h.subarray(16, 24)).toEqual(createHash('sha256').update(ones).digest().subarray(0, 8))
  })
})
