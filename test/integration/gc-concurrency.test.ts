// gc beside a running backup and a running `wal stream` on a PostgreSQL 16 cluster: the first gc run condemns the
// garbage of a removed backup but deletes nothing while both writers (which started before the condemnation) have
// not acknowledged it; once their locks acknowledge it, a second run deletes while the backup is still running.
// Then the repository verifies with every byte read, the WAL streamed meanwhile equals the server's own pg_wal files,
// and both remaining backups restore, start, and hold the source's tables.

import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { takeBackup } from '../../src/backup/backup.js'
import {
  BACKUP_RECORD_KIND,
  backupKey,
  CONDEMNED_RECORD_KIND,
  collectGarbage,
  findBackup,
  initRepository,
  listBackups,
  type LockStatus,
  openRepository,
  type Repository,
} from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import type { MessageEvent, PgkeepEvent } from '../../src/events.js'
import { WalStreamer } from '../../src/wal/wal-streamer.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { loadPgbench, touchPages } from '../harness/load.js'
import { listKeys, tempDir } from '../harness/repo-fixtures.js'
import { restoreAndCheck } from '../harness/restore-check.js'
import { addOwnTables, startRestored, stopRestored, tableChecksums } from './restore-fixture.js'
import { expectSameAsPgWal, segnoOfName, waitUntil } from './wal-helpers.js'

const MAJOR = 16
/** Writers refresh (and so acknowledge) every half second here; 30 min / 5 min in real use. */
const LOCK_TIMING = { staleAfterMs: 8000, refreshIntervalMs: 500 }

