// The prefetch spool of `wal get`: the daemon (run in this process) and the client side, over a real filesystem
// repository with synthetic 1 MiB segments (random bytes behind a real long page header). Served bytes must equal
// what was stored; a spooled file that fails its checks is never served; one daemon per spool; a daemon bound to
// another repository or cluster, or to a repository since replaced at its location, retires and is replaced; the
// window moves with the requests; an idle daemon asks the repository nothing and leaves; the spool is refused
// unless it is the user's own, 0700, and not a link.

import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { walFileName } from '../../src/pg/wal-names.js'
import { initRepository, openRepository, type Repository } from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import type { Storage } from '../../src/storage/storage.js'
import { acquireSpool, runPrefetchDaemon, type DaemonBinding } from '../../src/wal/prefetch-daemon.js'
import { getViaSpool, prepareSpool, spoolPaths, type SpoolPaths } from '../../src/wal/prefetch-spool.js'
import { WalSegmentWriter } from '../../src/repo/wal-segment-writer.js'
import { pushWalFile } from '../../src/wal/wal-push.js'

const SEG = 1 << 20
const SYS = 7000000000000000004n
const name = (segno: number) => walFileName(1, BigInt(segno), SEG)
const HISTORY = '00000002.history'
const HISTORY_TEXT = '1\t0/5000000\tno recovery target specified\n'

/**
 * `count` segments of cluster `sys` on timeline 1 from segment 0: random bytes, each with the long page header a
 * PostgreSQL 15 server writes at the start of a segment (xlog_internal.h: magic, info, tli, pageaddr, rem_len,
 * sysid, seg_size, xlog_blcksz; little-endian).
 */
function walStream(count: number, sys = SYS): Buffer {
  const stream = randomBytes(count * SEG)
  for (let n = 0; n < count; n++) {
    const h = stream.subarray(n * SEG, n * SEG + 40)
    h.writeUInt16LE(0xd110, 0) // XLOG_PAGE_MAGIC of PostgreSQL 15
    h.writeUInt16LE(0x0002, 2) // XLP_LONG_HEADER
    h.writeUInt32LE(1, 4)
    h.writeBigUInt64LE(BigInt(n * SEG), 8)
    h.writeUInt32LE(0, 16)
    h.writeUInt32LE(0, 20)
    h.writeBigUInt64LE(sys, 24)
    h.writeUInt32LE(SEG, 32)
    h.writeUInt32LE(8192, 36)
  }
  return stream
}

/** A Storage that counts the operations made through it (to see that an idle daemon makes none). */
function counting(s: Storage): { storage: Storage; ops: () => number } {
  let n = 0
  const storage: Storage = {
    name: s.name,
    features: s.features,
    stat: (k, o) => (n++, s.stat(k, o)),
    read: (k, o) => (n++, s.read(k, o)),
    write: (k, b, o) => (n++, s.write(k, b, o)),
    list: (p, o) => (n++, s.list(p, o)),
    remove: (k, o) => (n++, s.remove(k, o)),
    close: () => s.close(),
  }
  return { storage, ops: () => n }
}

async function waitFor(fn: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!(await fn())) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((res) => setTimeout(res, 20))
  }
}

