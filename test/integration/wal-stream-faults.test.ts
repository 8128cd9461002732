// `pgkeep wal stream` when things go wrong (PostgreSQL 16): a missing slot, a slot in use, WAL the server no
// longer has (clear errors, non-zero exit); a server restart (reconnects and goes on without a gap); SIGUSR1
// (prints lag and rate).

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseLsn } from '../../src/pg/lsn.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { catalogOf, ensureBuilt, expectSameAsPgWal, nameOfSegno, openFsRepo, spawnPgkeep } from './wal-helpers.js'

const SEG = 16n << 20n

beforeAll(() => ensureBuilt(), 120_000)

describe('wal stream faults on PostgreSQL 16', () => {
  let pg: Cluster
  let repoDir: string
  const stream = (slot: string, ...more: string[]) =>
    spawnPgkeep(['wal', 'stream', '-d', pg.url(), '--repo', repoDir, '--slot', slot, '--status-interval', '1', ...more])

  beforeAll(async () => {
    pg = await startCluster({ major: 16, tablespaces: 0, conf: { wal_keep_size: '1GB' } })
    repoDir = await mkdtemp(join(tmpdir(), 'pgkeep-walfaults-'))
    expect((await runMain(['init', '--repo', repoDir])).code).toBe(0)
  })
  afterAll(async () => {
    await pg?.destroy()
    if (repoDir) await rm(repoDir, { recursive: true, force: true })
  })

  it('fails clearly when the slot does not exist or is in use', async () => {
    const missing = stream('no_such_slot')
    expect(await missing.exited).toBe(12)
    expect(missing.output()).toMatch(/replication slot "no_such_slot" does not exist/)
    expect(missing.output()).toMatch(/HINT: .*--create-slot/)

    const a = stream('busy', '--create-slot')
    await a.waitFor(/streaming cluster/)
    const b = stream('busy')
    expect(await b.exited).toBe(12)
    expect(b.output()).toMatch(/replication slot "busy" is active/)
    expect(b.output()).toMatch(/HINT: another process streams from this slot/)
    a.kill('SIGTERM')
    expect(await a.exited).toBe(0)
  })

  it('reconnects after a server restart and keeps the copy gap-free; prints lag and rate on SIGUSR1', async () => {
    const s = stream('restart', '--create-slot')
    try {
      const started = await s.waitFor(/streaming cluster (\d+) .* from ([0-9A-F]+\/[0-9A-F]+)/)
      const systemId = started[1]!
      const first = parseLsn(started[2]!) / SEG
      await pg.sql('create table r (id int)')
      await pg.sql('insert into r select generate_series(1, 100000)')
      await pg.sql('select pg_switch_wal()')
      s.child.kill('SIGUSR1')
      await s.waitFor(/timeline 1: received [0-9A-F]+\/[0-9A-F]+, durable .* lag .* receiving .*\/s, \d+ segments stored/)

      await pg.restart()
      await s.waitFor(/connection lost .*; reconnecting in/)
      await s.waitFor(/streaming cluster \d+ .* \(reconnect\)|streaming cluster \d+ .* from/, 60_000)
      await pg.sql('insert into r select generate_series(1, 100000)')
      const [{ lsn }] = await pg.sql<{ lsn: string }>('select pg_switch_wal()::text lsn')
      const last = (parseLsn(lsn) - 1n) / SEG
      await s.waitFor(new RegExp(`stored segment ${nameOfSegno(1, last)}`), 60_000)
      s.kill('SIGTERM')
      expect(await s.exited, s.output()).toBe(0)
      const repo = await openFsRepo(repoDir)
      try {
        const cat = await catalogOf(repo, systemId)
        const expected: bigint[] = []
        for (let x = first; x <= last; x++) expected.push(x)
        expect(cat.complete.filter((x) => x >= first && x <= last)).toEqual(expected)
        await expectSameAsPgWal(repo, systemId, join(pg.dataDir, 'pg_wal'), 1, first, last)
      } finally {
        await repo.close()
      }
    } finally {
      s.kill('SIGKILL')
    }
  })

  it('fails clearly when the server no longer has the WAL the repository needs next', async () => {
    // A streamer stored WAL up to some point, then its slot went away and the server moved on and recycled WAL.
    const s = stream('gone', '--create-slot')
    await s.waitFor(/streaming cluster/)
    await pg.sql('create table g as select generate_series(1, 1000) x') // pg_switch_wal does nothing without new WAL
    await pg.sql('select pg_switch_wal()')
    await s.waitFor(/stored segment/)
    s.kill('SIGTERM')
    expect(await s.exited).toBe(0)
    for (const slot of ['gone', 'busy', 'restart'])
      await pg.sql(`select pg_drop_replication_slot('${slot}') from pg_replication_slots where slot_name = '${slot}'`)
    await pg.sql(`alter system set wal_keep_size = 0`)
    await pg.reload()
    for (let i = 0; i < 4; i++) {
      await pg.sql('insert into g select generate_series(1, 1000)')
      await pg.sql('select pg_switch_wal()')
      await pg.sql('checkpoint')
    }
    const again = stream('gone', '--create-slot')
    expect(await again.exited).toBe(12)
    expect(again.output()).toMatch(/has already been removed/)
    expect(again.output()).toMatch(/HINT: /)
  })
})
