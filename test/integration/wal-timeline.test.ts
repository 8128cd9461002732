// `pgkeep wal stream` follows a promotion: a standby built from a base backup streams to pgkeep (cascading), is
// promoted, and the streamer stores timeline 2's history file and continues on timeline 2. Oracles: the promoted
// server's own pg_wal files (its 00000002.history, its timeline 2 segments, and the old timeline's last segment,
// which the server renames to .partial at promotion).

import { execFileSync } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseLsn } from '../../src/pg/lsn.js'
import { historyKey, readWalContent, readWalRecord, type WalHistoryRecord } from '../../src/repo/wal-catalog.js'
import { findSegmentRecord, readSegmentBytes } from '../../src/repo/index.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, PASSWORD, ROLES, startCluster, startOnDataDir } from '../harness/cluster.js'
import { handOver } from '../harness/server-user.js'
import { takeTarBackup } from '../harness/tar-backup.js'
import { type Major, MAJORS } from '../harness/pg-binaries.js'
import { catalogOf, ensureBuilt, expectSameAsPgWal, nameOfSegno, openFsRepo, spawnPgkeep, waitUntil } from './wal-helpers.js'

const SEG = 16n << 20n

beforeAll(() => ensureBuilt(), 120_000)

// Plus every major newer than 18 that can run here (19 changed its WAL page flags and LSN text).
describe.each<Major>([14, 17, ...MAJORS.filter((m) => m > 18)])('wal stream across a promotion on PostgreSQL %i', (major) => {
  let primary: Cluster
  let standby: Cluster | undefined
  let repoDir: string

  beforeAll(async () => {
    primary = await startCluster({ major, tablespaces: 0, conf: { wal_keep_size: '1GB' } })
    repoDir = await mkdtemp(join(tmpdir(), 'pgkeep-waltl-'))
    expect((await runMain(['init', '--repo', repoDir])).code).toBe(0)
  })
  afterAll(async () => {
    await standby?.destroy()
    await primary?.destroy()
    if (repoDir) await rm(repoDir, { recursive: true, force: true })
  })

  it('stores the history file and continues on timeline 2', async () => {
    await primary.sql('create table t (id int primary key, v text)')
    await primary.sql(`insert into t select g, md5(g::text) from generate_series(1, 10000) g`)

    // A standby from a base backup (tar + its WAL), following the primary.
    const baseDir = await mkdtemp(join(tmpdir(), `pgkeep-standby${major}-`))
    const backup = await takeTarBackup(primary.url(), join(baseDir, 'backup'))
    const dataDir = join(baseDir, 'data')
    execFileSync('mkdir', ['-p', dataDir])
    execFileSync('tar', ['-xf', backup.archives.find((a) => a.tablespaceOid === null)!.path, '-C', dataDir])
    for (const s of backup.walSegments) execFileSync('cp', [join(backup.walDir, s), join(dataDir, 'pg_wal', s)])
    await writeFile(join(dataDir, 'standby.signal'), '')
    const conninfo = `host=127.0.0.1 port=${primary.port} user=${ROLES.repl} password='${PASSWORD.replace(/'/g, "\\'")}'`
    await handOver(baseDir)
    standby = await startOnDataDir(major, dataDir, { baseDir, conf: { primary_conninfo: conninfo, hot_standby: true, wal_keep_size: '1GB' } })
    const sb = standby
    await waitUntil(
      'the standby streams from the primary',
      async () => (await sb.sql('select 1 from pg_stat_wal_receiver where status = $1', ['streaming'])).length === 1,
    )

    const streamer = spawnPgkeep(['wal', 'stream', '-d', sb.url(), '--repo', repoDir, '--slot', 'pgkeep_tl', '--create-slot', '--status-interval', '1'])
    try {
      const started = await streamer.waitFor(/streaming cluster (\d+) .* timeline 1 from ([0-9A-F]+\/[0-9A-F]+)/)
      const systemId = started[1]!
      const firstSegno = parseLsn(started[2]!) / SEG
      for (let i = 0; i < 2; i++) {
        await primary.sql(`insert into t select g, 'tl1' from generate_series(${20000 + i * 1000}, ${20999 + i * 1000}) g`)
        await primary.sql('select pg_switch_wal()')
      }
      const [{ lsn }] = await primary.sql<{ lsn: string }>('select pg_current_wal_lsn()::text lsn')
      await waitUntil('the standby replayed the primary', async () => {
        const [r] = await sb.sql<{ l: string }>('select pg_last_wal_replay_lsn()::text l')
        return parseLsn(r!.l) >= parseLsn(lsn)
      })
      await streamer.waitFor(new RegExp(`stored segment ${nameOfSegno(1, (parseLsn(lsn) - 1n) / SEG)}`))

      // Promotion: the primary goes away, the standby becomes timeline 2 and keeps writing.
      await primary.stop('fast')
      await sb.sql('select pg_promote(true, 60)')
      const sw = await streamer.waitFor(/timeline 1 ended at ([0-9A-F]+\/[0-9A-F]+); following timeline 2/)
      const switchLsn = parseLsn(sw[1]!)
      await streamer.waitFor(/stored the history file of timeline 2/)
      await sb.sql(`insert into t select g, 'tl2' from generate_series(30000, 40000) g`)
      const [{ l2 }] = await sb.sql<{ l2: string }>('select pg_switch_wal()::text l2')
      const lastTl2 = (parseLsn(l2) - 1n) / SEG
      await streamer.waitFor(new RegExp(`stored segment ${nameOfSegno(2, lastTl2)}`))
      streamer.kill('SIGTERM')
      expect(await streamer.exited, streamer.output()).toBe(0)

      const repo = await openFsRepo(repoDir)
      try {
        const pgWal = join(sb.dataDir, 'pg_wal')
        // The history file, byte for byte.
        const hist = await readWalRecord<WalHistoryRecord>(repo, historyKey(systemId, 2))
        expect(hist).toBeDefined()
        expect((await readWalContent(repo, hist!)).equals(await readFile(join(pgWal, '00000002.history')))).toBe(true)
        // Timeline 1 up to the switch: complete segments equal to the server's, then the switch segment as partial.
        const switchSegno = switchLsn / SEG
        await expectSameAsPgWal(repo, systemId, pgWal, 1, firstSegno, switchSegno - 1n)
        if (switchLsn % SEG !== 0n) {
          const tl1 = (await findSegmentRecord(repo, systemId, nameOfSegno(1, switchSegno)))!
          expect(tl1.partial).toBe(true)
          expect(tl1.validBytes).toBe(Number(switchLsn % SEG))
          // Renamed to .partial at promotion when archiving is on; left as it is otherwise.
          const old = nameOfSegno(1, switchSegno)
          const theirs = await readFile(join(pgWal, `${old}.partial`)).catch(() => readFile(join(pgWal, old)))
          const ours = await readSegmentBytes(repo, tl1)
          expect(ours.subarray(0, tl1.validBytes).equals(theirs.subarray(0, tl1.validBytes))).toBe(true)
        }
        // Timeline 2 from the segment of the switch on: complete, equal to the server's files.
        const tl2 = await catalogOf(repo, systemId, 2)
        expect(tl2.complete[0]).toBe(switchSegno)
        expect(await expectSameAsPgWal(repo, systemId, pgWal, 2, switchSegno, lastTl2)).toBeGreaterThanOrEqual(1)
      } finally {
        await repo.close()
      }
    } finally {
      streamer.kill('SIGKILL')
    }
  })
})
