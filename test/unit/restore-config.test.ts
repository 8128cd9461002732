// restore_command quoting (checked by running it through a real shell with PostgreSQL's placeholder substitution),
// the rewriting of postgresql.auto.conf, and the validation of recovery options.

import { execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { unquoteConfigValue } from '../../src/pg/recovery-conf.js'
import { commentOutRecoverySettings, formatRecoveryLines, restoredAutoConf, signalFileOf } from '../../src/restore/recovery-config.js'
import { shellQuote, walGetRestoreCommand } from '../../src/restore/restore-command.js'

const dir = mkdtempSync(join(tmpdir(), 'pgkeep-unit-restore-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** What PostgreSQL does with restore_command before system(): %f, %p, %r and %% (xlogarchive.c BuildRestoreCommand). */
function substitute(cmd: string, f: string, p: string): string {
  return cmd.replace(/%([fpr%])/g, (_, c: string) => (c === 'f' ? f : c === 'p' ? p : c === 'r' ? '000000010000000000000001' : '%'))
}

describe('walGetRestoreCommand', () => {
  // A stand-in for pgkeep in a directory whose name needs quoting: prints each argument on its own line.
  const weird = join(dir, `it's a "dir" with $HOME and %20`)
  mkdirSync(weird)
  const script = join(weird, 'print-args')
  writeFileSync(script, '#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
  chmodSync(script, 0o755)

  it('survives the shell and the placeholder substitution with awkward paths', () => {
    const repo = `/var/lib/pg keep/it's %41 repo`
    const cmd = walGetRestoreCommand({ pgkeep: [script], repoUrl: repo, passphraseFile: '/etc/pgkeep pass' })
    const run = substitute(cmd, '000000010000000000000007', 'pg_wal/RECOVERYXLOG')
    const out = execFileSync('/bin/sh', ['-c', run], { encoding: 'utf8' })
    expect(out.split('\n').slice(0, -1)).toEqual([
      'wal',
      'get',
      '--repo',
      repo,
      '--passphrase-file',
      '/etc/pgkeep pass',
      '000000010000000000000007',
      'pg_wal/RECOVERYXLOG',
    ])
  })

  it('sets the environment variables given for the command alone, values quoted and escaped like the words', () => {
    const printEnv = join(weird, 'print-env')
    writeFileSync(printEnv, '#!/bin/sh\nprintf "%s\\n" "$PGKEEP_NODE" "$@"\n')
    chmodSync(printEnv, 0o755)
    const node = join(weird, 'node 100%')
    const cmd = walGetRestoreCommand({ pgkeep: [printEnv], repoUrl: '/r', env: { PGKEEP_NODE: node } })
    const out = execFileSync('/bin/sh', ['-c', substitute(cmd, '000000010000000000000007', 'pg_wal/RECOVERYXLOG')], { encoding: 'utf8', env: {} })
    expect(out.split('\n').slice(0, -1)).toEqual([node, 'wal', 'get', '--repo', '/r', '000000010000000000000007', 'pg_wal/RECOVERYXLOG'])
    expect(() => walGetRestoreCommand({ pgkeep: [printEnv], repoUrl: '/r', env: { 'A;B': 'x' } })).toThrow(/not an environment variable name/)
    expect(() => walGetRestoreCommand({ pgkeep: [printEnv], repoUrl: '/r', env: { A: 'x\ny' } })).toThrow(/newline/)
  })

  it('keeps simple words bare and s3 URLs as they are', () => {
    expect(walGetRestoreCommand({ pgkeep: ['/usr/bin/node', '/opt/pgkeep/bin/pgkeep.js'], repoUrl: 's3://bucket/prefix' })).toBe(
      '/usr/bin/node /opt/pgkeep/bin/pgkeep.js wal get --repo s3://bucket/prefix %f "%p"',
    )
  })

  it('refuses relative paths, which the server would resolve in its data directory', () => {
    expect(() => walGetRestoreCommand({ pgkeep: ['node', '/x'], repoUrl: '/r' })).toThrow(/not an absolute path/)
    expect(() => walGetRestoreCommand({ pgkeep: ['/n'], repoUrl: 'repo' })).toThrow(/relative path/)
    expect(() => walGetRestoreCommand({ pgkeep: ['/n'], repoUrl: '/r', passphraseFile: 'pw' })).toThrow(/relative path/)
    expect(() => walGetRestoreCommand({ pgkeep: ['/n'], repoUrl: '/r\nx' })).toThrow(/newline/)
  })

  it('quotes for sh', () => {
    expect(shellQuote('')).toBe("''")
    expect(shellQuote('a b')).toBe("'a b'")
    expect(execFileSync('/bin/sh', ['-c', `printf %s ${shellQuote(`a'b"c$d\`e\\f`)}`], { encoding: 'utf8' })).toBe(`a'b"c$d\`e\\f`)
  })
})

describe('recovery settings', () => {
  const cmd = '/n /p wal get --repo /r %f "%p"'

  it('formats the lines in postgresql.auto.conf syntax', () => {
    const text = formatRecoveryLines({
      restoreCommand: cmd,
      target: { type: 'lsn', lsn: '0/3000028' },
      targetAction: 'promote',
      targetExclusive: true,
      targetTimeline: 'current',
    })
    const settings = Object.fromEntries(
      text
        .trim()
        .split('\n')
        .map((l) => {
          const m = /^(\w+) = ('.*')$/.exec(l)!
          return [m[1], unquoteConfigValue(m[2]!)]
        }),
    )
    expect(settings).toEqual({
      restore_command: cmd,
      recovery_target_lsn: '0/3000028',
      recovery_target_inclusive: 'off',
      recovery_target_action: 'promote',
      recovery_target_timeline: 'current',
    })
  })

  it('rejects inconsistent options', () => {
    expect(() => formatRecoveryLines({ target: { type: 'immediate' } })).toThrow(/restore_command/)
    expect(() => formatRecoveryLines({ restoreCommand: cmd, targetExclusive: true, target: { type: 'name', name: 'x' } })).toThrow(/exclusive/)
    expect(() => formatRecoveryLines({ restoreCommand: cmd, primaryConninfo: 'host=x' })).toThrow(/standby/)
    expect(() => formatRecoveryLines({ restoreCommand: cmd, targetAction: 'promote' })).toThrow(/target/)
    expect(() => formatRecoveryLines({ mode: 'none', target: { type: 'immediate' } })).toThrow(/recovery is off/)
    expect(formatRecoveryLines({ mode: 'none' })).toBe('')
    expect(formatRecoveryLines({ mode: 'standby', restoreCommand: cmd, primaryConninfo: 'host=a user=b' })).toContain("primary_conninfo = 'host=a user=b'")
    expect(signalFileOf('standby')).toBe('standby.signal')
    expect(signalFileOf('none')).toBeNull()
  })

  it('comments out the recovery settings a backup carried and keeps everything else', () => {
    const original = [
      '# Do not edit this file manually!',
      '# It will be overwritten by the ALTER SYSTEM command.',
      "work_mem = '64MB'",
      "restore_command = 'cp /old/%f %p'",
      "  Recovery_Target_Time = '2020-01-01'",
      "recovery_target_timeline 'latest'",
      "primary_conninfo = 'host=old'",
      "restore_command_x = 'not a recovery setting'",
      '',
    ].join('\n')
    const { text, commented } = commentOutRecoverySettings(original)
    expect(commented).toEqual(['restore_command', 'recovery_target_time', 'recovery_target_timeline', 'primary_conninfo'])
    const active = text.split('\n').filter((l) => l.trim() !== '' && !l.trimStart().startsWith('#'))
    expect(active).toEqual(["work_mem = '64MB'", "restore_command_x = 'not a recovery setting'"])

    const restored = restoredAutoConf(original, "restore_command = 'x'\n", 'B1')
    expect(restored.text.startsWith(text)).toBe(true)
    expect(restored.text.endsWith("# recovery settings written by pgkeep restore of backup B1\nrestore_command = 'x'\n")).toBe(true)
    // Without settings of its own the file stays byte for byte.
    expect(restoredAutoConf(original, '', 'B1')).toEqual({ text: original, commented: [] })
    expect(restoredAutoConf('a = 1', 'b = 2\n', 'B').text).toBe('a = 1\n# recovery settings written by pgkeep restore of backup B\nb = 2\n')
  })
})
