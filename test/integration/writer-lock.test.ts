// Writers and their repository lock, against a real PostgreSQL 16 and a real fs repository whose lock writes a
// test decorator can refuse (the server is never mocked). A backup whose lock is taken from it (refreshes refused
// until it expires, then an exclusive lock breaks it) stops with LOCKED and lists nothing: no backup record, and
// the repository verifies clean. A WAL streamer in the same position stops at once, stores nothing more, and never
// reports a flush position beyond what it stored. `wal push` under a lost lock fails. A SIGKILLed `pgkeep wal
// stream` leaves a dead lock that `pgkeep unlock --remove-stale` removes, while a running streamer's stays.

import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { takeBackup } from '../../src/backup/backup.js'
import { parseLsn } from '../../src/pg/lsn.js'
import { listBackups } from '../../src/repo/backup-record.js'
import { openRepository, verifyRepository, type Repository } from '../../src/repo/index.js'
import { listWalKeys, partialKey, segmentKey } from '../../src/repo/wal-catalog.js'
import type { Storage } from '../../src/storage/storage.js'
import { pushWalFile } from '../../src/wal/wal-push.js'
import type { MessageEvent } from '../../src/events.js'
import { WalStreamer } from '../../src/wal/wal-streamer.js'
import { runBin } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { loadPgbench } from '../harness/load.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'
import { openSpec, withLockWriteFaults, withWriteHook } from '../harness/repo-fixtures.js'
import { ensureBuilt, spawnPgkeep, waitUntil, type PgkeepProcess } from './wal-helpers.js'

// Short enough for a test; long enough that breaking the expired lock (well within one stale interval after its
// expiry, when the writer would give up on its own) is not a race on a loaded machine.
const LOCK_TIMING = { staleAfterMs: 4000 }

