// `pgkeep wal stream --synchronous` as the server's synchronous standby (RPO 0): commits return, and when they
// have returned their WAL is in the repository (checked by reading the repository, not by asking the streamer);
// with the streamer stopped a commit waits (wait event SyncRep), and it completes once the streamer is back.
// Also prints the commit latency this mode costs next to synchronous_commit = local. PostgreSQL 15 on a filesystem
// repository, PostgreSQL 18 on the S3 server with an encrypted repository.

import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseLsn } from '../../src/pg/lsn.js'
import { openRepository } from '../../src/repo/index.js'
import { findSegmentRecord } from '../../src/repo/index.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { NEWEST_MAJOR } from '../harness/pg-binaries.js'
import { openSpec, specLocation, startStorageFactory, type StorageFactory, type StorageSpec } from '../harness/repo-fixtures.js'
import { ensureBuilt, nameOfSegno, type PgkeepProcess, spawnPgkeep, waitUntil } from './wal-helpers.js'

const SEG = 16n << 20n
const SLOT = 'pgkeep_sync'

beforeAll(() => ensureBuilt(), 120_000)

/** End of the WAL the repository holds for the cluster around `lsn`'s segment (complete or partial). */
async function storedUpTo(spec: StorageSpec, passphrase: string | undefined, systemId: string, lsn: bigint): Promise<bigint> {
  const repo = await openRepository(await openSpec(spec), { passphrase })
  try {
    const segno = lsn / SEG
    const rec = await findSegmentRecord(repo, systemId, nameOfSegno(1, segno))
    return rec ? segno * SEG + BigInt(rec.validBytes) : 0n
  } finally {
    await repo.close()
  }
}

const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!

describe.each([
  { major: 15, driver: 'fs' },
  { major: NEWEST_MAJOR, driver: 's3' },
] as const)('wal stream --synchronous on PostgreSQL $major, $driver repository', ({ major, driver }) => {
  let server: Cluster
  let factory: StorageFactory
  let spec: StorageSpec
  let location: { url: string; env: Record<string, string> }
  const passphrase = driver === 's3' ? 'sync-test-passphrase' : undefined
  let client: pg.Client
  const streamers: PgkeepProcess[] = []
  const stream = () => {
    const s = spawnPgkeep(
      ['wal', 'stream', '-d', server.url(), '--repo', location.url, '--slot', SLOT, '--create-slot', '--synchronous', '--status-interval', '1'],
      {
        ...location.env,
        ...(passphrase ? { PGKEEP_PASSPHRASE: passphrase } : {}),
      },
    )
    streamers.push(s)
    return s
  }
  const stored = (systemId: string, lsn: bigint) => storedUpTo(spec, passphrase, systemId, lsn)

  beforeAll(async () => {
    server = await startCluster({ major, tablespaces: 0 })
    factory = await startStorageFactory(driver)
    spec = factory.spec()
    location = specLocation(spec)
    const init = await runMain(['init', '--repo', location.url, ...(passphrase ? ['--encrypt'] : [])], {
      ...location.env,
      ...(passphrase ? { PGKEEP_PASSPHRASE: passphrase } : {}),
    })
    expect(init.code, init.stderr).toBe(0)
    client = new pg.Client({ host: server.socketDir, port: server.port, user: 'postgres', database: 'postgres' })
    await client.connect()
    await client.query('create table t (id int primary key, v text)')
    // The streamer's application_name defaults to its slot name.
    await server.configure({ synchronous_standby_names: SLOT })
    await server.reload()
  })
  afterAll(async () => {
    for (const s of streamers) s.kill('SIGKILL')
    await client?.end().catch(() => {})
    await server?.destroy()
    await factory?.stop()
  })

  it('commits return only once their WAL is in the repository, and wait while the streamer is down', async () => {
    const first = stream()
    const started = await first.waitFor(/streaming cluster (\d+)/)
    const systemId = started[1]!
    await waitUntil('the streamer is the synchronous standby', async () => {
      const rows = await server.sql<{ s: string }>(`select sync_state s from pg_stat_replication where application_name = $1`, [SLOT])
      return rows[0]?.s === 'sync'
    })

    // Each commit's WAL is durable in the repository when the commit returns.
    for (let i = 1; i <= 5; i++) {
      await client.query('begin')
      await client.query('insert into t values ($1, $2)', [i, 'sync'])
      const { rows } = await client.query<{ l: string }>('select pg_current_wal_insert_lsn()::text l')
      await client.query('commit')
      const before = parseLsn(rows[0]!.l) // the commit record ends after this
      expect(await stored(systemId, before)).toBeGreaterThan(before)
    }

    // What it costs: single-row commits with the streamer as synchronous standby versus local commits.
    const timed = async (n: number, mode: 'on' | 'local') => {
      await client.query(`set synchronous_commit = ${mode}`)
      const ms: number[] = []
      for (let i = 0; i < n; i++) {
        const t0 = performance.now()
        await client.query('insert into t values ($1, $2)', [1000 + i + (mode === 'on' ? 0 : 100_000), mode])
        ms.push(performance.now() - t0)
      }
      await client.query('reset synchronous_commit')
      return ms
    }
    const local = await timed(200, 'local')
    const sync = await timed(200, 'on')
    console.log(
      `PG ${major} commit latency, 200 single-row inserts: synchronous_commit=local p50 ${percentile(local, 50).toFixed(2)} ms ` +
        `p99 ${percentile(local, 99).toFixed(2)} ms; with pgkeep wal stream --synchronous (${driver} repository) p50 ` +
        `${percentile(sync, 50).toFixed(2)} ms p99 ${percentile(sync, 99).toFixed(2)} ms`,
    )

    // Streamer stopped: a commit waits for it.
    first.kill('SIGTERM')
    expect(await first.exited, first.output()).toBe(0)
    const waiting = new pg.Client({ host: server.socketDir, port: server.port, user: 'postgres', database: 'postgres' })
    await waiting.connect()
    try {
      let done = false
      const commit = waiting.query('insert into t values (-1, $1) returning pg_current_wal_insert_lsn()::text l', ['waited']).then((r) => {
        done = true
        return r.rows[0] as { l: string }
      })
      await waitUntil('the commit waits for the synchronous standby', async () => {
        const rows = await server.sql<{ w: string | null }>(`select wait_event w from pg_stat_activity where query like 'insert into t values (-1%'`)
        return rows[0]?.w === 'SyncRep'
      })
      await new Promise((r) => setTimeout(r, 1000))
      expect(done).toBe(false)

      // Back: the waiting commit completes, and its WAL is in the repository.
      const second = stream()
      await second.waitFor(/streaming cluster/)
      const { l } = await commit
      expect(await stored(systemId, parseLsn(l))).toBeGreaterThan(parseLsn(l))
      second.kill('SIGTERM')
      expect(await second.exited, second.output()).toBe(0)
    } finally {
      await waiting.end().catch(() => {})
    }
  })
})
