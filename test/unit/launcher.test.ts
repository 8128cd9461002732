// The `pgkeep` command (bin/pgkeep): a shell script that starts node on bin/pgkeep.js with the process settings of
// docs/operations.md ("The process"). Checked with a stand-in `node` first on PATH that reports what it was given,
// then with the real node: the settings leave the node process's environment, so PostgreSQL never inherits them.

import { execFileSync } from 'node:child_process'
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const ROOT = join(import.meta.dirname, '..', '..')
const OURS = 'glibc.malloc.trim_threshold=0x4000000:glibc.malloc.mmap_threshold=0x2000000:glibc.malloc.arena_max=2'
/** A stand-in `node`: prints its arguments one per line, then the two variables the launcher may set. */
const FAKE_NODE = [
  '#!/bin/sh',
  'for a in "$@"; do echo "arg:$a"; done',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion
  'echo "tunables:${GLIBC_TUNABLES-unset}"',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion
  'echo "marker:${PGKEEP_SET_GLIBC_TUNABLES-unset}"',
  '',
].join('\n')
/** Loaded with --require: at exit, prints what the CLI process's environment holds of the two variables. */
const PROBE =
  "process.on('exit', () => process.stderr.write('env:' + (process.env.GLIBC_TUNABLES ?? 'unset') + ':' + (process.env.PGKEEP_SET_GLIBC_TUNABLES ?? 'unset') + '\\n'))\n"

describe('the pgkeep command', () => {
  let dir: string
  let fakeBin: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-launcher-'))
    fakeBin = join(dir, 'fake')
    await mkdir(fakeBin)
    const fake = join(fakeBin, 'node')
    await writeFile(fake, FAKE_NODE)
    await chmod(fake, 0o755)
    // Called through a link from elsewhere, as an `npm link` or a link in /usr/local/bin calls it.
    await mkdir(join(dir, 'bin'))
    await symlink(join(ROOT, 'bin', 'pgkeep'), join(dir, 'bin', 'pgkeep'))
  })
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  const viaFake = (env: NodeJS.ProcessEnv, args: string[]) =>
    execFileSync(join(dir, 'bin', 'pgkeep'), args, { env: { ...env, PATH: `${fakeBin}:${process.env.PATH}` } })
      .toString()
      .trimEnd()
      .split('\n')

  it('starts node on bin/pgkeep.js beside the real file, with every argument intact and the memory settings', () => {
    const { GLIBC_TUNABLES: _, ...env } = process.env
    expect(viaFake(env, ['restore', '-D', '/tmp/a dir with spaces', '--label', "it's"])).toEqual([
      'arg:--max-semi-space-size=8',
      'arg:--heap-growing-percent=50',
      `arg:${join(ROOT, 'bin', 'pgkeep.js')}`,
      'arg:restore',
      'arg:-D',
      'arg:/tmp/a dir with spaces',
      'arg:--label',
      "arg:it's",
      `tunables:${OURS}`,
      'marker:1',
    ])
  })

  it("adds V8's old-generation settings for backup and restore, whatever global options stand before them", () => {
    const { GLIBC_TUNABLES: _, ...env } = process.env
    const flagsOf = (args: string[]) => viaFake(env, args).filter((l) => l.startsWith('arg:--') && !args.includes(l.slice(4)))
    const backup = ['arg:--max-semi-space-size=8', 'arg:--initial-old-space-size=64', 'arg:--heap-growing-percent=50']
    const restore = ['arg:--max-semi-space-size=8', 'arg:--heap-growing-percent=50']
    expect(flagsOf(['backup', '--type', 'full'])).toEqual(backup)
    expect(flagsOf(['--config', '/etc/pgkeep.toml', 'backup'])).toEqual(backup)
    expect(flagsOf(['--config=/etc/pgkeep.toml', '--no-config', 'backup'])).toEqual(backup)
    expect(flagsOf(['restore', 'backup'])).toEqual(restore)
    expect(flagsOf(['--config', 'backup', 'restore'])).toEqual(restore)
    for (const other of [['drill', 'backup'], ['--config', 'restore', 'info'], ['info'], ['--config'], []]) {
      expect(flagsOf(other), other.join(' ')).toEqual(['arg:--max-semi-space-size=8'])
    }
  })

  it('runs the node PGKEEP_NODE names, whatever PATH holds (a restore_command that pgkeep writes names its own)', () => {
    const { GLIBC_TUNABLES: _, ...env } = process.env
    const out = execFileSync(join(dir, 'bin', 'pgkeep'), ['--version'], { env: { ...env, PGKEEP_NODE: join(fakeBin, 'node') } })
      .toString()
      .trimEnd()
      .split('\n')
    expect(out.slice(0, 3)).toEqual(['arg:--max-semi-space-size=8', `arg:${join(ROOT, 'bin', 'pgkeep.js')}`, 'arg:--version'])
  })

  it("keeps the caller's GLIBC_TUNABLES, even an empty one, and then sets no marker", () => {
    for (const mine of ['glibc.malloc.arena_max=4', '']) {
      const out = viaFake({ ...process.env, GLIBC_TUNABLES: mine }, ['--version'])
      expect(out.slice(-2)).toEqual([`tunables:${mine}`, 'marker:unset'])
    }
  })

  it('runs the CLI, whose process no longer carries the settings it set (programs it starts do not inherit them)', async () => {
    const probe = join(dir, 'probe.cjs')
    await writeFile(probe, PROBE)
    const { GLIBC_TUNABLES: _, ...env } = process.env
    // stderr (the probe's line) onto stdout, the CLI's own output away.
    const probed = (extra: NodeJS.ProcessEnv) =>
      execFileSync('/bin/sh', ['-c', '"$0" --version 2>&1 >/dev/null', join(dir, 'bin', 'pgkeep')], {
        env: { ...env, ...extra, NODE_OPTIONS: `--require ${probe}` },
      })
        .toString()
        .trim()
    expect(probed({})).toBe('env:unset:unset')
    expect(probed({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=4' })).toBe('env:glibc.malloc.arena_max=4:unset')
    expect(execFileSync(join(dir, 'bin', 'pgkeep'), ['--version'], { env }).toString()).toMatch(/^pgkeep \d+\.\d+\.\d+/)
  })
})
