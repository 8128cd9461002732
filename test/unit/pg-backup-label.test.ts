// src/pg/backup-label.ts on real files: backup_label from 15 (pg_basebackup), 17 (incremental) and 18, and the
// backup history file a 15 server left in pg_wal. Formatting must give back the server's bytes.

import { describe, expect, it } from 'vitest'
import { FormatError } from '../../src/errors.js'
import { formatBackupLabel, parseBackupLabel, stripIncrementalLines } from '../../src/pg/backup-label.js'
import { walFileNameOfLsn } from '../../src/pg/wal-names.js'
import { fixtureNames, fixtureText } from '../fixtures/pg/fixtures.js'

const MB16 = 16 << 20

describe('backup_label', () => {
  it('parses a real 15 label and formats it back byte for byte', () => {
    const text = fixtureText('backup_label-15')
    const l = parseBackupLabel(text)
    expect(l).toMatchObject({
      startLsn: 0x2000028n,
      startWalFile: '000000010000000000000002',
      checkpointLsn: 0x2000060n,
      backupMethod: 'streamed',
      backupFrom: 'primary',
      label: 'fixture 15',
      startTimeline: 1,
    })
    expect(l.startTime).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC$/)
    expect(l.incrementalFromLsn).toBeUndefined()
    expect(walFileNameOfLsn(l.startTimeline!, l.startLsn, MB16)).toBe(l.startWalFile)
    expect(formatBackupLabel(l)).toBe(text)
  })

  it('parses a real 17 incremental label and strips its INCREMENTAL lines', () => {
    const text = fixtureText('backup_label-17-incremental')
    const l = parseBackupLabel(text)
    expect(l.incrementalFromLsn).toBeDefined()
    expect(l.incrementalFromTli).toBe(1)
    expect(l.incrementalFromLsn! < l.startLsn).toBe(true)
    expect(formatBackupLabel(l)).toBe(text)
    const stripped = stripIncrementalLines(text)
    expect(stripped).toBe(
      text
        .split('\n')
        .filter((line) => !line.startsWith('INCREMENTAL FROM '))
        .join('\n'),
    )
    expect(stripped).not.toMatch(/INCREMENTAL/)
    const s = parseBackupLabel(stripped)
    expect(s.incrementalFromLsn).toBeUndefined()
    expect(formatBackupLabel({ ...l, incrementalFromLsn: undefined, incrementalFromTli: undefined })).toBe(stripped)
  })

  it('parses a real 18 label (unpadded LSNs) and formats it back', () => {
    const text = fixtureText('backup_label-18')
    expect(formatBackupLabel(parseBackupLabel(text))).toBe(text)
  })

  it('parses the backup history file with its STOP lines and formats it back', () => {
    const [name] = fixtureNames(/\.backup$/)
    const text = fixtureText(name!)
    const l = parseBackupLabel(text)
    expect(l.stopLsn).toBeGreaterThan(l.startLsn)
    expect(l.stopWalFile).toBe(walFileNameOfLsn(l.stopTimeline!, l.stopLsn!, MB16))
    expect(formatBackupLabel(l)).toBe(text)
    // The history file of the 15 backup and its backup_label describe the same backup.
    expect(l.startLsn).toBe(parseBackupLabel(fixtureText('backup_label-15')).startLsn)
  })

  it('is lenient about order and keeps unknown lines, strict about the rest', () => {
    const l = parseBackupLabel('CHECKPOINT LOCATION: 0/3000060\nNEW KEY: x\nSTART WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n')
    expect(l.extraLines).toEqual(['NEW KEY: x'])
    expect(formatBackupLabel(l)).toBe('START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\nCHECKPOINT LOCATION: 0/3000060\nNEW KEY: x\n')
    for (const bad of [
      '',
      'START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n',
      'START WAL LOCATION: 0/3000028\nCHECKPOINT LOCATION: 0/3000060\n',
      'START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\nCHECKPOINT LOCATION: x\n',
      'START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\nCHECKPOINT LOCATION: 0/1\nCHECKPOINT LOCATION: 0/1\n',
      'START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\nCHECKPOINT LOCATION: 0/1\nno colon\n',
      'START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\nCHECKPOINT LOCATION: 0/1\nINCREMENTAL FROM LSN: 0/1\n',
      'START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\nCHECKPOINT LOCATION: 0/1\nSTART TIMELINE: 0\n',
    ]) {
      expect(() => parseBackupLabel(bad), bad).toThrow(FormatError)
    }
    const base = parseBackupLabel(fixtureText('backup_label-15'))
    expect(() => formatBackupLabel({ ...base, label: 'a\nb' })).toThrow(FormatError)
    expect(() => formatBackupLabel({ ...base, startWalFile: 'x' })).toThrow(FormatError)
  })
})
