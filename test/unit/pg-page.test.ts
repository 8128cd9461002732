// src/pg/page.ts against pages a real PostgreSQL wrote with data checksums on: every page of a heap segment, its
// visibility map and free space map, a btree index (15), and the block images of a real 17 incremental file.
// pg_checksums 15 found no bad checksum in the same cluster (pg_checksums-15.txt). Logs throughput.

import { describe, expect, it } from 'vitest'
import { FormatError } from '../../src/errors.js'
import { decodeIncrementalHeader } from '../../src/pg/incremental-file.js'
import { parseLsn } from '../../src/pg/lsn.js'
import { BLOCK_SIZE_BYTES, decodePageHeader, isAllZero, isNewPage, pageChecksum, pageLsn, verifyPageChecksum } from '../../src/pg/page.js'
import { classifyRelationPath, blockNumberBase } from '../../src/pg/relation-path.js'
import { fixture, fixtureText, keyValues, need } from '../fixtures/pg/fixtures.js'

function pages(bytes: Uint8Array): Uint8Array[] {
  expect(bytes.byteLength % BLOCK_SIZE_BYTES).toBe(0)
  return Array.from({ length: bytes.byteLength / BLOCK_SIZE_BYTES }, (_, i) => bytes.subarray(i * BLOCK_SIZE_BYTES, (i + 1) * BLOCK_SIZE_BYTES))
}

const stored = (page: Uint8Array): number => decodePageHeader(page).checksum

describe('pageChecksum', () => {
  it('gives the protocol.md test vectors', () => {
    const page = Uint8Array.from({ length: 8192 }, (_, i) => i & 0xff)
    expect(pageChecksum(page, 0)).toBe(59142)
    expect(pageChecksum(page, 5)).toBe(59147)
    expect(pageChecksum(page, 131072)).toBe(59144)
  })

  it('reproduces pd_checksum of every page of real relation files', () => {
    const rel = keyValues('relation-15.txt')
    const files: [string, Uint8Array, number][] = [
      ['heap', fixture('heap-15.rel.gz'), Number(need(rel, 'heap_blocks'))],
      ['vm', fixture('heap-15.vm.gz'), Number(need(rel, 'vm_blocks'))],
      ['fsm', fixture('heap-15.fsm.gz'), Number(need(rel, 'fsm_blocks'))],
      ['index', fixture('index-15.rel.gz'), Number(need(rel, 'index_blocks'))],
    ]
    let checked = 0
    for (const [kind, bytes, blocks] of files) {
      const ps = pages(bytes)
      expect(ps.length, kind).toBe(blocks)
      ps.forEach((p, blkno) => {
        expect(isNewPage(p), `${kind} ${blkno}`).toBe(false)
        expect(pageChecksum(p, blkno), `${kind} block ${blkno}`).toBe(stored(p))
        expect(verifyPageChecksum(p, blkno)).toBe('ok')
        // The same page as part of another block number fails: the block number is part of the checksum.
        expect(pageChecksum(p, blkno + 1)).not.toBe(stored(p))
        checked++
      })
    }
    expect(checked).toBe(17)
    expect(fixtureText('pg_checksums-15.txt')).toMatch(/Bad checksums:\s+0/)
  })

  it('reproduces pd_checksum of the block images inside a real PostgreSQL 17 INCREMENTAL file', () => {
    const inc = keyValues('incremental-17.txt')
    const file = fixture('incremental-17-heap.gz')
    const h = decodeIncrementalHeader(file)!
    const path = classifyRelationPath(need(inc, 'heap_path'))
    expect(path.kind).toBe('relation')
    const base = path.kind === 'relation' ? blockNumberBase(path.segno) : 0
    h.blockNumbers.forEach((b, i) => {
      const page = file.subarray(h.headerSizeBytes + i * BLOCK_SIZE_BYTES, h.headerSizeBytes + (i + 1) * BLOCK_SIZE_BYTES)
      expect(pageChecksum(page, base + b), `block ${b}`).toBe(stored(page))
    })
  })

  it('works on unaligned views and does not change the page', () => {
    const page = pages(fixture('heap-15.rel.gz'))[3]!
    const before = Uint8Array.from(page)
    for (let shift = 1; shift < 8; shift++) {
      const buf = new Uint8Array(BLOCK_SIZE_BYTES + 8)
      buf.set(page, shift)
      expect(pageChecksum(buf.subarray(shift, shift + BLOCK_SIZE_BYTES), 3)).toBe(stored(page))
    }
    expect(page).toEqual(before)
    expect(() => pageChecksum(page.subarray(0, 4096), 0)).toThrow(FormatError)
  })

  it('measures throughput', () => {
    const n = 8192
    const buf = new Uint8Array(n * BLOCK_SIZE_BYTES)
    for (let i = 0; i < buf.length; i++) buf[i] = Math.imul(i, 2654435761) >>> 24
    let best = Infinity
    let acc = 0
    for (let r = 0; r < 5; r++) {
      const t = process.hrtime.bigint()
      for (let k = 0; k < n; k++) acc ^= pageChecksum(buf.subarray(k * BLOCK_SIZE_BYTES, (k + 1) * BLOCK_SIZE_BYTES), k)
      best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e9)
    }
    expect(acc).toBeGreaterThanOrEqual(0)
    console.log(`pageChecksum throughput: ${(buf.length / 1e6 / best).toFixed(0)} MB/s (${(n / best / 1e3).toFixed(0)}k pages/s)`)
  })
})

