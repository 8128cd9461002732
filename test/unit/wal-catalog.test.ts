// The WAL catalog's keys and its write rule: idempotent for equal content (however it is represented), an
// IntegrityError for different content under one name; reading verifies length and CRC.

import { afterEach, describe, expect, it } from 'vitest'
import { IntegrityError } from '../../src/errors.js'
import { crc32c, crc32cHexLE } from '../../src/pg/crc32c.js'
import {
  backupHistoryKey,
  findSegmentRecord,
  historyKey,
  parseWalKey,
  partialKey,
  readSegmentBytes,
  readWalContent,
  segmentKey,
  type WalSegmentRecord,
  writeWalRecord,
} from '../../src/repo/wal-catalog.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'

const SYS = '7000000000000000001'

describe('WAL catalog keys', () => {
  it('formats and parses every kind of key', () => {
    expect(segmentKey(SYS, '000000010000000A000000FF')).toBe(`${SYS}/000000010000000A000000FF`)
    expect(partialKey(SYS, '000000010000000000000003', 0x1234)).toBe(`${SYS}/000000010000000000000003.partial.00001234`)
    expect(historyKey(SYS, 0x1a)).toBe(`${SYS}/0000001A.history`)
    expect(parseWalKey(`${SYS}/000000020000000000000003`)).toEqual({ kind: 'segment', systemId: SYS, name: '000000020000000000000003', tli: 2 })
    expect(parseWalKey(`${SYS}/000000010000000000000003.partial.00FF0000`)).toEqual({
      kind: 'partial',
      systemId: SYS,
      name: '000000010000000000000003',
      tli: 1,
      validBytes: 0xff0000,
    })
    expect(parseWalKey(`${SYS}/0000001A.history`)).toEqual({ kind: 'history', systemId: SYS, name: '0000001A.history', tli: 26 })
    const b = backupHistoryKey(SYS, '000000010000000000000002.00000028.backup')
    expect(parseWalKey(b)).toEqual({ kind: 'backup', systemId: SYS, name: '000000010000000000000002.00000028.backup', tli: 1 })
    for (const foreign of [
      `${SYS}/00000001000000000000000`,
      `${SYS}/000000010000000000000003.partial`,
      'x/000000010000000000000003',
      `${SYS}/000000010000000000000003.tmp`,
    ]) {
      expect(parseWalKey(foreign), foreign).toBeUndefined()
    }
  })
})

describe('WAL records', () => {
  let r: TestRepo
  afterEach(async () => r?.close())

  const bytesOf = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff))
  async function recordOf(valid: Buffer, o: { inlineFrom?: number } = {}): Promise<WalSegmentRecord> {
    const cut = o.inlineFrom ?? valid.length
    const head = valid.subarray(0, cut)
    const pieces: WalSegmentRecord['pieces'] = head.length > 0 ? [[(await r.repo.putBlob('data', head)).id, head.length]] : []
    return {
      name: '000000010000000000000003',
      timeline: 1,
      segno: '3',
      segmentSizeBytes: 1 << 20,
      validBytes: valid.length,
      partial: true,
      crc32c: crc32cHexLE(crc32c(valid)),
      pieces,
      ...(cut < valid.length ? { tail: valid.subarray(cut).toString('base64') } : {}),
    }
  }

  it('stores once, accepts the same content again, also in another representation, and rejects other content', async () => {
    r = await freshFsRepo()
    const valid = bytesOf(5000, 1)
    const key = partialKey(SYS, '000000010000000000000003', valid.length)
    expect(await writeWalRecord(r.repo, key, await recordOf(valid))).toBe('stored')
    expect(await writeWalRecord(r.repo, key, await recordOf(valid))).toBe('exists')
    // Same bytes, the last 1000 inline (as a synchronous streamer writes them): still the same content.
    expect(await writeWalRecord(r.repo, key, await recordOf(valid, { inlineFrom: 4000 }))).toBe('exists')
    const other = bytesOf(5000, 2)
    await expect(writeWalRecord(r.repo, key, await recordOf(other))).rejects.toThrow(IntegrityError)
  })

  it('reads back pieces and inline tail, verified; finds the longest partial when no complete record exists', async () => {
    r = await freshFsRepo()
    const valid = bytesOf(7000, 3) // the same generator as `more` below: a prefix of it
    await writeWalRecord(r.repo, partialKey(SYS, '000000010000000000000003', 3000), await recordOf(valid.subarray(0, 3000)))
    await writeWalRecord(r.repo, partialKey(SYS, '000000010000000000000003', 7000), await recordOf(valid, { inlineFrom: 2000 }))
    const found = (await findSegmentRecord(r.repo, SYS, '000000010000000000000003'))!
    expect(found.validBytes).toBe(7000)
    expect((await readWalContent(r.repo, found)).equals(valid)).toBe(true)
    // A record built on another (a synchronous streamer's levels): content = the base's, then its own tail.
    const more = bytesOf(9000, 3)
    const built: WalSegmentRecord = {
      ...found,
      validBytes: 9000,
      crc32c: crc32cHexLE(crc32c(more)),
      pieces: [],
      base: partialKey(SYS, '000000010000000000000003', 7000),
      tail: more.subarray(7000).toString('base64'),
    }
    expect((await readWalContent(r.repo, built)).equals(more)).toBe(true)
    const orphan = { ...built, base: partialKey(SYS, '000000010000000000000003', 7001) }
    await expect(readWalContent(r.repo, orphan)).rejects.toMatchObject({ code: 'NOT_FOUND', retryable: true })
    const damaged = { ...found, crc32c: '00000000' }
    await expect(readWalContent(r.repo, damaged)).rejects.toThrow(IntegrityError)
    expect(await findSegmentRecord(r.repo, SYS, '000000010000000000000004')).toBeUndefined()
  })

  it('reads into a buffer it is given, overwriting every byte (a piece of zeros, the padding), through a reader kept open', async () => {
    r = await freshFsRepo()
    const data = bytesOf(3000, 5)
    const valid = Buffer.concat([data, Buffer.alloc(2000), data.subarray(0, 500)])
    const rec: WalSegmentRecord = {
      ...(await recordOf(valid)),
      pieces: [
        [(await r.repo.putBlob('data', data)).id, 3000],
        [null, 2000],
      ],
      tail: data.subarray(0, 500).toString('base64'),
    }
    // A used buffer: nothing of what it held may show through.
    const used = Buffer.alloc(rec.segmentSizeBytes, 0xaa)
    const reader = r.repo.openBlobReader({ workers: 0 })
    try {
      for (let round = 0; round < 2; round++) {
        const got = await readSegmentBytes(r.repo, rec, { into: (n) => (n === used.length ? used : Buffer.alloc(0)), reader })
        expect(got).toBe(used)
        expect(got.subarray(0, valid.length).equals(valid)).toBe(true)
        expect(got.subarray(valid.length).equals(Buffer.alloc(rec.segmentSizeBytes - valid.length))).toBe(true)
        used.fill(0xaa)
      }
      const content = Buffer.alloc(valid.length, 0xbb)
      expect(await readWalContent(r.repo, rec, { into: () => content, reader })).toBe(content)
      expect(content.equals(valid)).toBe(true)
      // A buffer of another length is a caller's mistake, said at once.
      await expect(readWalContent(r.repo, rec, { into: () => Buffer.alloc(10) })).rejects.toThrow(RangeError)
    } finally {
      await reader.close()
    }
  })
})
