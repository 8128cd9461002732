// `pgkeep demo`, the README's first command after `npm install`: the built binary, run from the checkout with
// nothing but the installed packages (the embedded PostgreSQL among them). It must run pgkeep's real commands, get
// the deleted rows back by a point-in-time restore, print the figures, and leave nothing behind.

import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { runBin } from '../harness/cli.js'
import { ensureBuilt, ROOT } from './wal-helpers.js'

describe('pgkeep demo', () => {
  it('runs the main job on an embedded server, shows the rows back and the figures, and cleans up', async () => {
    ensureBuilt()
    const { code, stdout, stderr } = await runBin(['demo'], {}, { cwd: ROOT })
    expect(code, `${stdout}\n${stderr}`).toBe(0)
    const dir = /^pgkeep demo: PostgreSQL (\d+)\.\d+ \(.*\) in (\S+?)(,|$)/m.exec(stdout)
    expect(dir, stdout).not.toBeNull()
    // Every step ran its real command, and each said what it did.
    for (const re of [
      /^\$ pgkeep check -d postgres:\/\/repl@127\.0\.0\.1:\d+\/$/m,
      /^ {2}ready: pgkeep can back up this server$/m,
      /^\$ pgkeep init --repo \S+\/repo( --group postgres)?$/m,
      /^\$ pgkeep wal stream -d \S+ --repo \S+ --slot pgkeep_demo --create-slot --status-interval 1 &$/m,
      /^ {2}backup \S+ of cluster \d+: full$/m,
      /^ {2}backup \S+ of cluster \d+: incremental on \S+/m,
      /^ {4}amcheck +ok .* B-tree indexes passed bt_index_check$/m,
      /^ {2}drill passed; recorded in the repository$/m,
      /^\$ pgkeep restore .* --target-time '\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+00' --target-action promote/m,
      /^ {2}start the copy: /m,
    ]) {
      expect(stdout).toMatch(re)
    }
    const deleted = Number(/: (\d+) rows gone\)$/m.exec(stdout)?.[1])
    expect(deleted).toBeGreaterThan(0)
    expect(stdout).toContain(`the restored copy has the ${deleted} rows of customer-7 back (the server still has 0)`)
    // The figures.
    expect(stdout).toMatch(/^full {8}backup \S+: [\d.]+ MB of files, [\d.]+ [kM]B stored, in /m)
    expect(stdout).toMatch(/^incremental backup \S+: [\d.]+ MB of files, [\d.]+ [kM]B stored, in /m)
    expect(stdout).toMatch(/^RTO: [\d.]+ (s|ms) from nothing to a running copy \(restore .* \+ recovery .*\), measured by the drill$/m)
    expect(stdout).toMatch(/^RPO: when the DELETE committed, [\d.]+ ([kMG]B|B) of WAL were not yet in the repository/m)
    expect(stdout).toMatch(/^demo finished in .*; cleaning up$/m)
    // Nothing left: the directory, and no server on it.
    expect(existsSync(dir![2]!)).toBe(false)
    for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
      const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
      expect(cmd.includes(dir![2]!), cmd).toBe(false)
    }
  })

  it('says what to install when there is no server to run', async () => {
    const { code, stderr } = await runBin(['demo', '--pg-bin', '/nonexistent/bin'])
    expect(code).toBe(2)
    expect(stderr).toMatch(/^pgkeep: error: no PostgreSQL server in '\/nonexistent\/bin': /m)
    expect(stderr).toMatch(/^HINT: give the bin directory of a PostgreSQL installation/m)
  })
})
