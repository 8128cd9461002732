// Locks between real processes: a live exclusive lock blocks exclusive and shared ones (the error names owner,
// host and pid); shared locks coexist; the lock of a SIGKILLed process on this host is found dead and removed; a
// lock whose (SIGSTOPped) owner stopped refreshing expires, stops blocking, is reported with host, pid and age,
// and its owner learns it lost the lock. Refreshing replaces the lock object instead of overwriting it.
// Refreshes refused by the storage (a test decorator): a lock that misses a refresh, or even expires, is kept or
// re-taken when nothing conflicting happened; writes that need it wait meanwhile; once an exclusive acquirer has
// broken it, it is lost for good and nothing more is written under it. `pgkeep unlock` and `pgkeep info` list
// the locks; `--remove-stale` removes a dead holder's lock, an expired and an unreadable one, never a live one.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hostname } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'

import { initRepository, openRepository, type LockStateChange, type Repository } from '../../src/repo/index.js'
import type { Storage } from '../../src/storage/storage.js'
import { runMain } from '../harness/cli.js'
import {
  compileForChildren,
  listKeys,
  openSpec,
  specLocation,
  startChild,
  startStorageFactory,
  withLockWriteFaults,
  type Child,
  type StorageFactory,
  type StorageSpec,
} from '../harness/repo-fixtures.js'
import { waitUntil } from './wal-helpers.js'

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

  /** A repository on `spec` whose lock writes can be refused (see withLockWriteFaults). */
  async function withFaults(spec: StorageSpec) {
    const { storage, faults } = withLockWriteFaults(await openSpec(spec))
    storages.push(storage)
    return { repo: await openRepository(storage), faults }
  }

  it('a refresh that fails is retried and the lock stays held; a write that needs it waits meanwhile', async () => {
    const { spec } = await fresh()
    const { repo, faults } = await withFaults(spec)
    const changes: LockStateChange[] = []
    const lock = await repo.acquireLock('shared', { purpose: 'backup', staleAfterMs: 4000, onStateChange: (c) => changes.push(c) })
    const first = lock.key
    faults.failing = true
    await waitUntil('a refresh was refused', () => faults.refused > 0, 20_000, 20)
    expect(lock.state).toBe('at-risk')
    // A record write waits while the lock is at risk (it reaches the storage only once the lock is held again).
    const recordWritten = repo.writeRecord('test', 'while-at-risk', { n: 1 }).then(() => 'written')
    faults.failing = false
    await waitUntil('the lock is held again', () => lock.state === 'held', 20_000, 20)
    expect(await recordWritten).toBe('written')
    expect(lock.signal.aborted).toBe(false)
    expect(lock.key).not.toBe(first)
    expect(changes.map((c) => c.state)).toEqual(['at-risk', 'held'])
    expect(changes[0]!.message).toContain('injected fault')
    // One lock object, ours, live: the refused attempts left nothing behind.
    expect(await listKeys(repo.storage, 'locks/')).toEqual([lock.key])
    expect((await repo.listLocks()).map((l) => l.state)).toEqual(['live'])
    await lock.release()
    expect(await listKeys(repo.storage, 'locks/')).toEqual([])
  })

  it('a lock that expired while its refreshes failed is re-taken when no conflicting lock appeared', async () => {
    const { spec } = await fresh()
    const { repo, faults } = await withFaults(spec)
    const changes: LockStateChange[] = []
    const otherRepo = await second(spec)
    // (The stale interval leaves the steps below time to finish before the lock would give up on its own.)
    const lock = await repo.acquireLock('shared', { purpose: 'wal stream', staleAfterMs: 6000, onStateChange: (c) => changes.push(c) })
    const expiresAt = lock.expiresAt.getTime()
    faults.failing = true
    await waitUntil('the lock expired', () => Date.now() > expiresAt + 100, 20_000, 20)
    expect((await repo.listLocks())[0]!.state).toBe('expired')
    expect(lock.state).toBe('at-risk')
    // Meanwhile another process took a shared lock: no conflict, the lock may be re-taken.
    const other = await otherRepo.acquireLock('shared', { purpose: 'restore' })
    faults.failing = false
    await waitUntil('the lock is held again', () => lock.state !== 'at-risk', 20_000, 20)
    expect(lock.state).toBe('held')
    expect(changes.at(-1)!.message).toContain('re-taken after it expired')
    expect((await repo.listLocks()).map((l) => l.state)).toEqual(['live', 'live'])
    await repo.writeRecord('test', 'after-re-take', { n: 2 })
    await other.release()
    await lock.release()
    expect(await listKeys(repo.storage, 'locks/')).toEqual([])
  })

  it('a lock broken by an exclusive acquirer after it expired is lost for good; nothing is written under it', async () => {
    const { spec } = await fresh()
    const { repo, faults } = await withFaults(spec)
    const maintenance = await second(spec)
    const lock = await repo.acquireLock('shared', { purpose: 'backup', staleAfterMs: 6000 })
    const expiredKey = lock.key
    faults.failing = true
    await waitUntil('the lock expired', () => Date.now() > lock.expiresAt.getTime() + 100, 20_000, 20)
    const pending = repo.writeRecord('backup', 'never-listed', { n: 3 }).then(
      () => undefined,
      (e: unknown) => e,
    )
    // Maintenance takes its exclusive lock: the expired lock does not block it, and it breaks it first.
    const gc = await maintenance.acquireLock('exclusive', { purpose: 'gc' })
    expect(gc.removedLocks.map((l) => [l.key, l.state])).toEqual([[expiredKey, 'expired']])
    // The storage accepts writes again, but the lock's object is gone: it cannot be re-taken.
    faults.failing = false
    await waitUntil('the lock is lost', () => lock.state === 'lost', 20_000, 20)
    expect(lock.signal.aborted).toBe(true)
    expect(lock.signal.reason).toMatchObject({ code: 'LOCKED' })
    // (Its object is gone; an attempt that checked it just before it was removed finds the exclusive lock instead.)
    expect((lock.signal.reason as Error).message).toMatch(/was removed by another process|meanwhile the repository was locked by exclusive lock .* for 'gc'/)
    expect(await pending).toMatchObject({ code: 'LOCKED' })
    await expect(repo.writeRecord('backup', 'later', { n: 4 })).rejects.toMatchObject({ code: 'LOCKED' })
    expect(await listKeys(repo.storage, 'records/backup/')).toEqual([])
    // Lost stays lost, even after maintenance is done.
    await gc.release()
    await expect(lock.refresh()).rejects.toMatchObject({ code: 'LOCKED' })
    expect(lock.state).toBe('lost')
    expect(await listKeys(repo.storage, 'locks/')).toEqual([])
    await lock.release()
  })

  it('pgkeep unlock lists every lock and --remove-stale removes the dead, expired and unreadable ones, never a live one', async () => {
    const { spec, repo } = await fresh()
    const { url, env } = specLocation(spec)
    const live = holder(spec, 'shared')
    const liveKey = (await live.waitFor(/^LOCKED /)).slice('LOCKED '.length)
    const stopped = holder(spec, 'shared', { staleAfterMs: 1500 })
    const expiredKey = (await stopped.waitFor(/^LOCKED /)).slice('LOCKED '.length)
    stopped.process.kill('SIGSTOP')
    // Taken last: the next acquirer would remove it, dead as it is about to be.
    const dead = holder(spec, 'shared', { purpose: 'backup' })
    const deadKey = (await dead.waitFor(/^LOCKED /)).slice('LOCKED '.length)
    dead.process.kill('SIGKILL')
    await dead.exited
    await repo.storage.write('locks/0123456789abcdef0123456789abcdef', Buffer.from('not a lock\n'))
    await waitUntil(
      "the stopped holder's lock expired",
      async () => (await repo.listLocks()).some((l) => l.key === expiredKey && l.state === 'expired'),
      20_000,
    )

    const listed = await runMain(['unlock', '--repo', url, '--json'], env)
    expect(listed.code, listed.stderr).toBe(0)
    const states = Object.fromEntries(
      (JSON.parse(listed.stdout) as { locks: { key: string; state: string; pid: number | null }[] }).locks.map((l) => [l.key, [l.state, l.pid]]),
    )
    expect(states).toEqual({
      [deadKey]: ['dead', dead.process.pid],
      [liveKey]: ['live', live.process.pid],
      [expiredKey]: ['expired', stopped.process.pid],
      'locks/0123456789abcdef0123456789abcdef': ['unreadable', null],
    })
    const human = await runMain(['unlock', '--repo', url], env)
    expect(human.code).toBe(0)
    expect(human.stdout).toMatch(new RegExp(`dead +shared +backup +${hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} +${dead.process.pid} `))
    expect(human.stdout).toContain('3 stale')
    const info = await runMain(['info', '--repo', url, '--json'], env)
    expect(info.code, info.stderr).toBe(0)
    expect((JSON.parse(info.stdout) as { locks: unknown[] }).locks).toHaveLength(4)
    expect((await runMain(['info', '--repo', url], env)).stdout).toMatch(/^locks:\n {2}STATE +KIND/m)

    const removed = await runMain(['unlock', '--repo', url, '--remove-stale'], env)
    expect(removed.code, removed.stderr).toBe(0)
    expect(removed.stdout).toContain('removed 3 stale locks:')
    expect(removed.stdout).toContain(`pid ${dead.process.pid}`)
    expect(removed.stdout).toContain(`pid ${stopped.process.pid}`)
    expect(removed.stdout).toContain('not a lock this pgkeep can read')
    expect(await listKeys(repo.storage, 'locks/')).toEqual([liveKey])
    // The stopped holder, resumed, finds its lock gone and knows it lost it.
    stopped.process.kill('SIGCONT')
    await stopped.waitFor(/^LOST$/, 20_000)
    expect(await listKeys(repo.storage, 'locks/')).toEqual([liveKey])
    live.process.kill('SIGKILL')
    stopped.process.kill('SIGKILL')
    await Promise.all([live.exited, stopped.exited])
  })
})
