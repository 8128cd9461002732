// src/pg/recovery-conf.ts against what PostgreSQL 15 itself wrote into postgresql.auto.conf: ALTER SYSTEM for a
// restore_command with quotes and a backslash, and pg_basebackup -R for a primary_conninfo whose
// application_name needs conninfo quoting.

import { describe, expect, it } from 'vitest'
import { FormatError, UsageError } from '../../src/errors.js'
import {
  formatConfigLine,
  formatConninfo,
  formatRecoverySettings,
  parseRecoveryTargetTime,
  quoteConfigValue,
  unquoteConfigValue,
} from '../../src/pg/recovery-conf.js'
import { fixtureText } from '../fixtures/pg/fixtures.js'

const autoConf = (): string[] => fixtureText('postgresql.auto.conf-15').split('\n')

describe('configuration quoting', () => {
  it('writes restore_command exactly as ALTER SYSTEM did', () => {
    const line = autoConf().find((l) => l.startsWith('restore_command = '))!
    expect(formatConfigLine('restore_command', 'cp "/a b/%f" \'%p\' \\x')).toBe(`${line}\n`)
    expect(unquoteConfigValue(line.slice('restore_command = '.length))).toBe('cp "/a b/%f" \'%p\' \\x')
  })

  it('writes primary_conninfo exactly as pg_basebackup -R did', () => {
    const line = autoConf().find((l) => l.startsWith('primary_conninfo = '))!
    const conninfo = unquoteConfigValue(line.slice('primary_conninfo = '.length))
    expect(formatConfigLine('primary_conninfo', conninfo)).toBe(`${line}\n`)
    // The conninfo value quoting, checked on the pair the fixture was made with (application_name = it's a\b),
    // and on the socket directory that needed quotes (a '/' is not a bare-value character).
    expect(conninfo).toContain(formatConninfo([['application_name', "it's a\\b"]]))
    expect(formatConninfo([['application_name', "it's a\\b"]])).toBe("application_name='it\\'s a\\\\b'")
    const host = /host='([^']+)'/.exec(conninfo)![1]!
    expect(conninfo).toContain(formatConninfo({ host, port: '55415' }))
    expect(formatConninfo({ sslmode: 'prefer', port: '5432', empty: '' })).toBe("sslmode=prefer port=5432 empty=''")
  })

  it('refuses values the config lexer cannot read', () => {
    expect(() => quoteConfigValue('a\nb')).toThrow(UsageError)
    expect(() => quoteConfigValue('a\rb')).toThrow(UsageError)
    expect(() => formatConfigLine('bad name', 'x')).toThrow(UsageError)
    expect(() => unquoteConfigValue("'a")).toThrow(FormatError)
    expect(unquoteConfigValue("'a\\tb\\101'''")).toBe("a\tbA'")
  })
})

