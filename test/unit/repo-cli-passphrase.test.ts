// Passphrase sources of the CLI: file beats PGKEEP_PASSPHRASE_FILE beats PGKEEP_PASSPHRASE (and the same for a copy's
// target, TO_, and a new passphrase, NEW_); one trailing newline is dropped; empty or unreadable files are
// ConfigErrors naming the file; the command line is refused.

import { afterAll, describe, expect, it } from 'vitest'
import { chmodSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import { readPassphrase, rejectPassphraseArgument, TO_PASSPHRASE } from '../../src/cli/passphrase.js'
import { tempDir } from '../harness/repo-fixtures.js'

const d = tempDir('pass')
afterAll(() => d.remove())

describe('passphrase sources', () => {
  const file = (name: string, text: string) => {
    const p = path.join(d.dir, name)
    writeFileSync(p, text)
    return p
  }

  it('prefers the option, then PGKEEP_PASSPHRASE_FILE, then PGKEEP_PASSPHRASE', async () => {
    const a = file('a', 'from option\n')
    const b = file('b', 'from env file\r\n')
    const env = { PGKEEP_PASSPHRASE_FILE: b, PGKEEP_PASSPHRASE: 'from env' }
    expect(await readPassphrase(a, env)).toEqual({ passphrase: 'from option', source: `file '${a}'` })
    expect((await readPassphrase(undefined, env))?.passphrase).toBe('from env file')
    expect((await readPassphrase(undefined, { PGKEEP_PASSPHRASE: 'from env' }))?.passphrase).toBe('from env')
    expect(await readPassphrase(undefined, {})).toBeUndefined()
    // Other variables for the other passphrases; the repository's own are not read for them.
    expect(await readPassphrase(undefined, { ...env, PGKEEP_TO_PASSPHRASE: 'target' }, undefined, TO_PASSPHRASE)).toEqual({
      passphrase: 'target',
      source: 'PGKEEP_TO_PASSPHRASE',
    })
    expect(await readPassphrase(undefined, env, undefined, TO_PASSPHRASE)).toBeUndefined()
    // Only one trailing newline is part of the file format; inner and leading whitespace belong to the passphrase.
    expect((await readPassphrase(file('c', ' two  words \n\n'), {}))?.passphrase).toBe(' two  words \n')
  })

  it('names an empty or unreadable file', async () => {
    const empty = file('empty', '\n')
    await expect(readPassphrase(empty, {})).rejects.toMatchObject({ code: 'CONFIG', message: expect.stringContaining(empty) })
    const missing = path.join(d.dir, 'missing')
    await expect(readPassphrase(missing, {})).rejects.toMatchObject({ code: 'CONFIG', message: expect.stringContaining('ENOENT') })
    if (process.getuid?.() !== 0) {
      const locked = file('locked', 'x')
      chmodSync(locked, 0)
      await expect(readPassphrase(locked, {})).rejects.toMatchObject({ code: 'CONFIG' })
    }
  })

  it('refuses --passphrase in any spelling', () => {
    for (const args of [['--passphrase', 'x'], ['--passphrase=x'], ['--repo', 'r', '--passphrase=']]) {
      expect(() => rejectPassphraseArgument(args)).toThrow(expect.objectContaining({ code: 'USAGE' }))
    }
    expect(() => rejectPassphraseArgument(['--passphrase-file', 'f'])).not.toThrow()
    // A copy's target and a new passphrase: refused the same way, the hint naming their own sources.
    expect(() => rejectPassphraseArgument(['--to-passphrase=x'])).toThrow(expect.objectContaining({ hint: expect.stringContaining('PGKEEP_TO_PASSPHRASE') }))
    expect(() => rejectPassphraseArgument(['--new-passphrase', 'x'])).toThrow(
      expect.objectContaining({ hint: expect.stringContaining('--new-passphrase-file') }),
    )
    expect(() => rejectPassphraseArgument(['--to-passphrase-file', 'f', '--new-passphrase-file', 'g'])).not.toThrow()
  })
})
