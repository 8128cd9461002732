// Passphrase sources of the CLI: file beats PGKEEP_PASSPHRASE_FILE beats PGKEEP_PASSPHRASE; one trailing newline is
// dropped; empty or unreadable files are ConfigErrors naming the file; the command line is refused.

import { afterAll, describe, expect, it } from 'vitest'
import { chmodSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import { readPassphrase, rejectPassphraseArgument } from '../../src/cli/passphrase.js'
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
  })
})
