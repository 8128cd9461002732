// Garbage collection's protocol on a real file-system repository, driven through the library (no PostgreSQL): what
// is dead goes and what is live stays (bytes measured on the storage, verify --read-data as the oracle), mostly dead
// packs are repacked, small index objects merged, crash leftovers removed, duplicates resolved; and the concurrency
// rules: a session that referenced a blob of a condemned pack keeps that pack alive until its record is written, a
// session that never did lets gc delete while it runs, expired locks that did not acknowledge are broken, unreadable
// ones hold deletion back, and readers that loaded the index before a repack still read every blob.

import { mkdir, readdir, stat, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { LockedError } from '../../src/errors.js'
import {
  CONDEMNED_RECORD_KIND,
  collectGarbage,
  type GcOptions,
  type GcResult,
  initRepository,
  openRepository,
  type Repository,
  verifyRepository,
} from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { blobContent, listKeys, tempDir } from '../harness/repo-fixtures.js'

const base = tempDir('gc-protocol')
afterAll(() => base.remove())
let dirs = 0

/** Sum of the sizes of every object under `prefix`, measured on the storage (not by gc). */
async function bytesUnder(root: string, prefix = ''): Promise<number> {
  const storage = await openFsStorage(root)
  let n = 0
  for await (const o of storage.list(prefix)) n += o.sizeBytes
  return n
}

async function freshRepo(): Promise<{ root: string; repo: Repository; open: () => Promise<Repository> }> {
  const root = join(base.dir, `r${dirs++}`)
  const repo = await initRepository(await openFsStorage(root), { packTargetBytes: 65536 })
  return { root, repo, open: async () => openRepository(await openFsStorage(root)) }
}

/** Blob `i` of stream `seed`: 1 KiB, so that many share a pack (packs of 64 KiB in these repositories). */
const content = (seed: number, i: number) => blobContent(seed, i).subarray(0, 1024)

/** Stores `count` blobs of stream `seed` (in reverse order with `reverse`) and a record naming them; returns their ids. */
async function storeSet(repo: Repository, key: string, seed: number, count: number, o: { reverse?: boolean } = {}): Promise<string[]> {
  const ids: string[] = []
  const order = Array.from({ length: count }, (_, i) => (o.reverse ? count - 1 - i : i))
  for (const i of order) ids[i] = (await repo.putBlob('data', content(seed, i))).id
  await repo.writeRecord('test', key, { seed, count }, { blobRefs: ids })
  return ids
}

/** gc through a fresh instance with only the meta index, as the CLI opens it. */
async function gc(root: string, o: GcOptions = {}): Promise<GcResult> {
  const repo = await openRepository(await openFsStorage(root), { index: 'meta' })
  try {
    return await collectGarbage(repo, { graceMs: 0, ...o })
  } finally {
    await repo.close()
  }
}

async function verifyAll(root: string): Promise<void> {
  const repo = await openRepository(await openFsStorage(root))
  try {
    const v = await verifyRepository(repo, { readData: true })
    expect(v.problems).toEqual([])
  } finally {
    await repo.close()
  }
}

/** Every blob of `ids` reads back as blobContent(seed, i). */
async function expectReadable(root: string, seed: number, ids: string[]): Promise<void> {
  const repo = await openRepository(await openFsStorage(root))
  try {
    for (const [i, id] of ids.entries()) expect((await repo.readBlob(id)).equals(content(seed, i))).toBe(true)
  } finally {
    await repo.close()
  }
}

async function lockObjects(root: string): Promise<{ session: string; gcAcks?: string[] }[]> {
  const dir = join(root, 'locks')
  const out = []
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    try {
      out.push(JSON.parse(await (await import('node:fs/promises')).readFile(join(dir, name), 'utf8')))
    } catch {
      // being replaced
    }
  }
  return out
}

async function condemnationKeys(root: string): Promise<string[]> {
  return (await listKeys(await openFsStorage(root), `records/${CONDEMNED_RECORD_KIND}/`)).map((k) => k.slice(`records/${CONDEMNED_RECORD_KIND}/`.length))
}

