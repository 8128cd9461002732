// The retention rules without I/O (src/repo/retention.ts, retention-policy.ts): durations and their calendar
// arithmetic, policies from text, every backup rule at its bucket boundaries and in other time zones (a DST change
// included), ties, restic's "oldest kept while counts are left", keep-within's strict edge, and the WAL decisions:
// what kept backups need, the recovery window with and without keep-wal-within, timeline history ancestry.

import { describe, expect, it } from 'vitest'
import { UsageError } from '../../src/errors.js'
import { historyFileName, walFileName } from '../../src/pg/wal-names.js'
import { decideBackups, decideWal, localTime, type RetentionBackup, walRuns } from '../../src/repo/retention.js'
import {
  checkTimeZone,
  describePolicy,
  keepsNoBackup,
  parseDuration,
  parseRetentionPolicy,
  retentionPolicyProblems,
  subtractDuration,
} from '../../src/repo/retention-policy.js'

const SEG = 16 << 20
const SYS = '7000000000000000001'

/** A backup started at `iso` (UTC); its id sorts by that time, as pgkeep's ids do. */
function bk(iso: string, o: Partial<RetentionBackup> & { suffix?: string } = {}): RetentionBackup {
  const t = new Date(iso)
  const id = `${t
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')}-${o.suffix ?? '000000'}`
  return {
    id,
    startedAt: t.toISOString(),
    finishedAt: new Date(t.getTime() + 60_000).toISOString(),
    timeline: 1,
    startLsn: '0/2000028',
    endLsn: '0/2000100',
    walSegmentSizeBytes: SEG,
    ...o,
  }
}

/** Ids kept, newest first, by the short names given in `named`. */
function kept(named: Record<string, RetentionBackup>, policy: Parameters<typeof decideBackups>[1]): string[] {
  const byId = new Map(Object.entries(named).map(([k, b]) => [b.id, k]))
  return decideBackups(Object.values(named), policy)
    .filter((d) => d.keep)
    .map((d) => byId.get(d.id)!)
}

describe('durations', () => {
  it('parses the units and their combinations', () => {
    expect(parseDuration('7d')).toMatchObject({ years: 0, months: 0, ms: 7 * 86_400_000 })
    expect(parseDuration('36h').ms).toBe(36 * 3_600_000)
    expect(parseDuration('2w').ms).toBe(14 * 86_400_000)
    expect(parseDuration('90min').ms).toBe(90 * 60_000)
    expect(parseDuration('1y6mo')).toMatchObject({ years: 1, months: 6, ms: 0 })
    expect(parseDuration('1y2mo3w4d5h6min')).toMatchObject({ years: 1, months: 2, ms: 25 * 86_400_000 + 5 * 3_600_000 + 6 * 60_000 })
  })

  it('refuses what is not a duration, zero, and the ambiguous m', () => {
    for (const bad of ['', '7', 'd7', '7 d', '-1d', '1.5d', '0d', '0h0min', '7D', '1000000d']) expect(() => parseDuration(bad), bad).toThrow(UsageError)
    expect(() => parseDuration('7m', 'keep-within')).toThrow(/invalid keep-within '7m': 'm' is ambiguous/)
  })

  it('subtracts calendar months and years as Go does (a missing day rolls over), then the fixed part', () => {
    const at = (iso: string) => Date.parse(iso)
    const iso = (ms: number) => new Date(ms).toISOString()
    expect(iso(subtractDuration(at('2026-03-31T12:00:00Z'), parseDuration('1mo')))).toBe('2026-03-03T12:00:00.000Z')
    expect(iso(subtractDuration(at('2024-02-29T00:00:00Z'), parseDuration('1y')))).toBe('2023-03-01T00:00:00.000Z')
    expect(iso(subtractDuration(at('2026-01-15T00:00:00Z'), parseDuration('1mo1d')))).toBe('2025-12-14T00:00:00.000Z')
    expect(iso(subtractDuration(at('2026-01-15T00:00:00Z'), parseDuration('36h')))).toBe('2026-01-13T12:00:00.000Z')
  })
})

describe('order', () => {
  it('two backups started within one second: the one that started later is the newer, whatever their ids say', () => {
    // Ids carry whole seconds and a random suffix: here the earlier backup has the greater suffix.
    const named = { first: bk('2026-03-01T10:00:00.100Z', { suffix: 'ffffff' }), second: bk('2026-03-01T10:00:00.900Z', { suffix: '000001' }) }
    expect(kept(named, { keepLast: 1 })).toEqual(['second'])
  })
})

