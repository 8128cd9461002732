// `pgkeep demo`, the README's first command (`npm install && npx pgkeep demo`), from a clean clone: the files git
// tracks, as they are in this checkout (no dist/, nothing untracked), copied into a new directory. There the test
// does what `npm install` does for a checkout, except fetching packages: it links the installed node_modules (the
// embedded PostgreSQL among them) and builds (`npm run build`, the `prepare` script). Then `npx pgkeep demo` as
// written (npm kept offline). It must run pgkeep's real commands, get the deleted rows back by a point-in-time
// restore, print the figures, and leave nothing behind.

import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { runBin } from '../harness/cli.js'
import { ensureBuilt, ROOT } from './wal-helpers.js'

interface Ran {
  code: number
  stdout: string
  stderr: string
}

function exec(file: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? Number((err as { code?: unknown }).code ?? -1) : 0
      resolve({ code: Number.isInteger(code) ? code : -1, stdout, stderr })
    })
  })
}

/** A clean clone of this checkout: the files git tracks, with their contents and modes, in a new directory. */
async function cleanClone(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pgkeep-clone-'))
  // As root the demo's servers run as postgres, and the copy's restore_command runs bin/pgkeep.js from here.
  await chmod(dir, 0o755)
  const listed = await exec('git', ['ls-files', '-z'], ROOT)
  if (listed.code !== 0) throw new Error(`git ls-files failed: ${listed.stderr}`)
  for (const path of listed.stdout.split('\0').filter((p) => p !== '')) {
    const from = join(ROOT, path)
    // Deleted in the checkout and not yet committed: not part of it.
    if (!existsSync(from)) continue
    await mkdir(dirname(join(dir, path)), { recursive: true, mode: 0o755 })
    await copyFile(from, join(dir, path))
    await chmod(join(dir, path), (await stat(from)).mode & 0o777)
  }
  return dir
}

describe('pgkeep demo', () => {
  let clone: string | undefined
  afterAll(async () => {
    if (clone) await rm(clone, { recursive: true, force: true })
  })

  it('from a clean clone: runs the main job on an embedded server, shows the rows back and the figures, and cleans up', async () => {
    clone = await cleanClone()
    expect(existsSync(join(clone, 'dist'))).toBe(false)
    await symlink(join(ROOT, 'node_modules'), join(clone, 'node_modules'))
    const build = await exec('npm', ['run', 'build'], clone)
    expect(build.code, `${build.stdout}\n${build.stderr}`).toBe(0)

    const { code, stdout, stderr } = await exec('npx', ['pgkeep', 'demo'], clone, { npm_config_offline: 'true' })
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
    if (process.env.DEMO_DEBUG) console.log(stdout)
    // Nothing left: the directory, and no server on it.
    expect(existsSync(dir![2]!)).toBe(false)
    for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
      const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
      expect(cmd.includes(dir![2]!), cmd).toBe(false)
    }
  })

  it('says what to install when there is no server to run', async () => {
    ensureBuilt()
    const { code, stderr } = await runBin(['demo', '--pg-bin', '/nonexistent/bin'])
    expect(code).toBe(2)
    expect(stderr).toMatch(/^pgkeep: error: no PostgreSQL server in '\/nonexistent\/bin': /m)
    expect(stderr).toMatch(/^HINT: give the bin directory of a PostgreSQL installation/m)
  })
})