describe('writers and their repository lock (PG 16)', () => {
  let pg: Cluster
  const repos: TestRepo[] = []
  const storages: Storage[] = []
  const processes: PgkeepProcess[] = []
  beforeAll(async () => {
    ensureBuilt()
    pg = await startCluster({ major: 16 })
    await loadPgbench(pg, 2)
  }, 180_000)
  afterAll(async () => {
    for (const p of processes) p.kill('SIGKILL')
    for (const s of storages) await s.close().catch(() => {})
    for (const r of repos) await r.close()
    await pg?.destroy()
  })

  async function freshRepo(): Promise<TestRepo> {
    const r = await freshFsRepo()
    repos.push(r)
    return r
  }

  /** The repository in `dir` through a storage whose lock writes fail while `faults.failing` (and more hooks). */
  async function faulty(dir: string, before: (key: string) => void | Promise<void> = () => {}) {
    const { storage: refusing, faults } = withLockWriteFaults(await openSpec({ kind: 'fs', root: dir }))
    const storage = withWriteHook(refusing, before)
    storages.push(storage)
    return { storage, faults, open: () => openRepository(storage) }
  }

  /**
   * Once a refresh was refused (from then on the writer cannot write a lock object), waits until the writer's
   * lock has expired, then takes an exclusive lock, which breaks it. (Before the first refusal a writer whose
   * timers ran late may legitimately re-take an expired lock.)
   */
  async function breakExpiredLock(r: TestRepo, faults: { refused: number }) {
    const maintenance = await r.second()
    await waitUntil('a refresh was refused', () => faults.refused > 0, 30_000, 20)
    await waitUntil("the writer's lock expired", async () => (await r.repo.listLocks()).some((l) => l.state === 'expired'), 30_000, 50)
    const gc = await maintenance.acquireLock('exclusive', { purpose: 'gc' })
    expect(gc.removedLocks.map((l) => [l.state, l.info?.purpose])).toContainEqual(['expired', expect.any(String)])
    return gc
  }

  it('a backup whose lock is taken from it stops with LOCKED and lists nothing', async () => {
    const r = await freshRepo()
    // Pack uploads wait until the lock is broken, so the backup cannot finish before; lock refreshes are refused
    // from the moment the backup holds its lock (not from some later upload, whose timing a loaded machine moves).
    let openGate!: () => void
    const gate = new Promise<void>((resolve) => (openGate = resolve))
    const f = await faulty(r.dir, async (key) => {
      if (key.startsWith('packs/')) await gate
    })
    const messages: string[] = []
    const backup = takeBackup({
      server: { conninfo: pg.url() },
      repo: await f.open(),
      lockTiming: LOCK_TIMING,
      onEvent: (m) => {
        if (m.type === 'message') messages.push(`${m.level}: ${m.text}`)
      },
    }).then(
      () => undefined,
      (e: unknown) => e as Error & { code?: string },
    )
    await waitUntil('the backup holds its lock', async () => (await r.repo.listLocks()).some((l) => l.info?.purpose === 'backup'), 60_000, 20)
    f.faults.failing = true
    const gc = await breakExpiredLock(r, f.faults)
    f.faults.failing = false
    openGate()
    const err = await backup
    expect(err?.code, String(err)).toBe('LOCKED')
    expect(err!.message).toMatch(/shared lock for 'backup' was lost/)
    expect(messages.some((m) => /^warning: could not refresh the shared lock for 'backup'/.test(m))).toBe(true)
    // Nothing listed: no backup record, and whatever index objects were written list packs that exist.
    expect(await listBackups(r.repo)).toEqual([])
    await gc.release()
    const check = await verifyRepository(await r.second())
    expect(check.problems).toEqual([])
    expect(check.ok).toBe(true)
    // The same repository takes a backup once nothing stands in the way.
    const ok = await takeBackup({ server: { conninfo: pg.url() }, repo: await r.second() })
    expect((await listBackups(r.repo)).map((b) => b.id)).toEqual([ok.id])
  })

  it('a WAL streamer whose lock is taken from it stops, stores nothing more and reports no flush beyond what it stored', async () => {
    const r = await freshRepo()
    const f = await faulty(r.dir)
    const events: MessageEvent[] = []
    const slot = 'lock_loss'
    const streamer = new WalStreamer({
      repo: await f.open(),
      server: { conninfo: pg.url() },
      slot,
      createSlot: true,
      statusIntervalMs: 200,
      lockTiming: LOCK_TIMING,
      onEvent: (e) => {
        if (e.type === 'message') events.push(e)
      },
    })
    const run = streamer.run().then(
      () => undefined,
      (e: unknown) => e as Error & { code?: string },
    )
    interface Stored {
      name: string
      partial: boolean
      validBytes: number
      endLsn: string
    }
    const stored = () => events.filter((e) => e.code === 'segment-stored').map((e) => e.data as unknown as Stored)
    try {
      await waitUntil('streaming started', () => events.some((e) => e.code === 'started'), 30_000)
      await pg.sql('create table lock_loss (v text)')
      await pg.sql('insert into lock_loss select md5(g::text) from generate_series(1, 1000) g')
      await pg.sql('select pg_switch_wal()')
      await waitUntil('a segment was stored', () => stored().some((e) => !e.partial), 30_000)
      // Refreshes are refused from now on: once the lock is at risk nothing more may become listed.
      f.faults.failing = true
      await waitUntil('a refresh was refused', () => f.faults.refused > 0, 30_000, 20)
      await pg.sql('insert into lock_loss select md5(g::text) from generate_series(1, 1000) g')
      const [{ name: unstored }] = await pg.sql<{ name: string }>('select pg_walfile_name(pg_current_wal_lsn()) as name')
      await pg.sql('select pg_switch_wal()')
      const gc = await breakExpiredLock(r, f.faults)
      f.faults.failing = false
      const err = await run
      expect(err?.code, String(err)).toBe('LOCKED')
      expect(err!.message).toMatch(/shared lock for 'wal stream \(slot lock_loss\)' was lost/)
      expect(events.some((e) => e.code === 'lock' && e.data?.state === 'at-risk')).toBe(true)
      await gc.release()

      // What the repository lists is exactly what the streamer reported stored (superseded partials aside), and
      // the segment switched while the lock was at risk is not among it.
      const systemId = (events.find((e) => e.code === 'started')!.data as { systemId: string }).systemId
      const reported = new Set(stored().map((e) => (e.partial ? partialKey(systemId, e.name, e.validBytes) : segmentKey(systemId, e.name))))
      const listed = await listWalKeys(r.repo, systemId)
      expect(listed.filter((k) => !reported.has(k))).toEqual([])
      expect(listed.some((k) => k.includes(unstored))).toBe(false)
      // Invariant 6: the slot never moved past the WAL the repository holds.
      const durableEnd = stored().reduce((m, e) => (parseLsn(e.endLsn) > m ? parseLsn(e.endLsn) : m), 0n)
      const [{ restart }] = await pg.sql<{ restart: string }>(`select restart_lsn::text as restart from pg_replication_slots where slot_name = '${slot}'`)
      expect(parseLsn(restart)).toBeLessThanOrEqual(durableEnd)
      expect((await verifyRepository(await r.second())).ok).toBe(true)
    } finally {
      await run
      await pg.sql(`select pg_drop_replication_slot('${slot}')`).catch(() => {})
    }
  })

  it('wal push under a lock that was taken from it fails with LOCKED and stores nothing', async () => {
    const r = await freshRepo()
    const f = await faulty(r.dir)
    const repo: Repository = await f.open()
    await repo.acquireLock('shared', { purpose: 'wal push', ...LOCK_TIMING })
    f.faults.failing = true
    const gc = await breakExpiredLock(r, f.faults)
    f.faults.failing = false
    await pg.sql('select pg_switch_wal()')
    const walDir = join(pg.dataDir, 'pg_wal')
    const segment = (await readdir(walDir)).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort()[0]!
    await expect(pushWalFile(repo, join(walDir, segment))).rejects.toMatchObject({ code: 'LOCKED' })
    await gc.release()
    const [{ system_identifier: systemId }] = await pg.sql<{ system_identifier: string }>('select system_identifier::text from pg_control_system()')
    expect(await listWalKeys(r.repo, systemId)).toEqual([])
  })

  it("pgkeep unlock --remove-stale removes the lock of a SIGKILLed wal stream and keeps a running one's", async () => {
    const r = await freshRepo()
    const stream = (slot: string) => {
      const p = spawnPgkeep(['wal', 'stream', '-d', pg.url(), '--repo', r.dir, '--slot', slot, '--create-slot'])
      processes.push(p)
      return p
    }
    const live = stream('lock_live')
    await live.waitFor(/streaming cluster \d+/)
    // Started last: a later writer would remove its lock as soon as it is dead.
    const killed = stream('lock_killed')
    await killed.waitFor(/streaming cluster \d+/)
    killed.kill('SIGKILL')
    await killed.exited
    try {
      const listed = await runBin(['unlock', '--repo', r.dir, '--json'])
      expect(listed.code, listed.stderr).toBe(0)
      const locks = (JSON.parse(listed.stdout) as { locks: { state: string; pid: number; purpose: string }[] }).locks
      expect(locks.map((l) => [l.state, l.pid, l.purpose]).sort()).toEqual(
        [
          ['dead', killed.child.pid, 'wal stream (slot lock_killed)'],
          ['live', live.child.pid, 'wal stream (slot lock_live)'],
        ].sort(),
      )
      const removed = await runBin(['unlock', '--repo', r.dir, '--remove-stale'])
      expect(removed.code, removed.stderr).toBe(0)
      expect(removed.stdout).toContain('removed 1 stale lock:')
      expect(removed.stdout).toContain(`pid ${killed.child.pid}`)
      expect(removed.stdout).toMatch(new RegExp(`live +shared +wal stream \\(slot lock_live\\) .* ${live.child.pid} `))
      const after = (await r.repo.listLocks()).map((l) => [l.state, l.info?.pid])
      expect(after).toEqual([['live', live.child.pid]])
      // The running streamer kept its lock throughout and stops cleanly.
      live.kill('SIGTERM')
      expect(await live.exited, live.output()).toBe(0)
      expect(await r.repo.listLocks()).toEqual([])
    } finally {
      for (const slot of ['lock_live', 'lock_killed']) await pg.sql(`select pg_drop_replication_slot('${slot}')`).catch(() => {})
    }
  })
})
