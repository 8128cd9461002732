// src/pg/wal-page.ts against the first page of a real WAL segment from each of PostgreSQL 14–19: confirms the
// XLOG_PAGE_MAGIC table and the long header layout.

import { describe, expect, it } from 'vitest'
import { FormatError } from '../../src/errors.js'
import { parseSizeSetting } from '../../src/pg/lsn.js'
import {
  XLOG_PAGE_MAGIC,
  XLP_LONG_HEADER,
  assertSegmentHeader,
  checkSegmentHeader,
  decodeWalLongPageHeader,
  decodeWalPageHeader,
  majorOfWalPageMagic,
} from '../../src/pg/wal-page.js'
import { parseWalFileName } from '../../src/pg/wal-names.js'
import { MAJORS, facts, fixture, fixtureNames, need } from '../fixtures/pg/fixtures.js'

function segmentFixture(major: number): { name: string; page: Uint8Array } {
  const [file] = fixtureNames(new RegExp(`^wal-${major}-[0-9A-F]{24}\\.page\\.gz$`))
  if (file === undefined) throw new Error(`no WAL fixture for ${major}`)
  return { name: file.slice(`wal-${major}-`.length, -'.page.gz'.length), page: fixture(file) }
}

describe('WAL long page header of real segments', () => {
  for (const major of MAJORS) {
    it(`PostgreSQL ${major}: magic, system id, segment size, page address`, () => {
      const f = facts(major)
      const { name, page } = segmentFixture(major)
      const segSize = parseSizeSetting(need(f, 'wal_segment_size'))
      const { tli, segno } = parseWalFileName(name, segSize) as { tli: number; segno: bigint }
      const h = decodeWalLongPageHeader(page)
      expect(h.magic).toBe(XLOG_PAGE_MAGIC[major])
      expect(majorOfWalPageMagic(h.magic)).toBe(major)
      expect(h.info & XLP_LONG_HEADER).toBe(XLP_LONG_HEADER)
      expect(h.systemId).toBe(BigInt(need(f, 'system_identifier')))
      expect(h.segSizeBytes).toBe(segSize)
      expect(h.blockSizeBytes).toBe(Number(need(f, 'wal_block_size')))
      expect(h.pageAddr).toBe(segno * BigInt(segSize))
      expect(h.tli).toBe(tli)
      const expect_ = { segno, segSizeBytes: segSize, systemId: h.systemId, major, tli }
      expect(checkSegmentHeader(page, expect_)).toEqual([])
      expect(checkSegmentHeader(page, { ...expect_, major: undefined })).toEqual([])
      expect(() => assertSegmentHeader(page, expect_, name)).not.toThrow()
    })
  }

  it('matches the protocol.md table, including the value for 13 from the source', () => {
    expect(XLOG_PAGE_MAGIC).toEqual({ 13: 0xd106, 14: 0xd10d, 15: 0xd110, 16: 0xd113, 17: 0xd116, 18: 0xd118, 19: 0xd122 })
  })

  it('allows the xlp_info flags of each major: 0x8 is valid up to 18 and invalid on 19', () => {
    for (const major of [18, 19]) {
      const { name, page } = segmentFixture(major)
      const h = decodeWalLongPageHeader(page)
      const { segno } = parseWalFileName(name, 16 << 20) as { segno: bigint }
      const expect_ = { segno, segSizeBytes: 16 << 20, systemId: h.systemId, tli: 1 }
      const flagged = Uint8Array.from(page)
      flagged[2] = flagged[2]! | 0x8
      // Checked against the major asked for, and (no major given) against the major the magic names.
      for (const m of [major, undefined]) {
        const problems = checkSegmentHeader(flagged, { ...expect_, major: m })
        if (major === 18) expect(problems).toEqual([])
        else expect(problems).toEqual(['invalid xlp_info flags 0xA'])
      }
      // 0x4 is XLP_BKP_REMOVABLE up to 18 and XLP_FIRST_IS_OVERWRITE_CONTRECORD on 19: valid on both.
      const four = Uint8Array.from(page)
      four[2] = four[2]! | 0x4
      expect(checkSegmentHeader(four, { ...expect_, major })).toEqual([])
    }
  })

  it('reports every mismatch', () => {
    const { name, page } = segmentFixture(17)
    const h = decodeWalLongPageHeader(page)
    const good = { segno: 1n, segSizeBytes: 16 << 20, systemId: h.systemId, major: 17, tli: 1 }
    expect(parseWalFileName(name, 16 << 20)).toMatchObject({ segno: 1n })
    expect(checkSegmentHeader(page, { ...good, major: 16 })).toEqual(["magic 0xD116 is not the PostgreSQL 16 magic 0xD113 (it is PostgreSQL 17's)"])
    expect(checkSegmentHeader(page, { ...good, segno: 2n })[0]).toMatch(/page address/)
    expect(checkSegmentHeader(page, { ...good, systemId: 1n })[0]).toMatch(/system identifier/)
    expect(checkSegmentHeader(page, { ...good, segSizeBytes: 1 << 30 }).join()).toMatch(/segment size/)
    expect(checkSegmentHeader(page, { ...good, blockSizeBytes: 16384 })[0]).toMatch(/WAL block size/)
    // A file of timeline 2 may begin with pages of its parent; the reverse is a problem.
    expect(checkSegmentHeader(page, { ...good, tli: 2 })).toEqual([])
    const tli2 = Uint8Array.from(page)
    tli2[4] = 2
    expect(checkSegmentHeader(tli2, good)[0]).toMatch(/timeline 2 is above/)
    const short = Uint8Array.from(page)
    short[2] = 0
    expect(checkSegmentHeader(short, good)[0]).toMatch(/long header flag/)
    expect(checkSegmentHeader(new Uint8Array(8192), good)).toEqual(['segment header is all zeros'])
    expect(checkSegmentHeader(page.subarray(0, 39), good)[0]).toMatch(/needs 40 bytes/)
    expect(() => assertSegmentHeader(page, { ...good, systemId: 1n }, name)).toThrow(FormatError)
  })

  it('decodes the short header alone', () => {
    const { page } = segmentFixture(15)
    const h = decodeWalPageHeader(page.subarray(0, 24))
    expect(h.magic).toBe(0xd110)
    expect(() => decodeWalPageHeader(page.subarray(0, 23))).toThrow(FormatError)
    expect(() => decodeWalLongPageHeader(page.subarray(0, 24))).toThrow(FormatError)
  })
})
