// src/pg/incremental-file.ts on real INCREMENTAL files from a PostgreSQL 17.10 incremental BASE_BACKUP (captured
// with test/fixtures/pg/basebackup-client.mjs: UPLOAD_MANIFEST + BASE_BACKUP INCREMENTAL after a one-row UPDATE).

import { describe, expect, it } from 'vitest'
import { FormatError } from '../../src/errors.js'
import { parseServerManifest } from '../../src/pg/backup-manifest.js'
import {
  INCREMENTAL_MAGIC,
  decodeIncrementalHeader,
  encodeIncrementalFile,
  incrementalFileSize,
  incrementalHeaderBytesNeeded,
  incrementalHeaderSize,
} from '../../src/pg/incremental-file.js'
import { BLOCK_SIZE_BYTES, pageChecksum, decodePageHeader } from '../../src/pg/page.js'
import { fixture, keyValues, need } from '../fixtures/pg/fixtures.js'

describe('real incremental files', () => {
  it('decodes the heap file of the updated table', () => {
    const facts = keyValues('incremental-17.txt')
    const file = fixture('incremental-17-heap.gz')
    const h = decodeIncrementalHeader(file)!
    // UPDATE … WHERE id = 1 (a full page, fillfactor 100): the old version's page 0 gets xmax, the new version
    // lands on the page the server reported as its ctid.
    const newBlock = Number(/^\((\d+),\d+\)$/.exec(need(facts, 'new_ctid'))![1])
    expect(Array.from(h.blockNumbers)).toEqual([0, newBlock])
    expect(h.blockCount).toBe(2)
    expect(h.truncationBlockLength).toBe(Number(need(facts, 'heap_blocks')))
    expect(h.headerSizeBytes).toBe(BLOCK_SIZE_BYTES)
    expect(file.byteLength).toBe(incrementalFileSize(2))
    expect(file.subarray(12 + 8, h.headerSizeBytes).every((b) => b === 0)).toBe(true)
    h.blockNumbers.forEach((b, i) => {
      const page = file.subarray(h.headerSizeBytes + i * BLOCK_SIZE_BYTES, h.headerSizeBytes + (i + 1) * BLOCK_SIZE_BYTES)
      expect(pageChecksum(page, b)).toBe(decodePageHeader(page).checksum)
    })
    // Re-encoding the decoded blocks gives the server's bytes.
    const blocks = Array.from(h.blockNumbers, (blockNumber, i) => ({
      blockNumber,
      page: file.subarray(h.headerSizeBytes + i * BLOCK_SIZE_BYTES, h.headerSizeBytes + (i + 1) * BLOCK_SIZE_BYTES),
    }))
    expect(Buffer.compare(Buffer.from(encodeIncrementalFile(blocks, h.truncationBlockLength)), Buffer.from(file))).toBe(0)
  })

  it('decodes a file with no changed block: 12 bytes, no padding', () => {
    const file = fixture('incremental-17-empty')
    expect(file.byteLength).toBe(12)
    const h = decodeIncrementalHeader(file)!
    expect(h).toMatchObject({ blockCount: 0, headerSizeBytes: 12 })
    expect(h.truncationBlockLength).toBeGreaterThan(0)
    expect(Buffer.compare(Buffer.from(encodeIncrementalFile([], h.truncationBlockLength)), Buffer.from(file))).toBe(0)
  })

  it('every INCREMENTAL file of the real manifest has a size the formula allows', () => {
    const m = parseServerManifest(fixture('backup_manifest-17-incremental.gz'))
    const sizes = m.files.filter((f) => /\/INCREMENTAL\./.test(f.path)).map((f) => f.size)
    expect(sizes.length).toBeGreaterThan(100)
    for (const size of sizes) {
      const n = size === 12 ? 0 : (size - incrementalHeaderSize(1)) / BLOCK_SIZE_BYTES // every N here is below 2046, so the header is one block
      expect(incrementalFileSize(n)).toBe(size)
    }
  })
})

describe('header sizes, streaming decode and the encoder', () => {
  it('follows the size formula of protocol.md §7', () => {
    expect(incrementalHeaderSize(0)).toBe(12)
    expect(incrementalHeaderSize(1)).toBe(8192)
    expect(incrementalHeaderSize(2045)).toBe(8192) // 12 + 4·2045 = 8192
    expect(incrementalHeaderSize(2046)).toBe(16384)
    expect(incrementalFileSize(0)).toBe(12)
    expect(incrementalFileSize(3)).toBe(8192 + 3 * 8192)
    expect(incrementalFileSize(2046)).toBe(16384 + 2046 * 8192)
  })

  it('asks for more bytes until the header is complete', () => {
    const page = (b: number): Uint8Array => new Uint8Array(BLOCK_SIZE_BYTES).fill(b)
    const blocks = Array.from({ length: 2100 }, (_, i) => ({ blockNumber: i * 3, page: page(i & 0xff) }))
    const file = encodeIncrementalFile(blocks, 7000)
    expect(file.byteLength).toBe(incrementalFileSize(2100))
    expect(new DataView(file.buffer).getUint32(0, true)).toBe(INCREMENTAL_MAGIC)
    expect(incrementalHeaderBytesNeeded(file.subarray(0, 5))).toBe(12)
    expect(incrementalHeaderBytesNeeded(file.subarray(0, 12))).toBe(16384)
    expect(decodeIncrementalHeader(file.subarray(0, 11))).toBeUndefined()
    expect(decodeIncrementalHeader(file.subarray(0, 16383))).toBeUndefined()
    const h = decodeIncrementalHeader(file.subarray(0, 16384))!
    expect(h.blockCount).toBe(2100)
    expect(h.truncationBlockLength).toBe(7000)
    expect(h.blockNumbers[2099]).toBe(6297)
    expect(file[h.headerSizeBytes + 5 * BLOCK_SIZE_BYTES]).toBe(5)
  })

  it('rejects what pg_combinebackup rejects', () => {
    const good = encodeIncrementalFile(
      [
        { blockNumber: 1, page: new Uint8Array(8192) },
        { blockNumber: 4, page: new Uint8Array(8192) },
      ],
      5,
    )
    const mutate = (off: number, value: number): Uint8Array => {
      const b = Uint8Array.from(good)
      new DataView(b.buffer).setUint32(off, value, true)
      return b
    }
    expect(() => decodeIncrementalHeader(mutate(0, 0xd3ae1f0e))).toThrow(/magic/)
    expect(() => decodeIncrementalHeader(mutate(4, 131073))).toThrow(/block count/)
    expect(() => decodeIncrementalHeader(mutate(8, 131073))).toThrow(/truncation/)
    expect(() => decodeIncrementalHeader(mutate(16, 1))).toThrow(/ascending/)
    expect(() => decodeIncrementalHeader(mutate(16, 131072))).toThrow(/beyond/)
    expect(() =>
      encodeIncrementalFile(
        [
          { blockNumber: 2, page: new Uint8Array(8192) },
          { blockNumber: 2, page: new Uint8Array(8192) },
        ],
        3,
      ),
    ).toThrow(FormatError)
    expect(() => encodeIncrementalFile([{ blockNumber: 2, page: new Uint8Array(100) }], 3)).toThrow(FormatError)
  })
})