describe('page header and verdicts', () => {
  it('decodes real heap and index page headers', () => {
    const heap = pages(fixture('heap-15.rel.gz'))
    for (const p of heap) {
      const h = decodePageHeader(p)
      expect(h.pageSizeVersion).toBe(0x2004)
      expect(h.pageSizeBytes).toBe(8192)
      expect(h.layoutVersion).toBe(4)
      expect(h.special).toBe(8192) // heap pages have no special space
      expect(h.lower).toBeGreaterThan(24)
      expect(h.upper).toBeGreaterThanOrEqual(h.lower)
      expect(h.lsn).toBe(pageLsn(p))
      expect(h.lsn).toBeGreaterThan(0n)
      // VACUUM marked every page all-visible.
      expect(h.flags & 0x4).toBe(0x4)
    }
    // Btree pages keep 16 bytes of special space (BTPageOpaqueData).
    for (const p of pages(fixture('index-15.rel.gz'))) expect(decodePageHeader(p).special).toBe(8192 - 16)
    // Every page was written before the backup started, so its LSN is below the backup start.
    const start = parseLsn(/START WAL LOCATION: (\S+)/.exec(fixtureText('backup_label-15'))![1]!)
    for (const p of heap) expect(pageLsn(p) < start).toBe(true)
  })

  it('applies the new-page and recent-LSN rules before comparing checksums', () => {
    const page = Uint8Array.from(pages(fixture('heap-15.rel.gz'))[2]!)
    const lsn = pageLsn(page)
    expect(verifyPageChecksum(page, 2, lsn + 1n)).toBe('ok')
    expect(verifyPageChecksum(page, 2, lsn)).toBe('recent')
    expect(verifyPageChecksum(page, 5, lsn + 1n)).toBe('bad')
    page[5000] = page[5000]! ^ 1
    expect(verifyPageChecksum(page, 2, lsn + 1n)).toBe('bad')
    expect(verifyPageChecksum(page, 2)).toBe('bad')
    expect(verifyPageChecksum(page, 2, lsn)).toBe('recent')
    const zero = new Uint8Array(BLOCK_SIZE_BYTES)
    expect(isAllZero(zero)).toBe(true)
    expect(isNewPage(zero)).toBe(true)
    expect(verifyPageChecksum(zero, 0, 1n)).toBe('new')
    // pd_upper == 0 is "new" even with other bytes set, as PageIsNew says.
    const newish = new Uint8Array(BLOCK_SIZE_BYTES)
    newish[100] = 1
    expect(isAllZero(newish)).toBe(false)
    expect(verifyPageChecksum(newish, 0, 1n)).toBe('new')
  })

  it('isAllZero looks at every byte, aligned or not', () => {
    const buf = new Uint8Array(BLOCK_SIZE_BYTES + 3)
    for (const at of [0, 1, 2, 3, 4, 8191, 8192, 8193]) {
      buf.fill(0)
      buf[at] = 1
      expect(isAllZero(buf)).toBe(false)
      expect(isAllZero(buf.subarray(1)), `at ${at}`).toBe(at === 0)
    }
    expect(isAllZero(new Uint8Array(0))).toBe(true)
  })
})
