// The ranges a BlobReader read ahead (src/repo/read-ahead-ranges.ts): bytes found by pack and offset, as a view of
// the chunk they lie in or joined across chunks, nothing beyond a range's end or in another pack, and only the
// newest ranges kept.

import { describe, expect, it } from 'vitest'
import { ReadAheadRanges } from '../../src/repo/read-ahead-ranges.js'

/** `n` bytes counting up from `from` (mod 256): any slice says where it came from. */
const counting = (from: number, n: number) => Uint8Array.from({ length: n }, (_, i) => (from + i) % 256)

describe('ReadAheadRanges', () => {
  // Pack 'p' read from offset 1000 in three chunks of 100, 50 and 200 bytes.
  const chunks = [counting(1000, 100), counting(1100, 50), counting(1150, 200)]

  it('finds bytes inside one chunk as a view of it, and bytes across chunks joined', () => {
    const r = new ReadAheadRanges(4)
    r.add('p', 1000, chunks)
    const inOne = r.find('p', 1110, 30)!
    expect(inOne.buffer).toBe(chunks[1]!.buffer)
    expect(Buffer.from(inOne).equals(Buffer.from(counting(1110, 30)))).toBe(true)
    for (const [offset, length] of [
      [1090, 20],
      [1050, 200],
      [1000, 350],
      [1149, 2],
    ]) {
      const got = r.find('p', offset!, length!)
      expect(got && Buffer.from(got).equals(Buffer.from(counting(offset!, length!))), `${offset}+${length}`).toBe(true)
    }
  })

  it('finds nothing that a range does not hold whole: before it, past its end, in another pack', () => {
    const r = new ReadAheadRanges(4)
    r.add('p', 1000, chunks)
    expect(r.find('p', 999, 10)).toBeUndefined()
    expect(r.find('p', 1340, 11)).toBeUndefined()
    expect(r.find('q', 1000, 10)).toBeUndefined()
    expect(r.find('p', 1340, 10)).toBeDefined()
  })

  it('keeps the newest ranges up to its limit', () => {
    const r = new ReadAheadRanges(2)
    for (const [i, start] of [0, 1000, 2000].entries()) r.add(`pack${i}`, start, [counting(start, 100)])
    expect(r.find('pack0', 0, 10)).toBeUndefined()
    expect(r.find('pack1', 1000, 10)).toBeDefined()
    expect(r.find('pack2', 2050, 50)).toBeDefined()
  })
})
