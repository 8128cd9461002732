// src/pg/recovery-conf.ts against what PostgreSQL 15 itself wrote into postgresql.auto.conf: ALTER SYSTEM for a
// restore_command with quotes and a backslash, and pg_basebackup -R for a primary_conninfo whose
// application_name needs conninfo quoting.

import { describe, expect, it } from 'vitest'
import { FormatError, UsageError } from '../../src/errors.js'
import {
  formatConfigLine,
  formatConninfo,
  formatRecoverySettings,
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
      "restore_command = 'pgkeep wal get %f \"%p\"'\n" +
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
    expect(one({ type: 'time', time: '2026-11-21 05:27:37.123456+02:00' })).toBe("recovery_target_time = '2026-11-21 05:27:37.123456+02:00'\n")
    expect(one({ type: 'time', time: '2026-11-21T05:27:37Z' })).toBe("recovery_target_time = '2026-11-21T05:27:37Z'\n")
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
      { target: { type: 'time', time: '2026-13-01 00:00:00' } },
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
      expect(() => formatRecoverySettings(s), JSON.stringify(s, (_, v) => (typeof v === 'bigint' ? String(v) : v))).toThrow(UsageError)
    }
    try {
      formatRecoverySettings({ target: { type: 'lsn', lsn: 'x' } })
    } catch (e) {
      expect((e as UsageError).hint).toMatch(/0\/3000028/)
    }
  })
})