describe('wal get prefetch spool', () => {
  let dir: string
  const repos: Repository[] = []
  let daemons: Promise<unknown>[] = []
  let stop = new AbortController()
  afterEach(async () => {
    stop.abort()
    await Promise.allSettled(daemons)
    stop = new AbortController()
    daemons = []
    for (const r of repos.splice(0)) await r.close().catch(() => {})
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  /** A repository at `at` holding `stream` as segments of `sys` and a timeline 2 history file; opened through a counting storage. */
  async function repoWith(at: string, stream: Buffer, sys = SYS): Promise<{ repo: Repository; ops: () => number }> {
    const writer = await initRepository(await openFsStorage(at))
    const w = new WalSegmentWriter(writer, { systemId: sys, timeline: 1, segmentSizeBytes: SEG, startLsn: 0n })
    await w.write(0n, stream)
    await w.close()
    await writeFile(join(dir, HISTORY), HISTORY_TEXT)
    await pushWalFile(writer, join(dir, HISTORY), { cluster: String(sys) })
    await writer.close()
    const c = counting(await openFsStorage(at))
    const repo = await openRepository(c.storage)
    repos.push(repo)
    return { repo, ops: c.ops }
  }

  /** Starts a daemon in this process as `wal get --daemon` would (it returns at once when the spool is taken). */
  function daemonStarter(paths: SpoolPaths, repo: () => Repository, binding: DaemonBinding, o: { lingerMs?: number; log?: (l: string) => void } = {}) {
    let spawned = 0
    const spawnDaemon = () => {
      spawned++
      const d = (async () => {
        const lock = await acquireSpool(paths, binding)
        if (!lock) return 'lost'
        try {
          return await runPrefetchDaemon({
            repo: repo(),
            paths,
            binding,
            systemId: String(SYS),
            prefetchCount: 4,
            concurrency: 2,
            lingerMs: o.lingerMs ?? 60_000,
            signal: stop.signal,
            log: o.log,
          })
        } finally {
          await lock.release()
        }
      })()
      daemons.push(d)
      return d
    }
    return { spawnDaemon, spawned: () => spawned }
  }

  const spooledNames = async (paths: SpoolPaths) => (await readdir(paths.dir)).filter((f) => /^[0-9A-F]{24}$/.test(f)).sort()

  it('serves verified segments, prefetches ahead, answers missing, and an idle daemon asks nothing and leaves', async () => {
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-spool-'))
    const stream = walStream(20)
    const segment = (n: number) => stream.subarray(n * SEG, (n + 1) * SEG)
    const { repo, ops } = await repoWith(join(dir, 'repo'), stream)
    const paths = spoolPaths(join(dir, 'spool'))
    await prepareSpool(paths)
    // Leftovers of a crashed daemon: its daemon.json and a wrong file under a served name.
    await writeFile(paths.daemonFile, JSON.stringify({ pid: 2 ** 22 + 7, bootId: 'x', repo: 'R', cluster: null, startedAt: '' }))
    await writeFile(join(paths.dir, name(3)), 'garbage')
    const lines: string[] = []
    const d = daemonStarter(paths, () => repo, { repo: 'R', cluster: String(SYS) }, { lingerMs: 2000, log: (l) => lines.push(l) })
    const get = async (segno: number) => {
      const dest = join(dir, `RECOVERYXLOG-${segno}`)
      const result = await getViaSpool({
        paths,
        name: name(segno),
        dest,
        repo: 'R',
        cluster: String(SYS),
        localSystemId: String(SYS),
        spawnDaemon: d.spawnDaemon,
      })
      return { result, bytes: result === 'served' ? await readFile(dest) : undefined, mode: result === 'served' ? (await stat(dest)).mode & 0o777 : 0 }
    }

    const first = await get(1)
    expect(first.result).toBe('served')
    expect(first.bytes!.equals(segment(1))).toBe(true)
    expect(first.mode).toBe(0o600)
    expect(d.spawned()).toBe(1)
    // The next four arrive in the spool, verified, without being asked for; files of 0600.
    await waitFor(async () => (await spooledNames(paths)).length === 4)
    expect(await spooledNames(paths)).toEqual([name(2), name(3), name(4), name(5)])
    expect((await readFile(join(paths.dir, name(3)))).equals(segment(3))).toBe(true) // not the garbage
    for (const f of await spooledNames(paths)) expect((await stat(join(paths.dir, f))).mode & 0o777).toBe(0o600)

    for (const n of [2, 3, 4, 5, 6, 7]) {
      const g = await get(n)
      expect(g.result).toBe('served')
      expect(g.bytes!.equals(segment(n)), `segment ${n}`).toBe(true)
    }
    expect(d.spawned()).toBe(1)
    // The window follows the requests: 8..11 now, nothing behind it.
    await waitFor(async () => (await spooledNames(paths)).join() === [8, 9, 10, 11].map(name).join())

    expect((await get(25)).result).toBe('missing')
    // Idle now: no repository requests at all while it lingers (a missing segment is not polled for), then it
    // leaves and takes its files with it.
    await waitFor(() => lines.some((l) => l.includes(`fetched ${name(11)}`)))
    const before = ops()
    await new Promise((r) => setTimeout(r, 1500))
    expect(ops() - before, 'repository operations of the idle daemon').toBe(0)
    expect(await daemons[0]).toBe('idle')
    expect(await spooledNames(paths)).toEqual([])
    expect(existsSync(paths.daemonFile)).toBe(false)
  })

  it('never serves a spooled file that fails its checks: it is removed and the caller fetches directly', async () => {
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-spool-'))
    const stream = walStream(12)
    const { repo } = await repoWith(join(dir, 'repo'), stream)
    const paths = spoolPaths(join(dir, 'spool'))
    await prepareSpool(paths)
    const d = daemonStarter(paths, () => repo, { repo: 'R', cluster: String(SYS) })
    const get = (segno: number, localSystemId = String(SYS)) =>
      getViaSpool({
        paths,
        name: name(segno),
        dest: join(dir, `RECOVERYXLOG-${segno}`),
        repo: 'R',
        cluster: String(SYS),
        localSystemId,
        spawnDaemon: d.spawnDaemon,
      })
    expect(await get(1)).toBe('served')
    await waitFor(async () => (await spooledNames(paths)).length === 4)

    // Same size, another cluster's header; same size, another segment of this cluster; a truncated file.
    const other = walStream(3, 7000000000000000099n).subarray(2 * SEG, 3 * SEG)
    await writeFile(join(paths.dir, name(2)), other)
    await writeFile(join(paths.dir, name(3)), stream.subarray(7 * SEG, 8 * SEG))
    await writeFile(join(paths.dir, name(4)), stream.subarray(4 * SEG, 4 * SEG + 1000))
    for (const n of [2, 3, 4]) {
      expect(await get(n), `segment ${n}`).toBe('unavailable')
      expect(existsSync(join(dir, `RECOVERYXLOG-${n}`)), `segment ${n} not served`).toBe(false)
      expect(existsSync(join(paths.dir, name(n))), `bad segment ${n} removed`).toBe(false)
    }
    // The daemon fetches a removed file again when asked.
    expect(await get(3)).toBe('served')
    expect((await readFile(join(dir, 'RECOVERYXLOG-3'))).equals(stream.subarray(3 * SEG, 4 * SEG))).toBe(true)

    // A history file (no header to check) is checked by its CRC-32C: served once, then a same-size impostor is not.
    const getHistory = () =>
      getViaSpool({
        paths,
        name: HISTORY,
        dest: join(dir, 'RECOVERYHISTORY'),
        repo: 'R',
        cluster: String(SYS),
        localSystemId: String(SYS),
        spawnDaemon: d.spawnDaemon,
      })
    expect(await getHistory()).toBe('served')
    expect(await readFile(join(dir, 'RECOVERYHISTORY'), 'utf8')).toBe(HISTORY_TEXT)
    await rm(join(dir, 'RECOVERYHISTORY'))
    await writeFile(join(paths.dir, HISTORY), HISTORY_TEXT.replace('5', '6'))
    expect(await getHistory()).toBe('unavailable')
    expect(existsSync(join(dir, 'RECOVERYHISTORY'))).toBe(false)
    // A data directory of another cluster is not served this one's WAL: that is an error, not "missing".
    await expect(get(5, '7000000000000000099')).rejects.toMatchObject({ code: 'USAGE' })
  })

  it('runs one daemon per spool; a daemon of another repository, cluster, or of a replaced repository is replaced', async () => {
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-spool-'))
    const paths = spoolPaths(join(dir, 'spool'))
    await prepareSpool(paths)
    // The lock: of several takers at once exactly one wins; released, it can be taken again.
    const takers = await Promise.all([1, 2, 3, 4].map(() => acquireSpool(paths, { repo: 'R', cluster: null })))
    expect(takers.filter((t) => t !== undefined)).toHaveLength(1)
    await takers.find((t) => t !== undefined)!.release()
    const again = await acquireSpool(paths, { repo: 'R', cluster: null })
    expect(again).toBeDefined()
    await again!.release()

    const at = join(dir, 'repo')
    const oldStream = walStream(6)
    let current = (await repoWith(at, oldStream)).repo
    const lines: string[] = []
    const d = daemonStarter(paths, () => current, { repo: at, cluster: String(SYS) }, { log: (l) => lines.push(l) })
    const get = (segno: number, repo = at) =>
      getViaSpool({
        paths,
        name: name(segno),
        dest: join(dir, 'RECOVERYXLOG'),
        repo,
        cluster: String(SYS),
        localSystemId: String(SYS),
        spawnDaemon: d.spawnDaemon,
      })
    expect(await get(1)).toBe('served')
    expect(d.spawned()).toBe(1)

    // The repository at the same location is replaced by one with more WAL: the lingering daemon retires at the
    // next request and a new one (opening the new repository) answers it.
    await rm(at, { recursive: true, force: true })
    const newStream = walStream(12)
    current = (await repoWith(at, newStream)).repo
    expect(await get(9)).toBe('served')
    expect((await readFile(join(dir, 'RECOVERYXLOG'))).equals(newStream.subarray(9 * SEG, 10 * SEG))).toBe(true)
    expect(d.spawned()).toBe(2)
    expect(lines.some((l) => /retired: the repository at .* is no longer the one it opened/.test(l))).toBe(true)

    // Asked for another repository location: it retires too (that client's own daemon would take over).
    expect(await get(10, join(dir, 'elsewhere'))).not.toBe('missing')
    expect(lines.some((l) => /retired: asked for repository/.test(l))).toBe(true)
  })

  it("refuses a spool that is not the user's own private directory, and creates a missing one 0700", async () => {
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-spool-'))
    const created = spoolPaths(join(dir, 'a', 'spool'))
    await prepareSpool(created)
    expect((await stat(created.dir)).mode & 0o777).toBe(0o700)
    for (const d of [created.reqDir, created.respDir, created.tmpDir]) expect((await stat(d)).mode & 0o777).toBe(0o700)

    const open = join(dir, 'open')
    await mkdir(open, { mode: 0o700 })
    await chmod(open, 0o755)
    await expect(prepareSpool(spoolPaths(open))).rejects.toMatchObject({ code: 'CONFIG', message: expect.stringMatching(/mode is 0755/) })

    const link = join(dir, 'link')
    await symlink(created.dir, link)
    await expect(prepareSpool(spoolPaths(link))).rejects.toMatchObject({ code: 'CONFIG', message: expect.stringMatching(/symbolic link/) })
    expect((await lstat(link)).isSymbolicLink()).toBe(true)

    // A subdirectory swapped for a link is refused as well.
    const inner = spoolPaths(join(dir, 'inner'))
    await prepareSpool(inner)
    await rm(inner.tmpDir, { recursive: true })
    await symlink(dir, inner.tmpDir)
    await expect(prepareSpool(inner)).rejects.toMatchObject({ code: 'CONFIG' })

    if (process.getuid?.() === 0) {
      const foreign = join(dir, 'foreign')
      await mkdir(foreign, { mode: 0o700 })
      await chown(foreign, 65534, 65534)
      await expect(prepareSpool(spoolPaths(foreign))).rejects.toMatchObject({ code: 'CONFIG', message: expect.stringMatching(/belongs to user id 65534/) })
    }
  })
})
