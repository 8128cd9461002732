// The prefetch spool of `wal get`: the daemon (run in this process) and the client side, over a real filesystem
// repository with synthetic 1 MiB segments. Served bytes must equal what was stored; stale spool files are never
// served; the window moves with the requests; a missing file is answered as missing; the idle daemon empties
// the spool and leaves.

import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { walFileName } from '../../src/pg/wal-names.js'
import { acquireSpool, runPrefetchDaemon } from '../../src/wal/prefetch-daemon.js'
import { getViaSpool, spoolPaths } from '../../src/wal/prefetch-spool.js'
import { WalSegmentWriter } from '../../src/wal/segment-writer.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'

const SEG = 1 << 20
const SYS = 7000000000000000004n
const name = (segno: number) => walFileName(1, BigInt(segno), SEG)

describe('wal get prefetch spool', () => {
  let r: TestRepo
  let dir: string
  let daemon: Promise<void> | undefined
  const stop = new AbortController()
  afterEach(async () => {
    stop.abort()
    await daemon?.catch(() => {})
    await r?.close()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('serves verified segments, prefetches ahead, answers missing, and cleans up when idle', async () => {
    r = await freshFsRepo()
    const stream = randomBytes(20 * SEG)
    const w = new WalSegmentWriter(r.repo, { systemId: SYS, timeline: 1, segmentSizeBytes: SEG, startLsn: 0n })
    await w.write(0n, stream)
    await w.close()
    const segment = (n: number) => stream.subarray(n * SEG, (n + 1) * SEG)

    dir = await mkdtemp(join(tmpdir(), 'pgkeep-spool-'))
    const paths = spoolPaths(join(dir, 'spool'))
    // Leftovers of a crashed daemon: a lock of a dead process and a wrong file under a served name.
    await mkdir(paths.dir, { recursive: true })
    await writeFile(paths.daemonFile, JSON.stringify({ pid: 2 ** 22 + 7, bootId: 'x', repo: 'R', cluster: null, startedAt: '' }))
    await writeFile(join(paths.dir, name(3)), 'garbage')
    let spawned = 0
    const spawnDaemon = () => {
      spawned++
      daemon = (async () => {
        if (!(await acquireSpool(paths, { repo: 'R', cluster: String(SYS) }))) return
        await runPrefetchDaemon({ repo: r.repo, paths, systemId: String(SYS), prefetchCount: 4, concurrency: 2, lingerMs: 300, signal: stop.signal })
      })()
    }
    const get = async (segno: number) => {
      const dest = join(dir, `RECOVERYXLOG-${segno}`)
      const result = await getViaSpool({ paths, name: name(segno), dest, repo: 'R', cluster: String(SYS), spawnDaemon })
      return { result, bytes: result === 'served' ? await readFile(dest) : undefined }
    }

    const first = await get(1)
    expect(first.result).toBe('served')
    expect(first.bytes!.equals(segment(1))).toBe(true)
    expect(spawned).toBe(1)
    // The next four arrive in the spool, verified, without being asked for.
    const spooled = async () => (await readdir(paths.dir)).filter((f) => /^[0-9A-F]{24}$/.test(f)).sort()
    await waitFor(async () => (await spooled()).length === 4)
    expect(await spooled()).toEqual([name(2), name(3), name(4), name(5)])
    expect((await readFile(join(paths.dir, name(3)))).equals(segment(3))).toBe(true) // not the garbage

    for (const n of [2, 3, 4, 5, 6, 7]) {
      const g = await get(n)
      expect(g.result).toBe('served')
      expect(g.bytes!.equals(segment(n)), `segment ${n}`).toBe(true)
    }
    expect(spawned).toBe(1)
    // The window follows the requests: 8..11 now, nothing behind it.
    await waitFor(async () => (await spooled()).join() === [8, 9, 10, 11].map(name).join())

    expect((await get(25)).result).toBe('missing')
    // Idle: the daemon leaves and takes its files with it.
    await daemon
    expect(await spooled()).toEqual([])
    expect(existsSync(paths.daemonFile)).toBe(false)
  })
})

async function waitFor(fn: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!(await fn())) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((res) => setTimeout(res, 20))
  }
}
