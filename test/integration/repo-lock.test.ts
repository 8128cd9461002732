// Locks between real processes: a live exclusive lock blocks exclusive and shared ones (the error names owner,
// host and pid); shared locks coexist; the lock of a SIGKILLed process on this host is found dead and removed; a
// lock whose (SIGSTOPped) owner stopped refreshing expires, stops blocking, is reported with host, pid and age,
// and its owner learns it lost the lock. Refreshing replaces the lock object instead of overwriting it.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hostname } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'

import { initRepository, openRepository, type Repository } from '../../src/repo/index.js'
import type { Storage } from '../../src/storage/storage.js'
import {
  compileForChildren,
  listKeys,
  openSpec,
  startChild,
  startStorageFactory,
  type Child,
  type StorageFactory,
  type StorageSpec,
} from '../harness/repo-fixtures.js'

let compiled: { dir: string; remove: () => void }
beforeAll(() => {
  compiled = compileForChildren()
})
afterAll(() => compiled?.remove())

describe.each(['fs', 's3'] as const)('locks on %s', (driver) => {
  let factory: StorageFactory
  const children: Child[] = []
  const storages: Storage[] = []
  beforeAll(async () => {
    factory = await startStorageFactory(driver)
  })
  afterAll(async () => {
    for (const c of children) {
      c.process.kill('SIGCONT')
      c.process.kill('SIGKILL')
    }
    for (const s of storages) await s.close()
    await factory?.stop()
  })

  async function fresh(): Promise<{ spec: StorageSpec; repo: Repository }> {
    const spec = factory.spec()
    const storage = await openSpec(spec)
    storages.push(storage)
    const repo = await initRepository(storage, { compression: 'none' })
    return { spec, repo }
  }

  async function second(spec: StorageSpec): Promise<Repository> {
    const storage = await openSpec(spec)
    storages.push(storage)
    return openRepository(storage)
  }

  function holder(spec: StorageSpec, kind: 'shared' | 'exclusive', extra: object = {}): Child {
    const c = startChild(compiled.dir, 'lock', { spec, kind, purpose: `test ${kind}`, ...extra })
    children.push(c)
    return c
  }

  it('a live exclusive lock of another process blocks exclusive and shared locks, naming owner, host and pid', async () => {
    const { spec, repo } = await fresh()
    const child = holder(spec, 'exclusive')
    await child.waitFor(/^LOCKED /)
    for (const kind of ['exclusive', 'shared'] as const) {
      const err = await repo.acquireLock(kind, { purpose: 'backup' }).catch((e: unknown) => e)
      expect(err).toMatchObject({ code: 'LOCKED', retryable: true })
      const { message, hint } = err as { message: string; hint: string }
      expect(message).toContain(`pid ${child.process.pid}`)
      expect(message).toContain(`host '${hostname()}'`)
      expect(message).toContain("'test exclusive'")
      expect(hint).toContain(`pid ${child.process.pid}`)
    }
    // A failed attempt leaves no lock object of its own behind.
    expect(await listKeys(repo.storage, 'locks/')).toHaveLength(1)
    child.process.kill('SIGKILL')
    await child.exited
  })

  it('shared locks coexist; an exclusive one waits for them', async () => {
    const { spec, repo } = await fresh()
    const child = holder(spec, 'shared')
    await child.waitFor(/^LOCKED /)
    const mine = await repo.acquireLock('shared', { purpose: 'wal stream' })
    expect(await listKeys(repo.storage, 'locks/')).toHaveLength(2)
    const other = await second(spec)
    await expect(other.acquireLock('exclusive', { purpose: 'gc' })).rejects.toMatchObject({ code: 'LOCKED' })
    await mine.release()
    child.process.kill('SIGTERM')
    await child.exited
    // SIGTERM gives the child no chance to release: its lock is dead (same host, pid gone) and removed on sight.
    const gc = await other.acquireLock('exclusive', { purpose: 'gc' })
    expect(gc.removedLocks.map((l) => l.info?.pid)).toEqual([child.process.pid])
    expect(gc.removedLocks[0]!.state).toBe('dead')
    await gc.release()
    expect(await listKeys(repo.storage, 'locks/')).toEqual([])
  })

  it('the lock of a SIGKILLed process on this host is dead and does not block', async () => {
    const { spec, repo } = await fresh()
    const child = holder(spec, 'exclusive')
    const line = await child.waitFor(/^LOCKED /)
    child.process.kill('SIGKILL')
    await child.exited
    const [status] = await repo.listLocks()
    expect(status).toMatchObject({ key: line.slice('LOCKED '.length), state: 'dead' })
    expect(status!.description).toContain(`pid ${child.process.pid}`)
    expect(status!.description).toContain('no longer exists')
    const lock = await repo.acquireLock('exclusive', { purpose: 'expire' })
    expect(lock.removedLocks).toHaveLength(1)
    await lock.release()
  })

  it('a lock that stopped being refreshed expires: reported with host, pid and age, no longer blocking; its owner learns it lost it', async () => {
    const { spec, repo } = await fresh()
    const child = holder(spec, 'exclusive', { staleAfterMs: 1500 })
    await child.waitFor(/^LOCKED /)
    // Alive (so not dead) but not refreshing: stopped.
    child.process.kill('SIGSTOP')
    await expect(repo.acquireLock('shared', { purpose: 'backup' })).rejects.toMatchObject({ code: 'LOCKED' })
    await sleep(1800)
    const lock = await repo.acquireLock('shared', { purpose: 'backup' })
    expect(lock.staleLocks).toHaveLength(1)
    const stale = lock.staleLocks[0]!
    expect(stale.state).toBe('expired')
    expect(stale.info?.pid).toBe(child.process.pid)
    expect(stale.description).toMatch(new RegExp(`pid ${child.process.pid} on host '${hostname()}', created \\d+s ago`))
    expect(stale.description).toContain('expired')
    // Reported, never removed automatically: the process still exists.
    expect((await repo.listLocks()).filter((l) => l.state === 'expired')).toHaveLength(1)
    child.process.kill('SIGCONT')
    await child.waitFor(/^LOST$/, 10_000)
    // An explicit unlock removes the expired lock and keeps the live one.
    const removed = await repo.removeStaleLocks()
    expect(removed.map((l) => l.key)).toEqual([stale.key])
    expect(await listKeys(repo.storage, 'locks/')).toEqual([lock.key])
    await lock.release()
    child.process.kill('SIGKILL')
    await child.exited
  })

  it('refreshing writes a new lock object and removes the old one', async () => {
    const { repo } = await fresh()
    const lock = await repo.acquireLock('shared', { purpose: 'wal stream', staleAfterMs: 60_000 })
    const first = lock.key
    const [before] = await repo.listLocks()
    await sleep(20)
    await lock.refresh()
    expect(lock.key).not.toBe(first)
    expect(await listKeys(repo.storage, 'locks/')).toEqual([lock.key])
    const [status] = await repo.listLocks()
    expect(status!.state).toBe('live')
    // Age stays measured from the first acquisition; the refresh time and expiry move on.
    expect(status!.info!.createdAt).toBe(before!.info!.createdAt)
    expect(Date.parse(status!.info!.refreshedAt)).toBeGreaterThan(Date.parse(before!.info!.refreshedAt))
    expect(Date.parse(status!.info!.expiresAt)).toBeGreaterThan(Date.parse(before!.info!.expiresAt))
    await repo.close() // releases locks taken through the repository
    expect(await listKeys(repo.storage, 'locks/')).toEqual([])
  })

  it('two processes racing for exclusive locks never both get one', async () => {
    const { spec } = await fresh()
    for (let round = 0; round < 5; round++) {
      const a = holder(spec, 'exclusive')
      const b = holder(spec, 'exclusive')
      const results = await Promise.all(
        [a, b].map((c) =>
          c.waitFor(/^LOCKED /, 20_000).then(
            () => 'locked',
            () => 'failed',
          ),
        ),
      )
      expect(results.filter((r) => r === 'locked').length).toBeLessThanOrEqual(1)
      for (const c of [a, b]) {
        c.process.kill('SIGKILL')
        await c.exited
      }
      // Clean the dead locks before the next round.
      const repo = await second(spec)
      const l = await repo.acquireLock('exclusive', { purpose: 'cleanup' })
      await l.release()
    }
  })
})