describe('policies from text', () => {
  it('takes counts, drops zeros, checks durations and zones', () => {
    expect(parseRetentionPolicy({ 'keep-last': '3', 'keep-daily': '0', 'keep-within': '2w', tz: 'Europe/Berlin' })).toEqual({
      keepLast: 3,
      keepWithin: '2w',
      timeZone: 'Europe/Berlin',
    })
    expect(() => parseRetentionPolicy({ 'keep-last': '-1' })).toThrow(/invalid keep-last '-1'/)
    expect(() => parseRetentionPolicy({ 'keep-daily': 'seven' })).toThrow(UsageError)
    expect(() => parseRetentionPolicy({ 'keep-last': '1000001' })).toThrow(UsageError)
    expect(() => parseRetentionPolicy({ tz: 'Mars/Olympus' })).toThrow(/unknown time zone 'Mars\/Olympus'/)
    expect(() => checkTimeZone('+25:00')).toThrow(UsageError)
    expect(checkTimeZone('-0530')).toBe('-0530')
  })

  it('finds the problems of a policy from outside (a stored record) and refuses unknown rules', () => {
    expect(retentionPolicyProblems({ keepLast: 3, keepWithin: '7d' })).toEqual([])
    expect(retentionPolicyProblems({ keepLast: 3, keepEvery: 2 })).toEqual(["it has a rule 'keepEvery' this pgkeep does not know"])
    expect(retentionPolicyProblems({ keepDaily: '7' })).toHaveLength(1)
    expect(retentionPolicyProblems({ keepWithin: '7x' })).toHaveLength(1)
    expect(retentionPolicyProblems({ timeZone: 'Nowhere/Land' })).toHaveLength(1)
    expect(retentionPolicyProblems(null)).toEqual(['it is not an object'])
  })

  it('says when a policy keeps no backup, and describes one', () => {
    expect(keepsNoBackup({})).toBe(true)
    expect(keepsNoBackup({ keepWalWithin: '7d' })).toBe(true)
    expect(keepsNoBackup({ keepWithin: '1d' })).toBe(false)
    expect(describePolicy({ keepLast: 3, keepDaily: 7, keepWithin: '2w' })).toBe('keep-last 3, keep-daily 7, keep-within 2w (buckets in UTC)')
    expect(describePolicy({ keepLast: 1 })).toBe('keep-last 1')
  })
})

describe('buckets', () => {
  it('read local time in UTC, fixed offsets and IANA zones, DST included', () => {
    const t = Date.parse('2026-01-06T23:30:00Z')
    expect(localTime(t, 'UTC')).toEqual({ y: 2026, mo: 1, d: 6, h: 23 })
    expect(localTime(t, '+02:00')).toEqual({ y: 2026, mo: 1, d: 7, h: 1 })
    expect(localTime(t, '-0530')).toEqual({ y: 2026, mo: 1, d: 6, h: 18 })
    expect(localTime(t, 'Europe/Berlin')).toEqual({ y: 2026, mo: 1, d: 7, h: 0 })
    // Fall back in Berlin on 2026-10-25: 00:30Z and 01:30Z are both 02:30 local.
    expect(localTime(Date.parse('2026-10-25T00:30:00Z'), 'Europe/Berlin')).toEqual({ y: 2026, mo: 10, d: 25, h: 2 })
    expect(localTime(Date.parse('2026-10-25T01:30:00Z'), 'Europe/Berlin')).toEqual({ y: 2026, mo: 10, d: 25, h: 2 })
  })
})

