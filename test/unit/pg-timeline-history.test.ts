// src/pg/timeline-history.ts on the history files a real 15 server wrote when archive recovery ended twice.

import { describe, expect, it } from 'vitest'
import { FormatError } from '../../src/errors.js'
import { formatTimelineHistory, parseTimelineHistory, timelineOfLsn, timelineRanges, timelineSwitchPoint } from '../../src/pg/timeline-history.js'
import { parseWalFileName } from '../../src/pg/wal-names.js'
import { segmentNumber } from '../../src/pg/lsn.js'
import { fixture, fixtureText } from '../fixtures/pg/fixtures.js'

const MB16 = 16 << 20

describe('timeline history files', () => {
  it('parses real files and formats them back byte for byte (blank line between inherited entries)', () => {
    const two = fixtureText('00000002.history')
    const three = fixtureText('00000003.history')
    const h2 = parseTimelineHistory(two)
    const h3 = parseTimelineHistory(fixture('00000003.history'))
    expect(h2).toEqual([{ parentTli: 1, switchLsn: h2[0]!.switchLsn, reason: 'no recovery target specified' }])
    expect(h3).toHaveLength(2)
    expect(h3[0]).toEqual(h2[0])
    expect(h3[1]!.parentTli).toBe(2)
    expect(h3[1]!.switchLsn > h3[0]!.switchLsn).toBe(true)
    expect(three).toContain('\n\n')
    expect(formatTimelineHistory(h2)).toBe(two)
    expect(formatTimelineHistory(h3)).toBe(three)
  })

  it('agrees with the partial segment the server left when timeline 2 ended', () => {
    const h3 = parseTimelineHistory(fixtureText('00000003.history'))
    const partial = fixtureText('pg_wal-listing-15.txt')
      .split('\n')
      .filter((n) => n.endsWith('.partial'))
      .map((n) => parseWalFileName(n, MB16))
    expect(partial).toContainEqual({ kind: 'partial', tli: 2, segno: segmentNumber(timelineSwitchPoint(h3, 2, 3)!, MB16) })
  })

  it('answers which timeline holds an LSN', () => {
    const h3 = parseTimelineHistory(fixtureText('00000003.history'))
    const [s1, s2] = [h3[0]!.switchLsn, h3[1]!.switchLsn]
    expect(timelineOfLsn(h3, 0n, 3)).toBe(1)
    expect(timelineOfLsn(h3, s1 - 1n, 3)).toBe(1)
    expect(timelineOfLsn(h3, s1, 3)).toBe(2)
    expect(timelineOfLsn(h3, s2 - 1n, 3)).toBe(2)
    expect(timelineOfLsn(h3, s2, 3)).toBe(3)
    expect(timelineOfLsn([], 123n, 1)).toBe(1)
    expect(timelineRanges(h3, 3)).toEqual([
      { tli: 1, beginLsn: 0n, endLsn: s1 },
      { tli: 2, beginLsn: s1, endLsn: s2 },
      { tli: 3, beginLsn: s2, endLsn: undefined },
    ])
    expect(timelineSwitchPoint(h3, 1, 3)).toBe(s1)
    expect(timelineSwitchPoint(h3, 3, 3)).toBeUndefined()
    expect(() => timelineSwitchPoint(h3, 4, 3)).toThrow(FormatError)
    expect(() => timelineRanges(h3, 2)).toThrow(FormatError)
  })

  it('skips comments and white space, rejects bad lines and non-increasing timelines', () => {
    expect(parseTimelineHistory('# comment\n\n  1\t0/3000000\tat restore point "x"\t2\n2\t0/4000000\n')).toEqual([
      { parentTli: 1, switchLsn: 0x3000000n, reason: 'at restore point "x"\t2' },
      { parentTli: 2, switchLsn: 0x4000000n, reason: '' },
    ])
    for (const bad of ['1\n', 'x\t0/1\tr\n', '1\t0/1\tr\n1\t0/2\tr\n', '2\t0/1\tr\n1\t0/2\tr\n', '0\t0/1\tr\n', '1\tzz\tr\n']) {
      expect(() => parseTimelineHistory(bad), JSON.stringify(bad)).toThrow(FormatError)
    }
  })
})