/** Waits until the lock of `session` acknowledges every condemnation record now in the repository. */
async function waitForAcks(root: string, session: string): Promise<void> {
  const want = await condemnationKeys(root)
  expect(want.length).toBeGreaterThan(0)
  for (let i = 0; i < 200; i++) {
    const mine = (await lockObjects(root)).find((l) => l.session === session)
    if (want.every((k) => mine?.gcAcks?.includes(k))) return
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`the lock of session ${session} never acknowledged ${want.join(', ')}`)
}

const FAST_LOCK = { staleAfterMs: 6000, refreshIntervalMs: 300 }

describe('gc on a file-system repository', () => {
  it('deletes dead packs, repacks mostly dead ones, keeps every live blob, and returns the space', async () => {
    const { root, repo } = await freshRepo()
    const keep = await storeSet(repo, 'keep', 1, 200)
    await repo.flush()
    const drop = await storeSet(repo, 'drop', 2, 200)
    await repo.flush()
    // A pack shared by live and dead blobs: one live blob among many dead ones.
    const mixedLive = (await repo.putBlob('data', content(3, 0))).id
    for (let i = 1; i < 12; i++) await repo.putBlob('data', content(3, i))
    await repo.writeRecord('test', 'mixed', {}, { blobRefs: [mixedLive] })
    await repo.removeRecord('test', 'drop')
    await repo.close()

    const dry = await gc(root, { dryRun: true })
    expect(dry.dryRun).toBe(true)
    expect(dry.packsCondemned).toBeGreaterThan(0)
    expect(dry.freeableBytes).toBeGreaterThan(0)
    const beforeKeys = await listKeys(await openFsStorage(root), '')
    const before = await bytesUnder(root, 'packs/')
    expect(await listKeys(await openFsStorage(root), '')).toEqual(beforeKeys)

    const r = await gc(root)
    expect(r.packsDeleted).toBeGreaterThan(0)
    expect(r.packsRepacked).toBeGreaterThan(0)
    expect(r.pendingPacks).toBe(0)
    const after = await bytesUnder(root, 'packs/')
    // The dead set was about half of the stored bytes.
    expect(after).toBeLessThan(before * 0.7)
    expect(r.bytesBefore - r.bytesAfter).toBeGreaterThan(0)
    await verifyAll(root)
    await expectReadable(root, 1, keep)
    await expectReadable(root, 3, [mixedLive])
    // Nothing of the dropped set is left in the index.
    const again = await openRepository(await openFsStorage(root))
    expect(drop.filter((id) => again.isBlobKnown(id))).toEqual([])
    await again.close()
    // A second run finds nothing to do.
    const second = await gc(root)
    expect(second.packsDeleted + second.packsCondemned + second.packsRepacked).toBe(0)
  })

  it('merges small index objects: fewer of them, and an open loads fewer', async () => {
    const { root, repo, open } = await freshRepo()
    for (let i = 0; i < 60; i++) {
      await repo.putBlob('data', content(10, i))
      await repo.flush() // one index object per flush, as a WAL streamer writes one per segment
    }
    await repo.writeRecord('test', 'all', {}, { blobRefs: [] })
    const ids = []
    for (let i = 0; i < 60; i++) ids.push(repo.blobIdOf(content(10, i)))
    await repo.removeRecord('test', 'all')
    await repo.writeRecord('test', 'all2', {}, { blobRefs: ids })
    await repo.close()
    const before = (await open()).indexStats.indexObjects
    expect(before).toBeGreaterThanOrEqual(60)
    const r = await gc(root)
    expect(r.indexObjectsBefore).toBe(before)
    expect(r.indexObjectsAfter).toBeLessThanOrEqual(2)
    const reopened = await open()
    expect(reopened.indexStats.indexObjects).toBe(r.indexObjectsAfter)
    expect(reopened.indexStats.blobs).toBe(60)
    await reopened.close()
    await verifyAll(root)
    await expectReadable(root, 10, ids)
  })

  it('removes orphan packs, temporary files and probe objects older than the grace period', async () => {
    const { root, repo } = await freshRepo()
    const ids = await storeSet(repo, 'keep', 20, 5)
    await repo.close()
    // An orphan: a pack no index lists (a writer killed between its pack and its index object).
    const orphan = join(root, 'packs', 'ab', `ab${'0'.repeat(62)}`)
    await mkdir(join(root, 'packs', 'ab'), { recursive: true })
    await writeFile(orphan, Buffer.alloc(1000, 7))
    const tmp = join(root, 'packs', '.tmp-0123456789abcdef')
    await writeFile(tmp, Buffer.alloc(500, 1))
    const probe = join(root, `probe-${'1'.repeat(32)}`)
    await writeFile(probe, 'x')
    const old = new Date(Date.now() - 3 * 3600_000)
    for (const f of [orphan, tmp, probe]) await utimes(f, old, old)
    // A young temporary file stays: it may be a write in progress.
    const young = join(root, 'packs', '.tmp-fedcba9876543210')
    await writeFile(young, Buffer.alloc(10))

    const r = await gc(root, { graceMs: 3600_000 })
    // Old enough to be condemned and (no other session) deleted in the same run: its condemnation is new, so the
    // grace period keeps it one more run.
    expect(r.packsCondemned).toBe(1)
    expect(r.leftoversRemoved).toBe(2)
    await expect(stat(tmp)).rejects.toThrow()
    await expect(stat(probe)).rejects.toThrow()
    await stat(young)
    await stat(orphan)
    const r2 = await gc(root, { graceMs: 0 })
    expect(r2.packsDeleted).toBe(1)
    await expect(stat(orphan)).rejects.toThrow()
    await verifyAll(root)
    await expectReadable(root, 20, ids)
  })

  it('resolves duplicates stored by two writers at once', async () => {
    const { root, repo } = await freshRepo()
    const other = await openRepository(await openFsStorage(root))
    // Neither sees the other's blobs: both store all of them (in another order: other packs).
    const a = await storeSet(repo, 'a', 30, 10)
    const b = await storeSet(other, 'b', 30, 10, { reverse: true })
    expect(a).toEqual(b)
    await repo.close()
    await other.close()
    const r = await gc(root)
    expect(r.blobs.duplicates).toBe(10)
    expect(r.packsDeleted).toBeGreaterThan(0)
    const check = await openRepository(await openFsStorage(root))
    const v = await verifyRepository(check, { readData: true })
    expect(v.problems).toEqual([])
    expect(v.stats.duplicateBlobs).toBe(0)
    await check.close()
    await expectReadable(root, 30, a)
  })

  it('refuses to delete anything when a record cannot be read', async () => {
    const { root, repo } = await freshRepo()
    await storeSet(repo, 'keep', 40, 5)
    await storeSet(repo, 'drop', 41, 5)
    await repo.removeRecord('test', 'drop')
    await repo.close()
    await writeFile(join(root, 'records', 'test', 'keep'), 'not a record')
    const keys = await listKeys(await openFsStorage(root), 'packs/')
    await expect(gc(root)).rejects.toMatchObject({ code: 'INTEGRITY' })
    expect(await listKeys(await openFsStorage(root), 'packs/')).toEqual(keys)
  })

  it('a reader that loaded the index before a repack still reads every blob after the old pack is gone', async () => {
    const { root, repo, open } = await freshRepo()
    const live = (await repo.putBlob('data', content(50, 0))).id
    for (let i = 1; i < 15; i++) await repo.putBlob('data', content(50, i))
    await repo.writeRecord('test', 'one', {}, { blobRefs: [live] })
    await repo.close()
    const reader = await open()
    const oldPack = reader.locateBlob(live)!.packId
    const r = await gc(root)
    expect(r.packsRepacked).toBe(1)
    expect(reader.locateBlob(live)!.packId).toBe(oldPack)
    expect((await reader.readBlob(live)).equals(content(50, 0))).toBe(true)
    expect(reader.locateBlob(live)!.packId).not.toBe(oldPack)
    await reader.close()
  })
})