describe('backup rules', () => {
  // Start times (UTC), the table's columns. 2025-12-29 is the Monday of ISO week 2026-W01.
  const B = {
    A: bk('2025-12-30T10:00:00Z'), // Tue, 2026-W01, 2025-12
    B: bk('2026-01-02T09:00:00Z'), // Fri, 2026-W01
    C: bk('2026-01-05T08:00:00Z'), // Mon, 2026-W02
    D: bk('2026-01-05T20:00:00Z'), // Mon, 2026-W02
    E: bk('2026-01-06T07:00:00Z'), // Tue, 2026-W02
    F: bk('2026-01-06T23:30:00Z'), // Tue (Wed 00:30 in Berlin), 2026-W02
    G: bk('2026-02-01T12:00:00Z'), // Sun, 2026-W05, 2026-02
    H: bk('2026-02-03T12:00:00Z'), // Tue, 2026-W06
  }

  it('keeps what a hand-computed table says, rule by rule and combined', () => {
    expect(kept(B, { keepLast: 3 })).toEqual(['H', 'G', 'F'])
    expect(kept(B, { keepDaily: 4 })).toEqual(['H', 'G', 'F', 'D'])
    expect(kept(B, { keepDaily: 4, timeZone: 'Europe/Berlin' })).toEqual(['H', 'G', 'F', 'E'])
    expect(kept(B, { keepWeekly: 3 })).toEqual(['H', 'G', 'F'])
    expect(kept(B, { keepMonthly: 3 })).toEqual(['H', 'F', 'A'])
    expect(kept(B, { keepYearly: 2 })).toEqual(['H', 'A'])
    expect(kept(B, { keepHourly: 2 })).toEqual(['H', 'G'])
    expect(kept(B, { keepLast: 2, keepDaily: 3, keepWeekly: 2, keepMonthly: 3 })).toEqual(['H', 'G', 'F', 'A'])
    expect(kept(B, { keepWithin: '2w' })).toEqual(['H', 'G'])
    // 4w before H is 2026-01-06 12:00: F (23:30) is inside, E (07:00) is not; 5w reaches 2025-12-30 12:00.
    expect(kept(B, { keepWithin: '4w' })).toEqual(['H', 'G', 'F'])
    expect(kept(B, { keepWithin: '5w' })).toEqual(['H', 'G', 'F', 'E', 'D', 'C', 'B'])
  })

  it('keeps the oldest backup too when a bucket rule has counts left (restic 0.16+)', () => {
    // Weeks with a backup: W06 H, W05 G, W02 F, W01 B; the fifth count keeps A, the oldest, in B's week.
    expect(kept(B, { keepWeekly: 5 })).toEqual(['H', 'G', 'F', 'B', 'A'])
    const d = decideBackups(Object.values(B), { keepWeekly: 5 }).find((x) => x.id === B.A.id)!
    expect(d.keptBy[0]!.text).toBe('keep-weekly 5: the oldest backup, kept because only 4 weeks have a backup')
    // With exactly as many counts as buckets, no extra.
    expect(kept(B, { keepWeekly: 4 })).toEqual(['H', 'G', 'F', 'B'])
    expect(kept(B, { keepYearly: 5 })).toEqual(['H', 'A'])
  })

  it('says why each goes, per rule', () => {
    const d = decideBackups(Object.values(B), { keepLast: 2, keepDaily: 3 })
    const e = d.find((x) => x.id === B.E.id)!
    expect(e.keep).toBe(false)
    expect(e.why).toEqual(['keep-last 2: it is the 4th newest', 'keep-daily 3: 3 newer days already have a backup kept'])
    const h = d.find((x) => x.id === B.H.id)!
    expect(h.keptBy.map((k) => k.text)).toEqual(['keep-last 2: the 1st newest backup', 'keep-daily 3: the newest backup of day 2026-02-03'])
    expect(decideBackups(Object.values(B), { keepDaily: 8 }).find((x) => x.id === B.C.id)!.why).toEqual(['keep-daily 8: day 2026-01-05 has a newer backup'])
  })

  it('puts the edges of hours, days, weeks, months and years where the calendar does', () => {
    const edge = { before: bk('2026-12-31T23:59:59Z'), after: bk('2027-01-01T00:00:00Z') }
    for (const rule of ['keepHourly', 'keepDaily', 'keepMonthly', 'keepYearly'] as const) expect(kept(edge, { [rule]: 2 }), rule).toEqual(['after', 'before'])
    // 2026-12-31 and 2027-01-01 are Thursday and Friday of ISO week 2026-W53.
    expect(kept(edge, { keepWeekly: 1 })).toEqual(['after'])
    const sunday = { sun: bk('2026-01-04T23:59:59Z'), mon: bk('2026-01-05T00:00:00Z') }
    expect(kept(sunday, { keepWeekly: 1 })).toEqual(['mon'])
    // In +02:00 both lie on Monday 2026-01-05 (01:59:59 and 02:00:00).
    expect(kept(sunday, { keepWeekly: 2, keepDaily: 1, timeZone: '+02:00' })).toEqual(['mon', 'sun'])
    expect(decideBackups(Object.values(sunday), { keepWeekly: 2, timeZone: '+02:00' }).map((d) => d.keptBy[0]?.text)).toEqual([
      'keep-weekly 2: the newest backup of week 2026-W02',
      'keep-weekly 2: the oldest backup, kept because only 1 week has a backup',
    ])
    // The repeated hour of a DST change is one bucket, as in restic (local wall clock).
    const dst = { first: bk('2026-10-25T00:30:00Z'), second: bk('2026-10-25T01:30:00Z'), later: bk('2026-10-25T03:10:00Z') }
    expect(kept(dst, { keepHourly: 2, timeZone: 'Europe/Berlin' })).toEqual(['later', 'second'])
    expect(kept(dst, { keepHourly: 2 })).toEqual(['later', 'second'])
    expect(kept(dst, { keepHourly: 3, timeZone: 'Europe/Berlin' })).toEqual(['later', 'second', 'first'])
  })

  it('keeps within a duration of the newest backup, strictly', () => {
    const w = { newest: bk('2026-01-08T00:00:00Z'), edge: bk('2026-01-01T00:00:00Z'), inside: bk('2026-01-01T00:00:01Z') }
    expect(kept(w, { keepWithin: '7d' })).toEqual(['newest', 'inside'])
    expect(decideBackups(Object.values(w), { keepWithin: '7d' }).find((d) => d.id === w.edge.id)!.why).toEqual([
      'keep-within 7d: started more than 7d before the newest backup',
    ])
  })

  it('breaks ties of equal start times by id, the order restore calls latest', () => {
    const t = { a: bk('2026-01-05T08:00:00Z', { suffix: 'aaaaaa' }), b: bk('2026-01-05T08:00:00Z', { suffix: 'bbbbbb' }) }
    expect(kept(t, { keepLast: 1 })).toEqual(['b'])
    expect(kept(t, { keepDaily: 1 })).toEqual(['b'])
    expect(kept(t, { keepDaily: 2 })).toEqual(['b', 'a'])
  })

  it('never expires a record whose times or LSNs do not parse, and leaves it out of the counts', () => {
    const u = { good: bk('2026-01-05T08:00:00Z'), bad: { ...bk('2026-01-04T08:00:00Z'), startedAt: 'yesterday' }, old: bk('2026-01-03T08:00:00Z') }
    expect(kept(u, { keepLast: 1 })).toEqual(['good', 'bad'])
    expect(kept(u, { keepLast: 2 })).toEqual(['good', 'bad', 'old'])
    const lsn = { ...bk('2026-01-04T09:00:00Z'), endLsn: 'x' }
    expect(decideBackups([lsn], { keepLast: 1 })[0]!.keptBy[0]!.rule).toBe('unreadable')
  })

  it('keeps nothing without rules', () => {
    expect(kept(B, {})).toEqual([])
  })
})