describe('formatRecoverySettings', () => {
  it('writes every setting in order', () => {
    expect(
      formatRecoverySettings({
        restoreCommand: 'pgkeep wal get %f "%p"',
        targetTimeline: 'latest',
        target: { type: 'lsn', lsn: '0/3000028' },
        targetInclusive: false,
        targetAction: 'promote',
        primaryConninfo: "host=db user=rep application_name='x y'",
        primarySlotName: 'pgkeep_1',
      }),
    ).toBe(
      'restore_command = \'pgkeep wal get %f "%p"\'\n' +
        "recovery_target_timeline = 'latest'\n" +
        "recovery_target_lsn = '0/3000028'\n" +
        "recovery_target_inclusive = 'off'\n" +
        "recovery_target_action = 'promote'\n" +
        "primary_conninfo = 'host=db user=rep application_name=''x y'''\n" +
        "primary_slot_name = 'pgkeep_1'\n",
    )
  })

  it('formats each target type', () => {
    const one = (target: Parameters<typeof formatRecoverySettings>[0]['target']): string => formatRecoverySettings({ target })
    expect(one({ type: 'immediate' })).toBe("recovery_target = 'immediate'\n")
    expect(one({ type: 'time', time: new Date(Date.UTC(2026, 10, 21, 5, 27, 37, 5)) })).toBe("recovery_target_time = '2026-11-21 05:27:37.005+00'\n")
    expect(one({ type: 'time', time: new Date(Date.UTC(2026, 10, 21, 5, 27, 37)) })).toBe("recovery_target_time = '2026-11-21 05:27:37+00'\n")
    // Written in UTC with the zone spelled out, whatever zone it was given in: what pgkeep compared is what the
    // server reads, whatever its timezone setting.
    expect(one({ type: 'time', time: '2026-11-21 05:27:37.123456+02:00' })).toBe("recovery_target_time = '2026-11-21 03:27:37.123456+00'\n")
    expect(one({ type: 'time', time: '2026-11-21T05:27:37Z' })).toBe("recovery_target_time = '2026-11-21 05:27:37+00'\n")
    expect(one({ type: 'lsn', lsn: 0x16_b374d848n })).toBe("recovery_target_lsn = '16/B374D848'\n")
    expect(one({ type: 'lsn', lsn: '16/b374d848' })).toBe("recovery_target_lsn = '16/B374D848'\n")
    expect(one({ type: 'xid', xid: 12345 })).toBe("recovery_target_xid = '12345'\n")
    expect(one({ type: 'xid', xid: 4294967296n * 3n + 7n })).toBe("recovery_target_xid = '12884901895'\n")
    expect(one({ type: 'name', name: "before 'drop'" })).toBe("recovery_target_name = 'before ''drop'''\n")
    expect(formatRecoverySettings({ targetTimeline: 3 })).toBe("recovery_target_timeline = '3'\n")
    expect(formatRecoverySettings({})).toBe('')
  })

  it('rejects invalid values with UsageError and a hint', () => {
    const bad: Parameters<typeof formatRecoverySettings>[0][] = [
      { restoreCommand: ' ' },
      { target: { type: 'lsn', lsn: '3000028' } },
      { target: { type: 'xid', xid: 'abc' } },
      { target: { type: 'xid', xid: -1 } },
      { target: { type: 'time', time: 'yesterday' } },
      { target: { type: 'time', time: '2026-13-01 00:00:00+00' } },
      { target: { type: 'time', time: '2026-11-21 05:27:37' } },
      { target: { type: 'time', time: new Date(NaN) } },
      { target: { type: 'name', name: '' } },
      { target: { type: 'name', name: 'x'.repeat(64) } },
      { target: { type: 'immediate' }, targetAction: 'stop' as never },
      { targetAction: 'pause' },
      { target: { type: 'immediate' }, targetInclusive: true },
      { target: { type: 'name', name: 'n' }, targetInclusive: false },
      { targetTimeline: 0 },
      { targetTimeline: 'newest' as never },
      { primarySlotName: 'Bad-Slot' },
      { primaryConninfo: 'host=a\nport=1' },
    ]
    for (const s of bad) {
      expect(
        () => formatRecoverySettings(s),
        JSON.stringify(s, (_, v) => (typeof v === 'bigint' ? String(v) : v)),
      ).toThrow(UsageError)
    }
    try {
      formatRecoverySettings({ target: { type: 'lsn', lsn: 'x' } })
    } catch (e) {
      expect((e as UsageError).hint).toMatch(/0\/3000028/)
    }
  })
})

