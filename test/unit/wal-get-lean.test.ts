// The lean entry point of `wal get` (src/cli/wal-get-lean.ts): what it loads, and that it answers nothing (so the
// full command runs, as before) whenever it cannot be sure to answer as the full command would. Serving through a
// live daemon is tested against a real recovery (test/integration/wal-get-lean.test.ts).

import { readFileSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { Writable } from 'node:stream'
import { afterEach, describe, expect, it } from 'vitest'
import { leanWalGet } from '../../src/cli/wal-get-lean.js'
import { ROOT } from '../harness/source-files.js'

/** Every module the lean entry point loads, transitively: project files relative to ROOT, and packages. */
function loadedBy(file: string): { files: string[]; packages: string[] } {
  const files = new Set<string>()
  const packages = new Set<string>()
  const walk = (f: string) => {
    if (files.has(f)) return
    files.add(f)
    for (const m of readFileSync(join(ROOT, f), 'utf8').matchAll(/^\s*(?:import|export)\s+(?!type\b)[^'"]*from\s+'([^']+)'/gm)) {
      const spec = m[1]!
      if (spec.startsWith('.')) walk(relative(ROOT, resolve(ROOT, dirname(f), spec)).replace(/\.js$/, '.ts'))
      else packages.add(spec)
    }
  }
  walk(file)
  return { files: [...files].sort(), packages: [...packages].sort() }
}

describe('lean wal get', () => {
  it('loads no command table, repository, storage driver, protocol layer or S3 SDK', () => {
    const { files, packages } = loadedBy('src/cli/wal-get-lean.ts')
    expect(files).toContain('src/wal/prefetch-spool.ts') // the spool's checks are the full command's own
    const heavy = files.filter((f) =>
      /^src\/(repo|backup|restore|verify)\/|^src\/cli\/(main|repo-args)\.ts$|^src\/cli\/commands\/|^protocol\/index\.ts$/.test(f),
    )
    expect(heavy).toEqual([])
    expect(files.filter((f) => f.startsWith('src/storage/'))).toEqual(['src/storage/durable-file.ts'])
    expect(packages.filter((p) => !p.startsWith('node:'))).toEqual(['@node-rs/crc32'])
  })

  let work: string | undefined
  afterEach(async () => {
    if (work) await rm(work, { recursive: true, force: true })
    work = undefined
  })

  it('answers nothing, and prints nothing, where the full command must run', async () => {
    work = await mkdtemp(join(tmpdir(), 'pgkeep-lean-'))
    const walDir = join(work, 'data', 'pg_wal')
    await mkdir(walDir, { recursive: true })
    const dest = join(walDir, 'RECOVERYXLOG')
    const printed: string[] = []
    const stderr = new Writable({
      write(chunk, _e, done) {
        printed.push(String(chunk))
        done()
      },
    })
    const seg = '000000010000000000000003'
    const env = { PGKEEP_CONFIG: join(work, 'none.toml') }
    const repo = join(work, 'repo')
    for (const argv of [
      ['wal', 'get', '--repo', repo, seg, dest], // no daemon serves the spool
      ['--no-config', 'wal', 'get', '--repo', repo, seg, dest], // the same, global option first
      ['wal', 'get', '--repo', repo, '--json', seg, dest], // --json: the full command's output
      ['wal', 'get', '--repo', repo, '--help'],
      ['wal', 'get', '--repo', repo, 'RECOVERYXLOG', dest], // not a WAL file name: a usage error (exit 255)
      ['wal', 'get', '--repo', repo, '--prefetch', '0', seg, dest],
      ['wal', 'get', '--repo', repo, '--passphrase', 'x', seg, dest], // refused by the full command
      ['wal', 'get', seg, dest], // no repository anywhere: the full command's error
      ['wal', 'push', '--repo', repo, join(walDir, seg)],
      ['--config', join(work, 'none.toml'), '--no-config', 'wal', 'get', '--repo', repo, seg, dest],
    ]) {
      expect(await leanWalGet(argv, { env: { ...env }, stderr }), argv.join(' ')).toBeUndefined()
    }
    expect(printed).toEqual([])
    expect(await readdir(walDir)).not.toContain('RECOVERYXLOG')
  })
})
