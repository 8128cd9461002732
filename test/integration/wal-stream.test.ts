// `pgkeep wal stream` on PostgreSQL 14–19 under pgbench: SIGKILLed and restarted, then stopped with SIGTERM. The
// oracle is the server itself: every stored segment must equal the server's own pg_wal file byte for byte, the
// catalog must be gap-free from the first segment to the last, the restart must resume exactly after the newest
// stored segment, and the slot (what the server was told is flushed) must never be ahead of the repository.

import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseLsn } from '../../src/pg/lsn.js'
import { findSegmentRecord, readSegmentBytes } from '../../src/repo/index.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { loadPgbench, startPgbench } from '../harness/load.js'
import { MAJORS } from '../harness/pg-binaries.js'
import { catalogOf, ensureBuilt, expectSameAsPgWal, nameOfSegno, openFsRepo, spawnPgkeep, waitUntil } from './wal-helpers.js'

const SEG = 16n << 20n
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

beforeAll(() => ensureBuilt(), 120_000)

describe.each(MAJORS)('wal stream on PostgreSQL %i', (major) => {
  let pg: Cluster
  let repoDir: string

  beforeAll(async () => {
    // Keep every segment in pg_wal for the comparison (the slot alone would let checkpoints remove what we stored).
    pg = await startCluster({ major, conf: { wal_keep_size: '4GB', max_wal_size: '4GB', checkpoint_timeout: '1h' } })
    await loadPgbench(pg, 1)
    repoDir = await mkdtemp(join(tmpdir(), 'pgkeep-walstream-'))
    expect((await runMain(['init', '--repo', repoDir])).code).toBe(0)
  })
  afterAll(async () => {
    await pg?.destroy()
    if (repoDir) await rm(repoDir, { recursive: true, force: true })
  })

  it('stores a gap-free, byte-identical copy of pg_wal across a SIGKILL and a restart', async () => {
    const args = ['wal', 'stream', '-d', pg.url(), '--repo', repoDir, '--slot', 'pgkeep_test', '--status-interval', '1']
    const slotLsn = async () => {
      const [r] = await pg.sql<{ lsn: string | null }>(`select restart_lsn::text lsn from pg_replication_slots where slot_name = 'pgkeep_test'`)
      return r?.lsn ? parseLsn(r.lsn) : undefined
    }

    // First run: creates the slot, streams while pgbench writes, then dies without any chance to clean up.
    const first = spawnPgkeep([...args, '--create-slot'])
    const started = await first.waitFor(/streaming cluster (\d+) .* from ([0-9A-F]+\/[0-9A-F]+)/)
    const systemId = started[1]!
    const firstSegno = parseLsn(started[2]!) / SEG
    const load = startPgbench(pg, 2)
    // Once only: the harness's stop() waits forever when called after pgbench already exited by a signal.
    let loadStopped: Promise<void> | undefined
    const stopLoad = () => (loadStopped ??= load.stop())
    try {
      for (let i = 0; i < 3; i++) {
        await sleep(400)
        await pg.sql('select pg_switch_wal()')
      }
      await first.waitFor(/stored segment/)
      await sleep(300)
      first.kill('SIGKILL')
      expect(await first.exited).toBe('SIGKILL')

      // Invariant 6 seen from the server: everything below the slot's restart_lsn is in the repository.
      const repo = await openFsRepo(repoDir)
      const atKill = await catalogOf(repo, systemId)
      const restart = (await slotLsn())!
      expect(restart).toBeDefined()
      for (let s = firstSegno; s < restart / SEG; s++) expect(atKill.complete, `segment ${s} below the slot's restart_lsn`).toContain(s)
      const newestStored = atKill.complete[atKill.complete.length - 1]!
      await repo.close()

      // WAL keeps coming while no streamer runs; the slot holds it.
      await sleep(300)
      await pg.sql('select pg_switch_wal()')

      const second = spawnPgkeep(args)
      const resumed = await second.waitFor(/streaming cluster \d+ .* from ([0-9A-F]+\/[0-9A-F]+) \(after the newest WAL/)
      // Exactly after the newest stored segment: no gap, nothing streamed twice.
      expect(parseLsn(resumed[1]!)).toBe((newestStored + 1n) * SEG)
      for (let i = 0; i < 2; i++) {
        await sleep(400)
        await pg.sql('select pg_switch_wal()')
      }
      await stopLoad()
      const [{ n }] = await pg.sql<{ n: string }>('select count(*)::text n from pgbench_history')
      expect(Number(n), 'pgbench committed transactions while the streamer ran').toBeGreaterThan(100)
      const [{ lsn }] = await pg.sql<{ lsn: string }>('select pg_switch_wal()::text lsn')
      const lastComplete = (parseLsn(lsn) - 1n) / SEG
      await pg.sql('create table after_switch as select g from generate_series(1, 1000) g')
      const [{ flushed }] = await pg.sql<{ flushed: string }>('select pg_current_wal_flush_lsn()::text flushed')
      await second.waitFor(new RegExp(`stored segment ${nameOfSegno(1, lastComplete)}`))
      // The partial segment must reach the flush position before the stop (the streamer gets WAL asynchronously).
      await waitUntil('the streamer received the last insert', async () => {
        const [r] = await pg.sql<{ sent: string | null }>(`select sent_lsn::text sent from pg_stat_replication where application_name = 'pgkeep_test'`)
        return r?.sent != null && parseLsn(r.sent) >= parseLsn(flushed)
      })
      second.kill('SIGTERM')
      expect(await second.exited, second.output()).toBe(0)
      const stopped = second.output().match(/stopped; WAL is durable up to ([0-9A-F]+\/[0-9A-F]+) on timeline 1/)
      expect(stopped, second.output()).not.toBeNull()
      const durable = parseLsn(stopped![1]!)
      expect(durable).toBeGreaterThanOrEqual(parseLsn(flushed))

      const repo2 = await openFsRepo(repoDir)
      try {
        const cat = await catalogOf(repo2, systemId)
        // Gap-free from the first streamed segment to the last complete one.
        const expected: bigint[] = []
        for (let s = firstSegno; s <= lastComplete; s++) expected.push(s)
        expect(cat.complete.filter((s) => s <= lastComplete)).toEqual(expected)
        const pgWal = join(pg.dataDir, 'pg_wal')
        const compared = await expectSameAsPgWal(repo2, systemId, pgWal, 1, firstSegno, durable / SEG - 1n)
        expect(compared).toBeGreaterThanOrEqual(6)
        // The segment in progress at the stop: a partial record holding exactly the server's bytes up to `durable`.
        if (durable % SEG !== 0n) {
          const segno = durable / SEG
          expect(cat.partial.get(segno)).toBe(Number(durable % SEG))
          const rec = (await findSegmentRecord(repo2, systemId, nameOfSegno(1, segno)))!
          expect(rec.partial).toBe(true)
          const ours = await readSegmentBytes(repo2, rec)
          const theirs = await readFile(join(pgWal, nameOfSegno(1, segno)))
          expect(ours.subarray(0, rec.validBytes).equals(theirs.subarray(0, rec.validBytes))).toBe(true)
          expect(ours.subarray(rec.validBytes).every((b) => b === 0)).toBe(true)
        }
        // Complete segments carry no leftover partial records.
        for (const s of cat.partial.keys()) expect(cat.complete).not.toContain(s)
        // The slot was told exactly what is durable, never more.
        expect((await slotLsn())!).toBeLessThanOrEqual(durable)
      } finally {
        await repo2.close()
      }
    } finally {
      await stopLoad()
      first.kill('SIGKILL')
    }
  })
})
