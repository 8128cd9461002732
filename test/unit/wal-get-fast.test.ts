// The launcher's fast path of `wal get` (bin/pgkeep's wal_get_fast, keyed by src/wal/fast-path.ts): it serves a
// prefetched segment with a rename, or asks the daemon and acts on a "missing" or "segment spooled" answer, only when
// everything the key binds holds, and otherwise starts node as always. The key is made by the real fastPathKey(); a
// stand-in `node` first on PATH shows whether node was started. The daemon's side of the spool protocol (requests in
// req/, answers in resp/) is played by this process, whose pid daemon.json names; the real daemon answering the
// launcher through a recovery is in test/integration/wal-get-lean.test.ts. Each refusal below changes one thing
// from a setting that is served, and must reach node with the file left in the spool.

import { execFile, spawn } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { decodeControlFile } from '../../src/pg/pg-control.js'
import { FAST_PATH_FILE, fastPathKey, leaveFastPathKey } from '../../src/wal/fast-path.js'
import { type SpoolResponse, spoolPaths } from '../../src/wal/prefetch-spool.js'
import { fixture } from '../fixtures/pg/fixtures.js'

const ROOT = join(import.meta.dirname, '..', '..')
const LAUNCHER = join(ROOT, 'bin', 'pgkeep')
const SEGMENT = '000000010000000000000007'
const HISTORY = '00000002.history'
const SIZE = 64 * 1024
const DEST = 'pg_wal/RECOVERYXLOG'
const REPO = '/srv/pgkeep repo'
const ARGV = ['wal', 'get', '--repo', REPO, '--linger', '30', SEGMENT, DEST]
const withName = (name: string) => [...ARGV.slice(0, -2), name, DEST]