describe('gc beside other sessions', () => {
  it('keeps a condemned pack that a session referenced before it knew, until its record makes the pack live again', async () => {
    const { root, repo } = await freshRepo()
    await storeSet(repo, 'old', 60, 6)
    await repo.removeRecord('test', 'old')
    await repo.close()

    // A writer opens the repository and takes its lock: the blobs of 'old' are garbage, but it finds one of them
    // by deduplication before gc condemns its pack.
    const writer = await openRepository(await openFsStorage(root))
    const lock = await writer.acquireLock('shared', { purpose: 'test writer', ...FAST_LOCK })
    const reused = await writer.putBlob('data', content(60, 2))
    expect(reused.stored).toBe(false)

    const first = await gc(root)
    expect(first.packsCondemned).toBeGreaterThan(0)
    expect(first.packsDeleted).toBe(0)
    expect(first.waitingFor.join('\n')).toMatch(/test writer/)
    // Its lock refreshes, it reads the condemnation, and still does not acknowledge it: it holds a reference.
    await new Promise((r) => setTimeout(r, 1200))
    const keys = await condemnationKeys(root)
    const mine = (await lockObjects(root)).find((l) => l.session === lock.session)
    expect(keys.some((k) => mine?.gcAcks?.includes(k))).toBe(false)
    const second = await gc(root)
    expect(second.packsDeleted).toBe(0)

    // The record that uses the blob is written; once acknowledged, gc finds the pack live again and keeps it.
    await writer.writeRecord('test', 'new', {}, { blobRefs: [reused.id] })
    await waitForAcks(root, lock.session)
    const third = await gc(root)
    expect(third.packsAbsolved).toBeGreaterThan(0)
    await writer.close()
    await verifyAll(root)
    const check = await openRepository(await openFsStorage(root))
    expect((await check.readBlob(reused.id)).equals(content(60, 2))).toBe(true)
    await check.close()
    // With the writer gone, what is still dead goes.
    const last = await gc(root)
    expect(last.pendingPacks).toBe(0)
    await verifyAll(root)
  })

  it('deletes while a session that never used the condemned packs runs; that session then stores such content anew', async () => {
    const { root, repo } = await freshRepo()
    await storeSet(repo, 'old', 70, 6)
    await repo.removeRecord('test', 'old')
    const live = await storeSet(repo, 'live', 71, 3)
    await repo.close()

    const writer = await openRepository(await openFsStorage(root))
    const lock = await writer.acquireLock('shared', { purpose: 'long writer', ...FAST_LOCK })
    const first = await gc(root)
    expect(first.packsCondemned).toBeGreaterThan(0)
    expect(first.packsDeleted).toBe(0)
    await waitForAcks(root, lock.session)
    const second = await gc(root)
    expect(second.packsDeleted).toBeGreaterThan(0)
    // The writer's index still lists the deleted blobs, but it does not deduplicate against them.
    const again = await writer.putBlob('data', content(70, 1))
    expect(again.stored).toBe(true)
    await writer.writeRecord('test', 'again', {}, { blobRefs: [again.id] })
    await writer.close()
    await verifyAll(root)
    await expectReadable(root, 71, live)
    const check = await openRepository(await openFsStorage(root))
    expect((await check.readBlob(again.id)).equals(content(70, 1))).toBe(true)
    await check.close()
  })

  it('breaks an expired lock that did not acknowledge, and waits for an unreadable one', async () => {
    const { root, repo } = await freshRepo()
    await storeSet(repo, 'old', 80, 4)
    await repo.removeRecord('test', 'old')
    await repo.close()
    const past = (ms: number) => new Date(Date.now() - ms).toISOString()
    const expired = {
      version: 1,
      kind: 'shared',
      purpose: 'backup',
      host: 'elsewhere',
      hostId: 'elsewhere:boot:pid',
      pid: 1234,
      session: '00112233445566ff',
      createdAt: past(7200_000),
      refreshedAt: past(3600_000),
      expiresAt: past(1800_000),
    }
    await mkdir(join(root, 'locks'), { recursive: true })
    await writeFile(join(root, 'locks', 'a'.repeat(32)), JSON.stringify(expired))
    await writeFile(join(root, 'locks', 'b'.repeat(32)), '{ unreadable')
    const held = await gc(root)
    expect(held.packsDeleted).toBe(0)
    expect(held.waitingFor.length).toBe(1)
    // The expired one is gone already; the unreadable one holds deletion back until someone removes it.
    expect((await readdir(join(root, 'locks'))).sort()).toEqual(['b'.repeat(32)])
    const r = await openRepository(await openFsStorage(root))
    await r.removeStaleLocks()
    await r.close()
    const done = await gc(root)
    expect(done.packsDeleted).toBeGreaterThan(0)
    await verifyAll(root)
  })

  it('refuses to run beside another gc', async () => {
    const { root } = await freshRepo()
    const other = await openRepository(await openFsStorage(root))
    const lock = await other.acquireLock('shared', { purpose: 'gc' })
    await expect(gc(root)).rejects.toBeInstanceOf(LockedError)
    await lock.release()
    await other.close()
    await gc(root)
  })
})