describe('parseRecoveryTargetTime', () => {
  const t = Date.UTC(2026, 10, 21, 5, 27, 37)
  it('reads a date, a time and a zone (UTC or an offset) as one instant, and writes it in UTC', () => {
    const forms = [
      '2026-11-21 05:27:37+00',
      '2026-11-21T05:27:37Z',
      '2026-11-21 05:27:37z',
      '2026-11-21 05:27:37 UTC',
      '2026-11-21 05:27:37 GMT',
      '2026-11-21 07:27:37+02',
      '2026-11-21 07:27:37+0200',
      '2026-11-21 07:27:37+02:00',
      '2026-11-21 00:57:37-04:30',
      '  2026-11-21 05:27:37+00  ',
    ]
    for (const s of forms) expect(parseRecoveryTargetTime(s), s).toEqual({ ms: t, text: '2026-11-21 05:27:37+00' })
    expect(parseRecoveryTargetTime('2026-11-21 05:27+00')).toEqual({ ms: t - 37_000, text: '2026-11-21 05:27:00+00' })
    expect(parseRecoveryTargetTime('2026-11-21 05:27:37.250+00')).toEqual({ ms: t + 250, text: '2026-11-21 05:27:37.250+00' })
    expect(parseRecoveryTargetTime('2026-11-21 05:27:37.123456+01')).toEqual({ ms: t - 3_600_000 + 123, text: '2026-11-21 04:27:37.123456+00' })
    // Across midnight, a month and a year boundary, and on a leap day.
    expect(parseRecoveryTargetTime('2027-01-01 01:30:00+02').text).toBe('2026-12-31 23:30:00+00')
    expect(parseRecoveryTargetTime('2028-02-29 23:00:00-01:30').text).toBe('2028-03-01 00:30:00+00')
    expect(parseRecoveryTargetTime(new Date(t + 5)).text).toBe('2026-11-21 05:27:37.005+00')
    expect(parseRecoveryTargetTime(new Date(t)).ms).toBe(t)
  })

  it('refuses a time without a zone: the server would read it in its own timezone', () => {
    for (const s of ['2026-11-21 05:27:37', '2026-11-21T05:27:37', '2026-11-21 05:27']) {
      expect(() => parseRecoveryTargetTime(s), s).toThrow(UsageError)
      try {
        parseRecoveryTargetTime(s)
      } catch (err) {
        expect((err as UsageError).message).toBe(`recovery target time '${s}' has no time zone`)
        expect((err as UsageError).hint).toMatch(/server's timezone setting.*'2026-11-21 05:27:37\+00'/)
      }
    }
  })

  it('refuses dates and times that do not exist, zone names and other text', () => {
    const cases: [string, RegExp][] = [
      ['2026-02-31 00:00:00+00', /2026-02 has no day 31/],
      ['2026-02-29 00:00:00+00', /2026-02 has no day 29/],
      ['2100-02-29 00:00:00+00', /2100-02 has no day 29/],
      ['2026-04-31 12:00:00+00', /has no day 31/],
      ['2026-00-10 12:00:00+00', /no month 0/],
      ['2026-13-01 00:00:00+00', /no month 13/],
      ['2026-11-00 00:00:00+00', /has no day 0/],
      ['0000-01-01 00:00:00+00', /no year 0/],
      ['2026-11-21 24:00:00+00', /24:00:00 is not a time of day/],
      ['2026-11-21 05:60:00+00', /is not a time of day/],
      ['2026-11-21 05:27:60+00', /05:27:60 is not a time of day/],
      ['2026-11-21 05:27:37+16', /offset \+16 is out of range/],
      ['2026-11-21 05:27:37+01:60', /offset .* out of range/],
      ['2026-11-21 05:27:37 Europe/Berlin', /time zone 'Europe\/Berlin' is not UTC or a numeric offset/],
      ['2026-11-21 05:27:37 CET', /time zone 'CET'/],
      ['2026-11-21', /expected YYYY-MM-DD HH:MM/],
      ['yesterday', /expected YYYY-MM-DD HH:MM/],
      ['21.11.2026 05:27:37+00', /expected/],
      ['2026-11-21 05:27:37.1234567+00', /time zone '7\+00'/],
    ]
    for (const [s, message] of cases) {
      expect(() => parseRecoveryTargetTime(s), s).toThrow(UsageError)
      expect(() => parseRecoveryTargetTime(s), s).toThrow(message)
    }
    expect(() => parseRecoveryTargetTime(new Date(NaN))).toThrow(/invalid Date/)
  })
})
