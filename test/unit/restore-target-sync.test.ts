// The writeback a restore starts while it writes (WritebackAhead) and the final sync that waits for it
// (syncTarget), on real directories of this machine's disk with coreutils' sync: flushes start after each slice
// of bytes, one at a time; a failed early flush, or a helper that died, makes the final step fsync every file
// (a syncfs reports a write error only once); paths reach the helper as arguments, never as shell text.

import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { syncTarget, WritebackAhead } from '../../src/restore/target-sync.js'

const dirs: string[] = []
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})

async function scratch(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'pgkeep-target-sync-'))
  dirs.push(d)
  return d
}

/** Waits until `ahead` has no flush running (settle would also end it). */
async function idle(ahead: WritebackAhead, flushes: number): Promise<void> {
  // A new flush can start only once the previous one answered: ask for one more slice until it is taken.
  for (let i = 0; i < 500; i++) {
    ahead.written(1)
    if (ahead.flushes > flushes) return
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  throw new Error('the helper never answered its flush')
}

describe.runIf(process.platform === 'linux' && existsSync('/usr/bin/sync'))('WritebackAhead', () => {
  it('starts a flush after each slice written, one at a time; the final sync waits for it and is a syncfs', async () => {
    const root = await scratch()
    await writeFile(join(root, 'f'), Buffer.alloc(64 << 10, 1))
    const ahead = await WritebackAhead.start([root, root], { stepBytes: 1000 })
    ahead.written(999)
    expect(ahead.flushes).toBe(0)
    ahead.written(1)
    expect(ahead.flushes).toBe(1)
    // Another slice while the first flush runs: counted, not started.
    ahead.written(5000)
    expect(ahead.flushes).toBe(1)
    await idle(ahead, 1)
    expect(ahead.flushes).toBe(2)
    expect(await syncTarget([root], { ahead })).toBe('syncfs')
    // Settled: no more flushes, and the same answer again.
    ahead.written(1 << 20)
    expect(ahead.flushes).toBe(2)
    expect(await ahead.settle()).toBe(true)
  })

  it('an early flush that failed makes the final sync fsync every file', async () => {
    const base = await scratch()
    const root = join(base, 'target')
    await mkdir(root)
    const ahead = await WritebackAhead.start([root], { stepBytes: 1 })
    // The helper's sync then cannot open the root: its flush fails.
    await rm(root, { recursive: true })
    ahead.written(1)
    expect(await ahead.settle()).toBe(false)
    await mkdir(join(root, 'sub'), { recursive: true })
    await writeFile(join(root, 'sub', 'f'), 'x')
    expect(await syncTarget([root], { ahead })).toBe('fsync')
    // Without a failed flush before it, the same root gets a syncfs.
    expect(await syncTarget([root])).toBe('syncfs')
  })

  it('a helper that died counts as failed: the final sync fsyncs every file', async () => {
    const root = await scratch()
    const abort = new AbortController()
    const ahead = await WritebackAhead.start([root], { stepBytes: 1, signal: abort.signal })
    abort.abort()
    expect(await ahead.settle()).toBe(false)
    ahead.written(10) // after the end: nothing, no error
    expect(await syncTarget([root], { ahead })).toBe('fsync')
  })

  it('a root named like shell text or an option reaches sync as a path', async () => {
    const base = await scratch()
    const root = join(base, '-f $(touch pwned) `touch pwned2`; touch pwned3')
    await mkdir(root)
    const ahead = await WritebackAhead.start([root], { stepBytes: 1 })
    ahead.written(1)
    // The flush of that path succeeded (a word split or a substitution would have made sync fail or run more).
    expect(await ahead.settle()).toBe(true)
    expect(await readdir(base)).toEqual([root.slice(base.length + 1)])
    for (const name of ['pwned', 'pwned2', 'pwned3']) expect(existsSync(join(process.cwd(), name)), name).toBe(false)
  })
})
