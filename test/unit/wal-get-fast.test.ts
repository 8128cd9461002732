// The launcher's fast path of `wal get` (bin/pgkeep's wal_get_fast, keyed by src/wal/fast-path.ts): it serves a
// prefetched segment with a rename only when everything the key binds holds, and otherwise starts node as always.
// The key is made by the real fastPathKey(); a stand-in `node` first on PATH shows whether node was started. Each
// case below changes one thing from a setting that is served, and must reach node with the file left in the spool.
// A real recovery through the fast path is in test/integration/wal-get-lean.test.ts.

import { execFileSync } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { FAST_PATH_FILE, fastPathKey } from '../../src/wal/fast-path.js'
import { spoolPaths } from '../../src/wal/prefetch-spool.js'

const ROOT = join(import.meta.dirname, '..', '..')
const LAUNCHER = join(ROOT, 'bin', 'pgkeep')
const SEGMENT = '000000010000000000000007'
const SIZE = 64 * 1024
const DEST = 'pg_wal/RECOVERYXLOG'
const ARGV = ['wal', 'get', '--repo', '/srv/pgkeep repo', '--linger', '30', SEGMENT, DEST]

describe("the launcher's fast path of wal get", () => {
  let dir: string
  let data: string
  let spool: string
  let fakeBin: string
  const content = Buffer.alloc(SIZE, 0x5a)

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-fast-'))
    fakeBin = join(dir, 'fake')
    await mkdir(fakeBin)
    await writeFile(join(fakeBin, 'node'), '#!/bin/sh\necho node-started\n', { mode: 0o755 })
  })
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  /** A data directory whose server runs, a spool with the daemon (this process: alive), the key and the segment. */
  beforeEach(async () => {
    data = join(dir, `data-${Math.random().toString(36).slice(2)}`)
    spool = join(data, 'pg_wal', '.pgkeep-prefetch')
    await mkdir(join(spool, 'tmp'), { recursive: true, mode: 0o700 })
    await chmod(spool, 0o700)
    await writeFile(join(data, 'postmaster.pid'), `4242\n${data}\n1733400000\n5432\n`)
    await writeFile(join(spool, 'daemon.json'), JSON.stringify({ pid: process.pid, bootId: 'x', repo: '/srv/pgkeep repo', cluster: null }))
    await writeFile(join(spool, SEGMENT), content, { mode: 0o600 })
    await writeKey()
  })

  async function writeKey(o: { argv?: string[]; pid?: number; size?: number } = {}) {
    const key = await fastPathKey({
      paths: spoolPaths(spool),
      argv: o.argv ?? ARGV,
      name: SEGMENT,
      dest: DEST,
      response: { status: 'ok', pid: o.pid ?? process.pid, sizeBytes: o.size ?? SIZE },
      cwd: data,
    })
    expect(key).toBeDefined()
    await writeFile(join(spool, FAST_PATH_FILE), key!, { mode: 0o600 })
  }

  /** Runs the launcher in the data directory, as the server runs restore_command; 'served' or 'node'. */
  async function run(argv = ARGV, env: NodeJS.ProcessEnv = {}): Promise<'served' | 'node'> {
    const out = execFileSync(LAUNCHER, argv, { cwd: data, env: { ...process.env, ...env, PATH: `${fakeBin}:${process.env.PATH}` } }).toString()
    if (out.includes('node-started')) {
      expect((await readFile(join(spool, SEGMENT))).equals(content)).toBe(true)
      return 'node'
    }
    expect((await readFile(join(data, DEST))).equals(content)).toBe(true)
    await expect(stat(join(spool, SEGMENT))).rejects.toThrow()
    return 'served'
  }

  it('serves the segment with a rename when everything the key binds holds', async () => {
    expect(await run()).toBe('served')
  })

  it('starts node for another argument, another segment name form, or a destination that is not last', async () => {
    expect(await run(ARGV.map((a) => (a === '30' ? '31' : a)))).toBe('node')
    expect(await run([...ARGV.slice(0, -2), '00000002.history', DEST])).toBe('node')
    expect(await run(['wal', 'get', '--repo', '/srv/pgkeep repo', SEGMENT, DEST, '--linger', '30'])).toBe('node')
  })

  it('starts node for another server run, another daemon, or a daemon that is gone', async () => {
    await writeFile(join(data, 'postmaster.pid'), `4242\n${data}\n1733400999\n5432\n`)
    expect(await run()).toBe('node')
    await writeFile(join(data, 'postmaster.pid'), `4242\n${data}\n1733400000\n5432\n`)
    await writeFile(join(spool, 'daemon.json'), JSON.stringify({ pid: process.ppid, bootId: 'x', repo: '/srv/pgkeep repo', cluster: null }))
    expect(await run()).toBe('node')
    // A pid that no process has (the largest Linux allows, plus one).
    await writeFile(join(spool, 'daemon.json'), JSON.stringify({ pid: 4194305, bootId: 'x', repo: '/srv/pgkeep repo', cluster: null }))
    await writeKey({ pid: 4194305 })
    expect(await run()).toBe('node')
  })

  it('starts node for a spool others may enter, a segment of another size, or when turned off', async () => {
    await chmod(spool, 0o755)
    expect(await run()).toBe('node')
    await chmod(spool, 0o700)
    await writeKey({ size: SIZE + 1 })
    expect(await run()).toBe('node')
    await writeKey()
    expect(await run(ARGV, { PGKEEP_WAL_GET_FAST: '0' })).toBe('node')
    expect(await run()).toBe('served')
  })

  it('leaves no key for another spool, a history file, or a working directory without a running server', async () => {
    const call = { paths: spoolPaths(spool), argv: ARGV, name: SEGMENT, dest: DEST, response: { status: 'ok' as const, pid: 1, sizeBytes: SIZE }, cwd: data }
    expect(await fastPathKey({ ...call, paths: spoolPaths(join(dir, 'elsewhere')) })).toBeUndefined()
    expect(await fastPathKey({ ...call, name: '00000002.history', argv: [...ARGV.slice(0, -2), '00000002.history', DEST] })).toBeUndefined()
    expect(await fastPathKey({ ...call, cwd: dir })).toBeUndefined()
    expect(await fastPathKey({ ...call, argv: [...ARGV.slice(0, 2), '--repo', 'a\nb', ...ARGV.slice(-2)] })).toBeUndefined()
  })
})