describe('WAL decisions', () => {
  const seg = (tli: number, segno: number, suffix = '') => `${SYS}/${walFileName(tli, BigInt(segno), SEG)}${suffix}`
  const hist = (tli: number) => `${SYS}/${historyFileName(tli)}`
  const T = (h: number) => Date.parse('2026-01-10T00:00:00Z') + h * 3_600_000
  const at = (h: number) => new Date(T(h)).toISOString()
  // Three backups on timeline 1: B1 needs segment 2, B2 segments 5 and 6, B3 segment 9.
  const B1 = bk(at(0), { startLsn: '0/2000028', endLsn: '0/2000100', finishedAt: at(1) })
  const B2 = bk(at(10), { startLsn: '0/5000028', endLsn: '0/6000100', finishedAt: at(11) })
  const B3 = bk(at(20), { startLsn: '0/9000028', endLsn: '0/9000200', finishedAt: at(21) })
  const backups = [B1, B2, B3]
  const keys = [
    ...[1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((s) => seg(1, s)),
    seg(1, 4, '.partial.00100000'),
    seg(1, 11, '.partial.00200000'),
    seg(1, 2, '.00000028.backup'),
    seg(1, 5, '.00000028.backup'),
    `${SYS}/not-a-wal-name`,
  ]
  const decide = (policy: Parameters<typeof decideBackups>[1], o: { keys?: string[]; ancestors?: Map<number, number[] | undefined>; now?: number } = {}) =>
    decideWal({
      backups,
      decisions: decideBackups(backups, policy),
      keys: o.keys ?? keys,
      ancestors: o.ancestors ?? new Map(),
      keepWalWithin: policy.keepWalWithin,
      now: o.now ?? T(30),
    })
  const going = (r: ReturnType<typeof decideWal>) =>
    r.files
      .filter((f) => !f.keep)
      .map((f) => f.key.slice(SYS.length + 1))
      .sort()

  it('keeps WAL from the oldest kept backup on, and what each kept backup needs', () => {
    const r = decide({ keepLast: 2 })
    expect(r.windowStart).toEqual({ lsn: '0/5000028', backupId: B2.id })
    expect(going(r)).toEqual([
      '000000010000000000000001',
      '000000010000000000000002',
      '000000010000000000000002.00000028.backup',
      '000000010000000000000003',
      '000000010000000000000004',
      '000000010000000000000004.partial.00100000',
    ])
    expect(r.files.find((f) => f.key === `${SYS}/not-a-wal-name`)).toMatchObject({ keep: true, reason: 'unknown' })
    expect(r.files.find((f) => f.key === seg(1, 11, '.partial.00200000'))).toMatchObject({ keep: true, reason: 'window' })
    expect(walRuns(r.files, false)).toEqual([{ timeline: 1, first: '000000010000000000000001', last: '000000010000000000000004.partial.00100000', count: 6 }])
  })

  it('with keep-wal-within, keeps the window from the newest kept backup before it, and older kept backups their own WAL', () => {
    // Now − 12h = T(18): B2 (finished T(11)) is the newest kept backup before it.
    const r = decide({ keepLast: 3, keepWalWithin: '12h' })
    expect(r.windowStart).toEqual({ lsn: '0/5000028', backupId: B2.id })
    expect(r.files.find((f) => f.key === seg(1, 2))).toMatchObject({ keep: true, reason: 'backup', backupId: B1.id })
    expect(going(r)).toEqual(['000000010000000000000001', '000000010000000000000003', '000000010000000000000004', '000000010000000000000004.partial.00100000'])
    // A window longer than the backups reach back: from the oldest kept backup, as without it.
    expect(decide({ keepLast: 3, keepWalWithin: '1y' }).windowStart).toEqual({ lsn: '0/2000028', backupId: B1.id })
    // Shorter than the newest backup's age: from the newest backup.
    expect(decide({ keepLast: 3, keepWalWithin: '2h' }).windowStart).toEqual({ lsn: '0/9000028', backupId: B3.id })
  })

  it('keeps every WAL file when no backup is kept or the segment sizes disagree', () => {
    const none = decide({})
    expect(none.note).toMatch(/no backup is kept/)
    expect(none.files.every((f) => f.keep)).toBe(true)
    const odd = decideWal({
      backups: [B2, { ...B3, walSegmentSizeBytes: 64 << 20 }],
      decisions: decideBackups([B2, B3], { keepLast: 2 }),
      keys,
      ancestors: new Map(),
      now: T(30),
    })
    expect(odd.note).toMatch(/disagree on the WAL segment size/)
    expect(odd.files.every((f) => f.keep)).toBe(true)
  })

  it('keeps the history of timelines related to kept WAL and of the newest timeline, and drops an abandoned branch', () => {
    // Timeline 2 branched off 1 at 0/3000000 and was abandoned; 3 branched off 1 at 0/7000000 and is current. The
    // kept backup is on 3 and the window starts at its start (0/9000028): WAL before it goes, 2's history too.
    const b3 = { ...B3, timeline: 3 }
    const walKeys = [seg(1, 1), seg(1, 6), seg(2, 3), seg(2, 4), seg(3, 7), seg(3, 9), hist(2), hist(3)]
    const r = decideWal({
      backups: [B1, b3],
      decisions: decideBackups([B1, b3], { keepLast: 1 }),
      keys: walKeys,
      ancestors: new Map([
        [2, [1]],
        [3, [1]],
      ]),
      now: T(30),
    })
    expect(going(r)).toEqual([
      '000000010000000000000001',
      '000000010000000000000006',
      '00000002.history',
      '000000020000000000000003',
      '000000020000000000000004',
      '000000030000000000000007',
    ])
    expect(r.files.find((f) => f.key === hist(3))).toMatchObject({ keep: true, reason: 'history' })
    // Unreadable ancestry keeps every history file.
    const unsure = decideWal({
      backups: [B1, b3],
      decisions: decideBackups([B1, b3], { keepLast: 1 }),
      keys: walKeys,
      ancestors: new Map([
        [2, undefined],
        [3, [1]],
      ]),
      now: T(30),
    })
    expect(unsure.files.find((f) => f.key === hist(2))).toMatchObject({ keep: true })
    // An ancestor of a kept timeline stays although none of its own WAL does.
    const r2 = decideWal({
      backups: [B1, b3],
      decisions: decideBackups([B1, b3], { keepLast: 1 }),
      keys: [seg(2, 3), seg(3, 9), hist(2), hist(3), hist(4)],
      ancestors: new Map([
        [2, [1]],
        [3, [1, 2]],
        [4, [1, 2, 3]],
      ]),
      now: T(30),
    })
    expect(going(r2)).toEqual(['000000020000000000000003'])
  })
})