describe(`gc beside a backup and a WAL streamer (PG ${MAJOR})`, () => {
  let pg: Cluster
  const dir = tempDir('gc-concurrency')
  const root = join(dir.dir, 'repo')
  const open = async (): Promise<Repository> => openRepository(await openFsStorage(root))
  beforeAll(async () => {
    // pg_wal keeps its files, so that the streamed WAL can be compared with them at the end.
    pg = await startCluster({ major: MAJOR, conf: { wal_keep_size: '1GB' } })
    await loadPgbench(pg, 1)
    await addOwnTables(pg)
  })
  afterAll(async () => {
    await pg?.destroy()
    dir.remove()
  })

  async function gc() {
    const repo = await openRepository(await openFsStorage(root), { index: 'meta' })
    try {
      return await collectGarbage(repo, { graceMs: 0 })
    } finally {
      await repo.close()
    }
  }

  /** True when at least `count` locks have a purpose matching `purposes`, and each acknowledges every condemnation record. */
  async function acknowledged(purposes: RegExp, count = 2): Promise<boolean> {
    const storage = await openFsStorage(root)
    const keys = (await listKeys(storage, `records/${CONDEMNED_RECORD_KIND}/`)).map((k) => k.slice(k.lastIndexOf('/') + 1))
    const repo = await open()
    const locks: LockStatus[] = await repo.listLocks()
    await repo.close()
    const writers = locks.filter((l) => purposes.test(l.info?.purpose ?? ''))
    return keys.length > 0 && writers.length >= count && writers.every((l) => keys.every((k) => l.info?.gcAcks?.includes(k) || l.info?.gcAcks?.includes('*')))
  }

  async function restoreAndCompare(id: string, want: Record<string, string>, name: string) {
    const repo = await open()
    const target = join(pg.baseDir, name)
    try {
      await restoreAndCheck(repo, await findBackup(repo, id), target)
    } finally {
      await repo.close()
    }
    const c = await startRestored(MAJOR, target, pg.baseDir, [`${target}_ts`])
    try {
      expect(await tableChecksums(c)).toEqual(want)
    } finally {
      await stopRestored(c)
    }
  }

  it('loses nothing, and deletes while a writer that started before the condemnation still runs', async () => {
    const repo = await initRepository(await openFsStorage(root), { packTargetBytes: 256 << 10 })
    // Garbage to collect: a table only the first backup holds, and that backup removed.
    await pg.sql('create table junk as select g, md5(random()::text) || md5(random()::text) as v from generate_series(1, 60000) g')
    const b1 = await takeBackup({ server: { conninfo: pg.url() }, repo })
    await pg.sql('drop table junk')
    await touchPages(pg, 30)
    const b2 = await takeBackup({ server: { conninfo: pg.url() }, repo })
    const want2 = await tableChecksums(pg)
    const [first] = await listBackups(repo)
    expect(first!.id).toBe(b1.id)
    await repo.removeRecord(BACKUP_RECORD_KIND, backupKey(first!.systemId, b1.id))
    await repo.close()

    // A WAL streamer, running throughout.
    await pg.sql('create table ticks (at timestamptz default now(), v text)')
    const events: PgkeepEvent[] = []
    const stop = new AbortController()
    const streamer = new WalStreamer({
      repo: await open(),
      server: { conninfo: pg.url() },
      slot: 'gc_stream',
      createSlot: true,
      statusIntervalMs: 200,
      lockTiming: LOCK_TIMING,
      signal: stop.signal,
      onEvent: (e) => events.push(e),
    })
    const streaming = streamer.run()
    const messages = () => events.filter((e): e is MessageEvent => e.type === 'message')
    /** Complete segments the streamer stored: the `segment-stored` messages' facts. */
    const stored = () =>
      messages()
        .filter((e) => e.code === 'segment-stored' && e.data?.partial === false)
        .map((e) => ({ segment: e.data as { name: string; partial: boolean } }))
    await waitUntil('the streamer started', () => messages().some((e) => e.code === 'started'), 60_000)
    const firstSegment = segnoOfName((await pg.sql<{ n: string }>('select pg_walfile_name(pg_current_wal_lsn()) n'))[0]!.n)
    await pg.sql("insert into ticks (v) select repeat('x', 200) from generate_series(1, 20000)")
    await pg.sql('select pg_switch_wal()')
    await waitUntil('a segment was streamed', () => stored().length > 0, 60_000)

    // A backup that takes a while (its rate is limited), started before anything is condemned.
    let b3done = false
    const backup = takeBackup({ server: { conninfo: pg.url() }, repo: await open(), maxRateKbps: 1500, lockTiming: LOCK_TIMING }).finally(() => {
      b3done = true
    })
    await waitUntil('the backup holds its lock', async () => (await (await open()).listLocks()).some((l) => l.info?.purpose === 'backup'), 60_000)

    const run1 = await gc()
    expect(run1.packsCondemned).toBeGreaterThan(0)
    // gc deletes only what every writer acknowledges. A writer that never referenced the condemned packs does so at
    // its next lock refresh (every 500 ms here), which on a busy machine can come before gc's check (seen once in a
    // full run: the backup had acknowledged, the streamer not yet). So each writer is either waited for or had
    // acknowledged when gc looked, and gc deletes in its first run only if both had.
    for (const writer of [/^backup/, /^wal stream/]) {
      if (!run1.waitingFor.some((w) => writer.test(w.replace(/^.*? for '/, '')))) expect(await acknowledged(writer, 1)).toBe(true)
    }
    if (run1.waitingFor.length > 0) expect(run1.packsDeleted).toBe(0)
    await pg.sql('select pg_switch_wal()')

    await waitUntil('both writers acknowledged the condemnation', () => acknowledged(/^(backup|wal stream)/), 60_000)
    expect(b3done).toBe(false)
    const run2 = await gc()
    expect(run1.packsDeleted + run2.packsDeleted).toBeGreaterThan(0)
    // The point of the test: the deletion happened while the backup that started before it was still running.
    expect(b3done).toBe(false)

    const b3 = await backup
    const want3 = await tableChecksums(pg)
    await pg.sql("insert into ticks (v) select repeat('y', 200) from generate_series(1, 20000)")
    await pg.sql('select pg_switch_wal()')
    const lastSegment = segnoOfName((await pg.sql<{ n: string }>('select pg_walfile_name(pg_current_wal_lsn()) n'))[0]!.n) - 1n
    await waitUntil('the streamer stored the last switched segment', () => stored().some((e) => segnoOfName(e.segment.name) >= lastSegment), 60_000)
    stop.abort()
    await streaming

    const run3 = await gc()
    expect(run3.pendingPacks).toBe(0)
    const v = await runMain(['verify', '--repo', root, '--read-data', '--json'])
    expect(v.code, v.stdout + v.stderr).toBe(0)
    // The WAL the streamer stored before, during and after the gc runs equals the server's own files.
    const check = await open()
    const [{ system_identifier: systemId }] = await pg.sql<{ system_identifier: string }>('select system_identifier::text from pg_control_system()')
    const compared = await expectSameAsPgWal(check, systemId, join(pg.dataDir, 'pg_wal'), 1, firstSegment, lastSegment)
    expect(compared).toBeGreaterThanOrEqual(3)
    await check.close()
    console.log(
      `gc beside writers: run 1 condemned ${run1.packsCondemned} packs and waited for ${run1.waitingFor.length} sessions; runs 1 and 2 deleted ${run1.packsDeleted} and ${run2.packsDeleted} with the backup still running; ${compared} streamed segments equal pg_wal`,
    )
    await restoreAndCompare(b2.id, want2, 'restored-b2')
    await restoreAndCompare(b3.id, want3, 'restored-b3')
  })
})