/** How one launcher run ended: served by the launcher, answered "missing" by it (exit 1), or node started. */
type Outcome = 'served' | 'missing' | 'node'

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
    for (const sub of ['tmp', 'req', 'resp']) await mkdir(join(spool, sub), { recursive: true, mode: 0o700 })
    await chmod(spool, 0o700)
    await writeFile(join(data, 'postmaster.pid'), `4242\n${data}\n1733400000\n5432\n`)
    await writeDaemonFile(process.pid)
    await writeFile(join(spool, SEGMENT), content, { mode: 0o600 })
    await writeKey()
  })

  const writeDaemonFile = (pid: number) => writeFile(join(spool, 'daemon.json'), JSON.stringify({ pid, bootId: 'x', repo: REPO, cluster: null }))

  const call = (o: { argv?: string[]; name?: string; response?: SpoolResponse } = {}) => ({
    paths: spoolPaths(spool),
    argv: o.argv ?? ARGV,
    name: o.name ?? SEGMENT,
    dest: DEST,
    request: { repo: REPO, cluster: '7000000000000000001' },
    response: o.response ?? { status: 'ok' as const, pid: process.pid, sizeBytes: SIZE },
    cwd: data,
  })

  async function writeKey(o: { argv?: string[]; pid?: number; size?: number } = {}) {
    const key = await fastPathKey(call({ argv: o.argv, response: { status: 'ok', pid: o.pid ?? process.pid, sizeBytes: o.size ?? SIZE } }))
    expect(key).toBeDefined()
    await writeFile(join(spool, FAST_PATH_FILE), key!, { mode: 0o600 })
  }

  /**
   * Plays the daemon's side of the protocol until stopped: answers each request in req/ with `answer(request)`
   * (none: left unanswered), as the daemon does (answer renamed into resp/, request removed), and keeps them.
   */
  function answering(answer: (req: Record<string, unknown>) => SpoolResponse | undefined) {
    const requests: Record<string, unknown>[] = []
    let stop = false
    const done = (async () => {
      const handled = new Set<string>()
      while (!stop) {
        for (const id of await readdir(join(spool, 'req')).catch(() => [] as string[])) {
          if (id.startsWith('.') || handled.has(id)) continue
          handled.add(id)
          const req = JSON.parse(await readFile(join(spool, 'req', id), 'utf8')) as Record<string, unknown>
          requests.push(req)
          const r = answer(req)
          if (r === undefined) continue
          await writeFile(join(spool, 'tmp', id), JSON.stringify(r))
          await rename(join(spool, 'tmp', id), join(spool, 'resp', id))
          await unlink(join(spool, 'req', id))
        }
        await sleep(5)
      }
    })()
    return {
      requests,
      stop: async () => {
        stop = true
        await done
      },
    }
  }

  /** Runs the launcher in the data directory, as the server runs restore_command. */
  async function run(argv = ARGV, env: NodeJS.ProcessEnv = {}, file = SEGMENT): Promise<Outcome> {
    const spooled = await stat(join(spool, SEGMENT)).then(
      () => true,
      () => false,
    )
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
      execFile(LAUNCHER, argv, { cwd: data, env: { ...process.env, ...env, PATH: `${fakeBin}:${process.env.PATH}` } }, (err, stdout, stderr) =>
        done({ code: err ? Number(err.code) : 0, stdout, stderr }),
      )
    })
    if (r.stdout.includes('node-started')) {
      expect(r.code).toBe(0)
      // Left where it was.
      if (spooled) expect((await readFile(join(spool, SEGMENT))).equals(content)).toBe(true)
      return 'node'
    }
    if (r.code === 1) {
      expect(r.stderr).toBe(`pgkeep: ${file} is not in the repository\n`)
      await expect(stat(join(data, DEST))).rejects.toThrow()
      return 'missing'
    }
    expect(r).toMatchObject({ code: 0, stderr: '' })
    expect((await readFile(join(data, DEST))).equals(content)).toBe(true)
    await expect(stat(join(spool, SEGMENT))).rejects.toThrow()
    await rm(join(data, DEST))
    return 'served'
  }

  it('serves the segment with a rename when everything the key binds holds', async () => {
    expect(await run()).toBe('served')
  })

  it('starts node for another argument, another file name form, or a destination that is not last', async () => {
    expect(await run(ARGV.map((a) => (a === '30' ? '31' : a)))).toBe('node')
    expect(await run(withName('000000010000000000000007.partial'))).toBe('node')
    expect(await run(withName('0000000100000000000000070'))).toBe('node')
    expect(await run(['wal', 'get', '--repo', REPO, SEGMENT, DEST, '--linger', '30'])).toBe('node')
  })

  it('starts node for another server run, another daemon, or a daemon that is gone', async () => {
    await writeFile(join(data, 'postmaster.pid'), `4242\n${data}\n1733400999\n5432\n`)
    expect(await run()).toBe('node')
    await writeFile(join(data, 'postmaster.pid'), `4242\n${data}\n1733400000\n5432\n`)
    await writeDaemonFile(process.ppid)
    expect(await run()).toBe('node')
    // A pid that no process has (the largest Linux allows, plus one).
    await writeDaemonFile(4194305)
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

  it('asks the daemon for a segment not in the spool yet, and serves it once the answer says it is there', async () => {
    await rename(join(spool, SEGMENT), join(dir, 'aside'))
    const daemon = answering(() => undefined)
    const launched = run()
    await expect.poll(() => daemon.requests.length).toBe(1)
    // The request as node's client writes it, with the key's repository and cluster.
    expect(daemon.requests[0]).toEqual({ name: SEGMENT, repo: REPO, cluster: '7000000000000000001', client: 'shell' })
    await daemon.stop()
    await rename(join(dir, 'aside'), join(spool, SEGMENT))
    const id = (await readdir(join(spool, 'req'))).find((f) => !f.startsWith('.'))!
    // Whole or not at all, as the daemon answers (the launcher reads an answer as soon as its name is there).
    await writeFile(join(spool, 'tmp', id), JSON.stringify({ status: 'ok', systemId: '7000000000000000001', pid: process.pid, sizeBytes: SIZE }))
    await rename(join(spool, 'tmp', id), join(spool, 'resp', id))
    expect(await launched).toBe('served')
    expect(await readdir(join(spool, 'resp'))).toEqual([])
  })

  it('says a segment or a history file is not in the repository when the daemon answers so, without node', async () => {
    await rm(join(spool, SEGMENT))
    const daemon = answering(() => ({ status: 'missing', pid: process.pid }))
    try {
      expect(await run()).toBe('missing')
      expect(await run(withName(HISTORY), {}, HISTORY)).toBe('missing')
      expect(daemon.requests.map((r) => r.name)).toEqual([SEGMENT, HISTORY])
      // Nothing is left behind: requests and answers are gone.
      expect([...(await readdir(join(spool, 'req'))), ...(await readdir(join(spool, 'resp')))]).toEqual([])
    } finally {
      await daemon.stop()
    }
  })

  it('starts node for any other answer: another daemon, an error, a history file found, a segment of another size', async () => {
    await rm(join(spool, SEGMENT))
    let next: SpoolResponse = { status: 'missing', pid: process.ppid }
    const daemon = answering(() => next)
    try {
      expect(await run()).toBe('node')
      next = { status: 'error', message: 'could not fetch' }
      expect(await run()).toBe('node')
      // Node checks a history file's CRC-32C: the launcher does not serve one.
      next = { status: 'ok', systemId: '1', pid: process.pid, sizeBytes: 10, crc32c: '00000000' }
      expect(await run(withName(HISTORY), {}, HISTORY)).toBe('node')
      await writeFile(join(spool, SEGMENT), content, { mode: 0o600 })
      await rm(join(spool, FAST_PATH_FILE))
      await writeFile(join(spool, FAST_PATH_FILE), (await fastPathKey(call({ response: { status: 'missing', pid: process.pid } })))!)
      next = { status: 'ok', systemId: '1', pid: process.pid, sizeBytes: SIZE + 1 }
      expect(await run()).toBe('node')
      expect(daemon.requests).toHaveLength(4)
    } finally {
      await daemon.stop()
    }
  })

  it('asks nothing through a request or answer directory that is a link, or that others may enter', async () => {
    await rm(join(spool, SEGMENT))
    const elsewhere = join(dir, `elsewhere-${Math.random().toString(36).slice(2)}`)
    await mkdir(elsewhere, { mode: 0o700 })
    await rm(join(spool, 'req'), { recursive: true })
    await symlink(elsewhere, join(spool, 'req'))
    expect(await namesWhile(elsewhere, run())).toEqual({ outcome: 'node', names: [] })
    await rm(join(spool, 'req'))
    await mkdir(join(spool, 'req'), { mode: 0o700 })
    await chmod(join(spool, 'resp'), 0o755)
    expect(await namesWhile(join(spool, 'req'), run())).toEqual({ outcome: 'node', names: [] })
  }, 6_000)

  /** What `launched` ends with, and every name seen in `path` meanwhile (a request the launcher wrote there). */
  async function namesWhile(path: string, launched: Promise<Outcome>): Promise<{ outcome: Outcome; names: string[] }> {
    const names = new Set<string>()
    let done = false
    const outcome = launched.finally(() => (done = true))
    while (!done) {
      for (const n of await readdir(path).catch(() => [] as string[])) names.add(n)
      await sleep(5)
    }
    return { outcome: await outcome, names: [...names] }
  }

  it('gives up asking and starts node when the daemon ends without answering', async () => {
    await rm(join(spool, SEGMENT))
    const stand = spawn('sleep', ['60'], { stdio: 'ignore' })
    try {
      await writeDaemonFile(stand.pid!)
      await writeKey({ pid: stand.pid })
      const daemon = answering(() => undefined)
      const launched = run()
      await expect.poll(() => daemon.requests.length).toBe(1)
      await daemon.stop()
      stand.kill()
      expect(await launched).toBe('node')
      // Its request is withdrawn.
      expect((await readdir(join(spool, 'req'))).filter((f) => !f.startsWith('.'))).toEqual([])
    } finally {
      stand.kill()
    }
    // Not a measure of speed: the launcher looks for its daemon every 25 polls of 10 ms, and gives up waiting for an
    // answer only after 800 (over 8 s); this bound tells the two apart on any machine.
  }, 6_000)

  it("keys a missing file's answer with the data directory's segment size, and keeps a key that has one", async () => {
    const missing = call({ name: HISTORY, argv: withName(HISTORY), response: { status: 'missing', pid: process.pid } })
    // No pg_control here: no size, so a spooled segment is asked for, not taken.
    expect((await fastPathKey(missing))!.split('\n')[2]).toBe('')
    await mkdir(join(data, 'global'))
    const control = fixture('pg_control-15.gz')
    await writeFile(join(data, 'global', 'pg_control'), control)
    expect((await fastPathKey(missing))!.split('\n')[2]).toBe(String(decodeControlFile(control).walSegSizeBytes))
    // A key of the same daemon with a size stays; another daemon's is replaced.
    const before = await readFile(join(spool, FAST_PATH_FILE), 'utf8')
    await leaveFastPathKey(missing)
    expect(await readFile(join(spool, FAST_PATH_FILE), 'utf8')).toBe(before)
    await leaveFastPathKey({ ...missing, response: { status: 'missing', pid: process.ppid } })
    expect((await readFile(join(spool, FAST_PATH_FILE), 'utf8')).split('\n')[1]).toBe(String(process.ppid))
  })

  it('leaves no key for another spool, an answer without the daemon, an error, --json, or a directory without a running server', async () => {
    expect(await fastPathKey({ ...call(), paths: spoolPaths(join(dir, 'elsewhere')) })).toBeUndefined()
    expect(await fastPathKey(call({ response: { status: 'missing' } }))).toBeUndefined()
    expect(await fastPathKey(call({ response: { status: 'error', pid: process.pid } }))).toBeUndefined()
    expect(await fastPathKey(call({ name: HISTORY, argv: withName(HISTORY), response: { status: 'ok', pid: 1, sizeBytes: 10 } }))).toBeUndefined()
    expect(await fastPathKey(call({ argv: ['wal', 'get', '--json', ...ARGV.slice(2)] }))).toBeUndefined()
    expect(await fastPathKey({ ...call(), cwd: dir })).toBeUndefined()
    expect(await fastPathKey(call({ argv: [...ARGV.slice(0, 2), '--repo', 'a\nb', ...ARGV.slice(-2)] }))).toBeUndefined()
  })
})
