// BlobCodec's choice of zstd level (src/repo/blob.ts): a window whose first 64 KiB barely shrink at the
// repository's level is compressed at zstd's fast level -7; compressible windows and small blobs keep the
// repository's level. Compared byte for byte with zstd's own frames at each level (one-shot compression is
// deterministic), and every blob decodes back to its bytes.

import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import zstdBinding from 'zstd-napi/binding.js'
import { BlobCodec, BlobFlags } from '../../src/repo/blob.js'

/** zstd's one-shot frame of `plain` at `level`. */
function frameAt(plain: Buffer, level: number): Buffer {
  const dst = Buffer.alloc(plain.length + 1024)
  return Buffer.from(dst.subarray(0, new zstdBinding.CCtx().compress(dst, plain, level)))
}

/** `pages` 8 KiB pages like a table of random values: a small header, random rows, a gap of zeros (about 90% at level 1). */
function hardPages(pages: number): Buffer {
  const b = Buffer.alloc(pages * 8192)
  for (let p = 0; p < pages; p++) {
    b.writeUInt32LE(p, p * 8192)
    randomBytes(7400).copy(b, p * 8192 + 600)
  }
  return b
}

/** Text-like rows that compress well at any level. */
function easyPages(bytes: number): Buffer {
  const rows: string[] = []
  for (let i = 0; rows.length * 100 < bytes; i++) rows.push(`${String(i).padStart(12, '0')}|${'account '.repeat(10)}|${i % 97}\n`.slice(0, 100))
  return Buffer.from(rows.join('')).subarray(0, bytes)
}

describe('BlobCodec zstd level', () => {
  const codec = new BlobCodec(undefined, 1)

  function roundTrip(plain: Buffer): Buffer {
    const { stored, flags } = codec.encode(plain)
    const copy = Buffer.from(stored)
    expect(codec.decode(copy, flags, plain.length, codec.idOf(plain), 'test').equals(plain)).toBe(true)
    expect(flags & BlobFlags.ZSTD).toBe(BlobFlags.ZSTD)
    return copy
  }

  it('a window of data that barely compresses is stored at level -7, a few percent larger than at level 1', () => {
    const plain = hardPages(128)
    const stored = roundTrip(plain)
    expect(stored.equals(frameAt(plain, -7))).toBe(true)
    const atOne = frameAt(plain, 1)
    expect(stored.equals(atOne)).toBe(false)
    expect(atOne.length / plain.length).toBeGreaterThan(0.8)
    expect(stored.length / atOne.length).toBeLessThan(1.05)
  })

  it('a compressible window keeps the repository level', () => {
    const plain = easyPages(1 << 20)
    expect(roundTrip(plain).equals(frameAt(plain, 1))).toBe(true)
  })

  it('a window whose start compresses keeps the repository level, whatever follows', () => {
    const plain = Buffer.concat([easyPages(64 << 10), hardPages(120)])
    expect(roundTrip(plain).equals(frameAt(plain, 1))).toBe(true)
  })

  it('a small blob of such data keeps the repository level (no probe below 256 KiB)', () => {
    const plain = hardPages(16)
    expect(roundTrip(plain).equals(frameAt(plain, 1))).toBe(true)
  })

  it('random bytes that do not shrink at all are stored as they are', () => {
    const plain = randomBytes(1 << 20)
    const { stored, flags } = codec.encode(plain)
    expect(flags & BlobFlags.ZSTD).toBe(0)
    expect(Buffer.from(stored).equals(plain)).toBe(true)
  })
})
