// src/pg/wal-names.ts against file names real servers wrote (pg_wal listing after two timeline switches, the
// backup history file, pg_walfile_name()).

import { randomInt } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { FormatError } from '../../src/errors.js'
import { parseBackupLabel } from '../../src/pg/backup-label.js'
import {
  backupHistoryFileName,
  historyFileName,
  isBackupHistoryFileName,
  isHistoryFileName,
  isPartialWalName,
  isWalSegmentName,
  parseWalFileName,
  walFileName,
} from '../../src/pg/wal-names.js'
import { fixtureNames, fixtureText } from '../fixtures/pg/fixtures.js'

const MB16 = 16 * 1024 * 1024

describe('WAL file names', () => {
  it('formats segment names like XLogFileName', () => {
    expect(walFileName(1, 3n, MB16)).toBe('000000010000000000000003')
    expect(walFileName(2, 256n, MB16)).toBe('000000020000000100000000')
    expect(walFileName(0x1a, 0x1ffn, MB16)).toBe('0000001A00000001000000FF')
    // 1 GB segments: 4 per xlogid; 64 MB: 64 per xlogid.
    expect(walFileName(1, 5n, 1 << 30)).toBe('000000010000000100000001')
    expect(walFileName(1, 65n, 64 << 20)).toBe('000000010000000100000001')
    expect(() => walFileName(0, 1n, MB16)).toThrow(FormatError)
    expect(() => walFileName(1, -1n, MB16)).toThrow(FormatError)
  })

  it('classifies every name of a real pg_wal after two timeline switches', () => {
    const names = fixtureText('pg_wal-listing-15.txt')
      .split('\n')
      .filter((n) => n !== '' && n !== 'archive_status')
    const parsed = names.map((n) => parseWalFileName(n, MB16))
    expect(parsed).toContainEqual({ kind: 'history', tli: 2 })
    expect(parsed).toContainEqual({ kind: 'history', tli: 3 })
    expect(parsed).toContainEqual({ kind: 'partial', tli: 2, segno: 4n })
    expect(parsed).toContainEqual({ kind: 'backup', tli: 1, segno: 2n, offsetBytes: 0x28 })
    for (const [i, p] of parsed.entries()) {
      const name = names[i]!
      expect(isWalSegmentName(name)).toBe(p.kind === 'segment')
      expect(isPartialWalName(name)).toBe(p.kind === 'partial')
      expect(isHistoryFileName(name)).toBe(p.kind === 'history')
      expect(isBackupHistoryFileName(name)).toBe(p.kind === 'backup')
      if (p.kind === 'segment') expect(walFileName(p.tli, p.segno, MB16)).toBe(name)
      if (p.kind === 'partial') expect(`${walFileName(p.tli, p.segno, MB16)}.partial`).toBe(name)
      if (p.kind === 'history') expect(historyFileName(p.tli)).toBe(name)
    }
  })

  it('names the backup history file after the backup start, as the server did', () => {
    const [name] = fixtureNames(/\.backup$/)
    const label = parseBackupLabel(fixtureText(name!))
    expect(backupHistoryFileName(label.startTimeline!, label.startLsn, MB16)).toBe(name)
  })

  it('round-trips random names (property)', () => {
    for (let i = 0; i < 2000; i++) {
      const segSize = 2 ** randomInt(20, 31)
      const tli = randomInt(1, 2 ** 32 - 1)
      const segno = BigInt(randomInt(0, 2 ** 48 - 1)) % ((1n << 32n) * (0x1_0000_0000n / BigInt(segSize)))
      const name = walFileName(tli, segno, segSize)
      expect(name).toMatch(/^[0-9A-F]{24}$/)
      expect(parseWalFileName(name, segSize)).toEqual({ kind: 'segment', tli, segno })
      expect(parseWalFileName(`${name}.partial`, segSize)).toEqual({ kind: 'partial', tli, segno })
    }
  })

  it('rejects other names, lower case, timeline 0 and names that do not fit the segment size', () => {
    for (const bad of [
      '00000001000000000000000',
      '000000010000000000000003.gz',
      '000000010000000000000003.partial.gz',
      '00000001000000000000000a',
      '00000002.HISTORY',
      '2.history',
      '000000000000000000000003',
      'archive_status',
      '000000010000000000000003.28.backup',
    ]) {
      expect(() => parseWalFileName(bad, MB16), bad).toThrow(FormatError)
    }
    // Low part 0x100 is not a valid 16 MB segment (256 per xlogid): it would alias segment 1/0.
    expect(() => parseWalFileName('000000010000000000000100', MB16)).toThrow(FormatError)
    expect(parseWalFileName('000000010000000000000100', 1 << 20)).toEqual({ kind: 'segment', tli: 1, segno: 0x100n })
  })
})
