// src/pg/crc32c.ts against published CRC-32C vectors (RFC 3720 B.4) and the checksums a real PostgreSQL 15 and 17
// wrote into backup_manifest for files whose bytes are fixtures. Logs throughput (no timing assertion).

import { describe, expect, it } from 'vitest'
import { crc32c, crc32cCombine, crc32cFinal, crc32cHexLE, crc32cInit, crc32cJoiner, crc32cUpdate, Crc32c } from '../../src/pg/crc32c.js'
import { parseServerManifest } from '../../src/pg/backup-manifest.js'
import { fixture, keyValues, need } from '../fixtures/pg/fixtures.js'

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s)

describe('crc32c', () => {
  it('gives the standard check value and the RFC 3720 test vectors', () => {
    expect(crc32c(ascii('123456789'))).toBe(0xe3069283)
    expect(crc32c(new Uint8Array(0))).toBe(0)
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa)
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43)
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e)
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c)
  })

  it('formats CRCs as backup_manifest does (little-endian bytes)', () => {
    expect(crc32cHexLE(0x87208743)).toBe('43872087')
    expect(crc32cHexLE(0)).toBe('00000000')
    expect(crc32cHexLE(0xe3069283)).toBe('839206e3')
  })

  it('reproduces the CRCs PostgreSQL put in real manifests', () => {
    const m15 = parseServerManifest(fixture('backup_manifest-15.gz'))
    const m17 = parseServerManifest(fixture('backup_manifest-17-incremental.gz'))
    const rel = keyValues('relation-15.txt')
    const heap = need(rel, 'heap_path')
    const inc = keyValues('incremental-17.txt')
    const incHeap = need(inc, 'heap_path').replace(/(\d+)$/, 'INCREMENTAL.$1')
    const cases: [typeof m15, string, Uint8Array][] = [
      [m15, 'backup_label', fixture('backup_label-15')],
      [m15, 'tablespace_map', fixture('tablespace_map-15')],
      [m15, 'PG_VERSION', fixture('PG_VERSION-15')],
      [m15, heap, fixture('heap-15.rel.gz')],
      [m15, `${heap}_vm`, fixture('heap-15.vm.gz')],
      [m15, `${heap}_fsm`, fixture('heap-15.fsm.gz')],
      [m15, need(rel, 'index_path'), fixture('index-15.rel.gz')],
      [m17, 'backup_label', fixture('backup_label-17-incremental')],
      [m17, incHeap, fixture('incremental-17-heap.gz')],
      [m17, need(inc, 'empty_incremental'), fixture('incremental-17-empty')],
    ]
    for (const [m, path, bytes] of cases) {
      const entry = m.files.find((f) => f.path === path)
      expect(entry, path).toBeDefined()
      expect(entry!.size, path).toBe(bytes.byteLength)
      expect(entry!.checksumAlgorithm).toBe('CRC32C')
      expect(crc32cHexLE(crc32c(bytes)), path).toBe(entry!.checksum)
    }
  })

  it('gives the same CRC for any split into chunks and any alignment', () => {
    const data = fixture('heap-15.rel.gz').subarray(0, 20000)
    const whole = crc32c(data)
    for (const split of [1, 3, 7, 8, 9, 31, 32, 33, 4095, 8192, 19999]) {
      let s = crc32cInit()
      s = crc32cUpdate(s, data.subarray(0, split))
      s = crc32cUpdate(s, data.subarray(split))
      expect(crc32cFinal(s), `split ${split}`).toBe(whole)
    }
    const c = new Crc32c()
    for (let off = 0; off < data.length; off += 777) c.update(data.subarray(off, off + 777))
    expect(c.digest()).toBe(whole)
    for (let shift = 1; shift < 8; shift++) {
      const buf = new Uint8Array(data.length + 8)
      buf.set(data, shift)
      expect(crc32c(buf.subarray(shift, shift + data.length)), `offset ${shift}`).toBe(whole)
    }
    // Against a bytewise reference for many lengths (exercises the head/tail paths).
    for (let n = 0; n < 80; n++) expect(crc32c(data.subarray(3, 3 + n))).toBe(bitwise(data.subarray(3, 3 + n)))
  })

  it('combines the CRCs of two pieces into the CRC of their concatenation', () => {
    expect(crc32cCombine(crc32c(ascii('1234')), crc32c(ascii('56789')), 5)).toBe(0xe3069283)
    const data = fixture('heap-15.rel.gz')
    const whole = crc32c(data)
    for (const split of [0, 1, 7, 8, 4096, 8191, 8192, 65537, data.length - 1, data.length]) {
      const a = data.subarray(0, split)
      const b = data.subarray(split)
      expect(crc32cCombine(crc32c(a), crc32c(b), b.length), `split ${split}`).toBe(whole)
    }
    // An empty second piece changes nothing; an empty first piece leaves the second's CRC.
    expect(crc32cCombine(whole, 0, 0)).toBe(whole)
    expect(crc32cCombine(0, whole, data.length)).toBe(whole)
    // Left to right over 1 MiB windows and a short tail, as ingest joins the CRCs its workers computed.
    const big = new Uint8Array((3 << 20) + 12345)
    for (let i = 0; i < big.length; i++) big[i] = Math.imul(i + 17, 2654435761) >>> 24
    let joined = 0
    for (let off = 0; off < big.length; off += 1 << 20) {
      const w = big.subarray(off, off + (1 << 20))
      joined = crc32cCombine(joined, crc32c(w), w.length)
    }
    expect(joined).toBe(crc32c(big))
    expect(joined).toBe(bitwise(big))
  })

  it('joins the CRCs of pieces of one length as crc32cCombine does: a file from its pages', () => {
    const page = 8192
    const join = crc32cJoiner(page)
    const data = fixture('heap-15.rel.gz')
    const pages = Math.floor(data.length / page)
    expect(pages).toBeGreaterThan(1)
    let joined = 0
    for (let p = 0; p < pages; p++) joined = join(joined, crc32c(data.subarray(p * page, (p + 1) * page)))
    expect(joined).toBe(crc32c(data.subarray(0, pages * page)))
    // Every bit of the first CRC reaches the result through its byte's table, as through the combine.
    for (let bit = 0; bit < 32; bit++) {
      const a = (1 << bit) >>> 0
      expect(join(a, 0x1234abcd), `bit ${bit}`).toBe(crc32cCombine(a, 0x1234abcd, page))
    }
    expect(join(0, 0xdeadbeef)).toBe(0xdeadbeef)
    const odd = crc32cJoiner(5)
    expect(odd(crc32c(ascii('1234')), crc32c(ascii('56789')))).toBe(0xe3069283)
  })

  it('combines past 2^31 bytes (a relation segment is up to 1 GiB, a plain file can be larger)', () => {
    // CRC of X ‖ 2^31 + 4099 zero bytes, streamed for real, against the combination with the zeros' CRC.
    const x = ascii('pgkeep')
    const zeros = new Uint8Array(64 << 20)
    const length = 2 ** 31 + 4099
    let whole = crc32cUpdate(crc32cInit(), x)
    let onlyZeros = crc32cInit()
    for (let left = length; left > 0; left -= zeros.length) {
      const piece = zeros.subarray(0, Math.min(zeros.length, left))
      whole = crc32cUpdate(whole, piece)
      onlyZeros = crc32cUpdate(onlyZeros, piece)
    }
    expect(crc32cCombine(crc32c(x), crc32cFinal(onlyZeros), length)).toBe(crc32cFinal(whole))
    expect(() => crc32cCombine(0, 0, -1)).toThrow(RangeError)
  }, 60_000)

  it('measures throughput', () => {
    const buf = new Uint8Array(64 << 20)
    for (let i = 0; i < buf.length; i++) buf[i] = Math.imul(i, 2654435761) >>> 24
    crc32c(buf.subarray(0, 1 << 20)) // warm up
    const best = (f: () => void): number => {
      let min = Infinity
      for (let r = 0; r < 6; r++) {
        const t = process.hrtime.bigint()
        f()
        min = Math.min(min, Number(process.hrtime.bigint() - t) / 1e9)
      }
      return min
    }
    const whole = best(() => crc32c(buf))
    const perPage = best(() => {
      let s = crc32cInit()
      for (let o = 0; o < buf.length; o += 8192) s = crc32cUpdate(s, buf.subarray(o, o + 8192))
      crc32cFinal(s)
    })
    console.log(
      `crc32c throughput: ${(buf.length / 1e6 / whole).toFixed(0)} MB/s (64 MiB buffer), ` + `${(buf.length / 1e6 / perPage).toFixed(0)} MB/s (8 KiB updates)`,
    )
  })
})

function bitwise(data: Uint8Array): number {
  let crc = 0xffffffff
  for (const b of data) {
    crc ^= b
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1
  }
  return (crc ^ 0xffffffff) >>> 0
}
