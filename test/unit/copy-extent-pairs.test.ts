// The pairs an incremental copy trusts: ids of a backup's extents and of its copy's, extent by extent, only where
// the two describe the same content in the same shape.

import { describe, expect, it } from 'vitest'
import { extentPairs } from '../../src/copy/backup-files-copier.js'
import type { Extent } from '../../src/repo/index.js'

const id = (c: string) => c.repeat(64)
const x = (offset: number, length: number, blob: string | null, blobOffset = 0): Extent => ({ offset, length, blob, blobOffset })

describe('extentPairs', () => {
  const source = [x(0, 8192, id('a')), x(8192, 8192, null), x(16384, 8192, id('a'), 8192), x(24576, 4096, id('b'))]
  it('pairs blob by blob where offsets, lengths, holes and blob offsets agree', () => {
    const target = [x(0, 8192, id('c')), x(8192, 8192, null), x(16384, 8192, id('c'), 8192), x(24576, 4096, id('d'))]
    expect(extentPairs(source, target)).toEqual(
      new Map([
        [id('a'), id('c')],
        [id('b'), id('d')],
      ]),
    )
  })

  it('trusts nothing when the shapes differ anywhere or one id would pair with two', () => {
    const base = [x(0, 8192, id('c')), x(8192, 8192, null), x(16384, 8192, id('c'), 8192), x(24576, 4096, id('d'))]
    const variants: Extent[][] = [
      base.slice(0, 3),
      base.map((e, i) => (i === 1 ? x(8192, 8192, id('e')) : e)),
      base.map((e, i) => (i === 2 ? x(16384, 8192, id('c'), 0) : e)),
      base.map((e, i) => (i === 3 ? x(24576, 4096, id('d'), 0) : e)).map((e, i) => (i === 3 ? { ...e, length: 4095 } : e)),
      base.map((e, i) => (i === 2 ? x(16384, 8192, id('f'), 8192) : e)),
    ]
    for (const target of variants) expect(extentPairs(source, target)).toBeUndefined()
  })
})
