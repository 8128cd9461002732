// Retention against real servers (PG 15 and 17): four backups with `wal stream` archiving alongside; expire
// --keep-last 2 while the streamer keeps storing (and WAL keeps switching) removes the two older backups and the WAL
// before the third one's start, nothing else; verify passes; both kept backups restore and start, and a
// point-in-time restore inside the kept window reaches exactly its rows. forget refuses the newest backup without
// --force. On 17 also: every rule against a hand-computed table over backup records whose times are faked by
// copying a real backup's record (never its data); a plan never removes what was stored after its snapshot; a
// backup waits for a running expire, and expire leaves WAL alone while a backup runs; backup --expire; and info's
// recoverable window, retention and space held alone (checked against a plain recount with sets of blob ids).

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { takeBackup, type BackupResult } from '../../src/backup/backup.js'
import { removePlanned } from '../../src/expire/expire.js'
import { formatLsn, parseLsn, segmentStart } from '../../src/pg/lsn.js'
import {
  BACKUP_RECORD_KIND,
  type BackupRecord,
  backupKey,
  FileListReader,
  listBackups,
  listWalKeys,
  parseWalKey,
  planRetention,
  readWalRecord,
  removeWalRecord,
  summarizeClusterWal,
  type WalRecord,
  writeBackupRecord,
  writeWalRecord,
  fileMapOf,
} from '../../src/repo/index.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import type { Major } from '../harness/pg-binaries.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'
import { shareWithServer, startRestored, stopRestored, waitForPromotion } from './restore-fixture.js'
import { ensureBuilt, type PgkeepProcess, spawnPgkeep, waitUntil } from './wal-helpers.js'

beforeAll(() => ensureBuilt(), 120_000)

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const SEG = 16 << 20
const segnoOf = (key: string) => {
  const name = parseWalKey(key)!.name
  return BigInt(`0x${name.slice(8, 16)}`) * 256n + BigInt(`0x${name.slice(16, 24)}`)
}

describe.each<Major>([15, 17])('expire and forget on PG %i', (major) => {
  let pg: Cluster
  let r: TestRepo
  let streamer: PgkeepProcess
  const b: BackupResult[] = []
  const rows: number[] = [] // rows of t at each backup
  let pitr: { time: string; rows: number }
  // On 17: a second repository with two real backups, for the records whose times are faked.
  let r2: TestRepo | undefined
  let real: BackupRecord[] = []

  const count = async (c: Cluster) => (await c.sql<{ n: number }>('select count(*)::int n from t'))[0]!.n
  const insert = (from: number, n: number, v: string) => pg.sql(`insert into t select g, '${v}' from generate_series(${from}, ${from + n - 1}) g`)
  const backup = async (repo = r) => takeBackup({ server: { conninfo: pg.url() }, repo: repo.repo })

  beforeAll(async () => {
    pg = await startCluster({ major })
    r = await freshFsRepo()
    streamer = spawnPgkeep(['wal', 'stream', '-d', pg.url(), '--repo', r.dir, '--slot', 'pgkeep_expire', '--create-slot', '--status-interval', '1'])
    await streamer.waitFor(/streaming cluster \d+/)
    await pg.sql('create table t (id int primary key, v text)')
    for (let i = 0; i < 4; i++) {
      await insert(i * 1000 + 1, 100, `batch ${i}`)
      if (i === 3) {
        // A point in time between the third and the fourth backup, inside the window the policy keeps.
        await insert(10_001, 50, 'before the point')
        await sleep(300)
        pitr = { time: (await pg.sql<{ t: string }>('select clock_timestamp()::text t'))[0]!.t, rows: await count(pg) }
        await sleep(300)
        await insert(20_001, 50, 'after the point')
      }
      rows.push(await count(pg))
      b.push(await backup())
      await pg.sql('select pg_switch_wal()')
    }
    if (major === 17) {
      r2 = await freshFsRepo()
      await backup(r2)
      await insert(300_001, 100, 'second repository')
      await pg.sql('select pg_switch_wal()')
      await backup(r2)
      real = await listBackups(r2.repo)
    }
  })
  afterAll(async () => {
    streamer?.kill('SIGKILL')
    await pg?.destroy()
    await r?.close()
    await r2?.close()
  })

  /** Complete segment keys: partial ones come and go as the streamer supersedes them. */
  const segments = async (repo: TestRepo['repo'], systemId: string) => (await listWalKeys(repo, systemId)).filter((k) => parseWalKey(k)?.kind === 'segment')

  it('lists what --keep-last 2 would remove without removing anything (--dry-run)', async () => {
    const keysBefore = await segments(r.repo, b[0]!.systemId)
    const res = await runMain(['expire', '--repo', r.dir, '--keep-last', '2', '--dry-run', '--json'])
    expect(res.code, res.stderr).toBe(0)
    const out = JSON.parse(res.stdout)
    expect(out.dryRun).toBe(true)
    const c = out.clusters[0]
    expect(c.backups.map((x: { id: string; keep: boolean }) => [x.id, x.keep])).toEqual([
      [b[3]!.id, true],
      [b[2]!.id, true],
      [b[1]!.id, false],
      [b[0]!.id, false],
    ])
    expect(c.backups[3].why).toEqual(['keep-last 2: it is the 4th newest'])
    expect(c.wal.windowStart).toEqual({ lsn: b[2]!.startLsn, backupId: b[2]!.id })
    expect(c.wal.removedFiles).toBeGreaterThan(0)
    expect((await listBackups(r.repo, b[0]!.systemId)).length).toBe(4)
    expect(await segments(r.repo, b[0]!.systemId)).toEqual(expect.arrayContaining(keysBefore))
    const human = await runMain(['expire', '--repo', r.dir, '--keep-last', '2', '--dry-run'])
    expect(human.stdout).toMatch(new RegExp(`would remove ${b[0]!.id} .*keep-last 2: it is the 4th newest`))
    expect(human.stdout).toMatch(/dry run: nothing removed/)
  })

  it('expires with --keep-last 2 while wal stream stores new WAL: backups and WAL before the window go, nothing else', async () => {
    const systemId = b[0]!.systemId
    // The streamer first catches up with the backups (the slot moves only past WAL it stored): a streamer still
    // storing segments from before the window would put back, after expire, a segment expire just removed.
    await waitUntil(
      'the streamer stores the WAL of the last backup',
      async () => {
        const [slot] = await pg.sql<{ ok: boolean }>(
          `select restart_lsn >= '${b[3]!.endLsn}'::pg_lsn ok from pg_replication_slots where slot_name = 'pgkeep_expire'`,
        )
        return slot?.ok === true
      },
      120_000,
    )
    // WAL keeps switching while expire runs: new segments are stored meanwhile.
    let switching = true
    const switcher = (async () => {
      for (let i = 0; switching; i++) {
        await insert(100_000 + i * 10, 10, 'during expire')
        await pg.sql('select pg_switch_wal()')
        await sleep(100)
      }
    })()
    const res = await runMain(['expire', '--repo', r.dir, '--keep-last', '2', '--json'])
    switching = false
    await switcher
    expect(res.code, res.stderr).toBe(0)
    const c = JSON.parse(res.stdout).clusters[0]
    expect(c.removedBackups).toBe(2)
    expect(c.removedWalFiles).toBe(c.wal.removedFiles)
    expect((await listBackups(r.repo, systemId)).map((x) => x.id)).toEqual([b[2]!.id, b[3]!.id])

    // What is left is WAL from the third backup's segment on, without a gap, and the streamer goes on storing.
    const firstKept = parseLsn(b[2]!.startLsn) / BigInt(SEG)
    const keys = await listWalKeys(r.repo, systemId)
    expect(keys.filter((k) => parseWalKey(k)?.kind !== 'history' && segnoOf(k) < firstKept)).toEqual([])
    const newest = keys.map(segnoOf).reduce((a, x) => (x > a ? x : a))
    await insert(200_001, 10, 'after expire')
    await pg.sql('select pg_switch_wal()')
    await waitUntil('the streamer stores a segment after expire', async () => (await listWalKeys(r.repo, systemId)).some((k) => segnoOf(k) > newest), 30_000)
    const [tl] = await summarizeClusterWal(r.repo, systemId, SEG)
    expect(tl!.gaps).toEqual([])
    expect(tl!.ranges.map((x) => x.start)).toEqual([formatLsn(segmentStart(parseLsn(b[2]!.startLsn), SEG))])
  })

  it('restores and starts both kept backups, and a point in time inside the kept window', async () => {
    // Stop the streamer (it stores its partial segment) and hand the repository to the server user.
    streamer.kill('SIGTERM')
    expect(await streamer.exited, streamer.output()).toBe(0)
    // Every kept backup whole, with its WAL (verify runs after the streamer: beside a live writer it reports
    // packs and blobs written while it reads as missing).
    const verify = await runMain(['verify', '--repo', r.dir])
    expect(verify.code, verify.stdout + verify.stderr).toBe(0)
    shareWithServer(r.dir)
    const restore = async (name: string, args: string[], expected: { backup: string; rows: number }) => {
      const dir = join(pg.baseDir, `expire-${name}`)
      const res = await runMain(['restore', '--repo', r.dir, '--pgdata', dir, '--tablespace-mapping', `${pg.tablespaceDirs[0]}=${dir}-ts`, '--json', ...args])
      expect(res.code, res.stderr).toBe(0)
      expect(JSON.parse(res.stdout).backupId).toBe(expected.backup)
      const c = await startRestored(major, dir, pg.baseDir, [`${dir}-ts`], { repoDir: r.dir })
      try {
        await waitForPromotion(c)
        expect(await count(c)).toBe(expected.rows)
      } finally {
        await stopRestored(c)
      }
    }
    await restore('b4', ['--backup', b[3]!.id, '--target-immediate', '--target-action', 'promote'], { backup: b[3]!.id, rows: rows[3]! })
    // The point in time lies after the third backup: restore takes it and replays the kept WAL up to the point
    // (so the third backup restores and starts as well).
    expect(pitr.rows).toBeGreaterThan(rows[2]!)
    await restore('pitr', ['--target-time', pitr.time, '--target-action', 'promote'], { backup: b[2]!.id, rows: pitr.rows })
  })

  it('forget removes a chosen backup, and the newest one only with --force', async () => {
    const newest = await runMain(['forget', '--repo', r.dir, b[3]!.id])
    expect(newest.code).toBe(2)
    expect(newest.stderr).toMatch(new RegExp(`backup '${b[3]!.id}' is the newest backup of cluster`))
    expect(newest.stderr).toMatch(/HINT: .*--force/)
    const unknown = await runMain(['forget', '--repo', r.dir, '20200101T000000Z-000000', b[2]!.id])
    expect(unknown.code).toBe(1)
    const dry = await runMain(['forget', '--repo', r.dir, '--force', '--dry-run', b[3]!.id])
    expect(dry.code, dry.stderr).toBe(0)
    expect(dry.stdout).toMatch(/would remove backup .*its newest/)
    expect((await listBackups(r.repo, b[0]!.systemId)).length).toBe(2)
    const res = await runMain(['forget', '--repo', r.dir, b[2]!.id])
    expect(res.code, res.stderr).toBe(0)
    expect((await listBackups(r.repo, b[0]!.systemId)).map((x) => x.id)).toEqual([b[3]!.id])
  })

  describe.runIf(major === 17)('rules, snapshots, locks and info', () => {
    it('never removes a record stored after the snapshot its plan was made from', async () => {
      const [older, newer] = real
      const cluster = { systemId: older!.systemId, name: older!.clusterName }
      const policy = { keepLast: 1 }
      const plan = await planRetention(r2!.repo, cluster, policy)
      const walKey = plan.wal.files.find((f) => !f.keep)?.key
      expect(plan.backups.filter((x) => !x.decision.keep).map((x) => x.record.id)).toEqual([older!.id])
      expect(walKey).toBeDefined()
      // Take both away, plan without them, and store them again (a backup finishing, WAL pushed late).
      const walValue = (await readWalRecord<WalRecord>(r2!.repo, walKey!))!
      await r2!.repo.removeRecord(BACKUP_RECORD_KIND, backupKey(older!.systemId, older!.id))
      await removeWalRecord(r2!.repo, walKey!)
      const snapshot = await planRetention(r2!.repo, cluster, policy)
      await r2!.repo.refreshIndex() // the WAL's blobs were stored through the backup's second instance
      await writeBackupRecord(r2!.repo, older!)
      await writeWalRecord(r2!.repo, walKey!, walValue)
      await removePlanned(r2!.repo, snapshot)
      expect((await listBackups(r2!.repo)).map((x) => x.id)).toEqual([older!.id, newer!.id])
      expect(await readWalRecord(r2!.repo, walKey!)).toBeDefined()
      // A plan made now would remove both: the test above could fail.
      const fresh = await planRetention(r2!.repo, cluster, policy)
      expect(fresh.backups.find((x) => x.record.id === older!.id)!.decision.keep).toBe(false)
      expect(fresh.wal.files.find((f) => f.key === walKey)!.keep).toBe(false)
    })

    it('keeps the hand-computed set for every rule over backups whose times are faked', async () => {
      // Copies of a real backup's record at chosen times (UTC); the real records go, the copies stay.
      const T = {
        F1: '2025-03-01T10:00:00Z',
        F2: '2025-06-15T10:00:00Z',
        F3: '2025-11-30T23:00:00Z', // Sunday, ISO week 2025-W48
        F4: '2025-12-01T01:00:00Z', // Monday, 2025-W49
        F5: '2025-12-01T02:30:00Z',
        F6: '2025-12-02T12:00:00Z',
        F7: '2025-12-08T12:00:00Z', // Monday, 2025-W50
        F8: '2025-12-08T12:40:00Z',
      }
      const idOf = new Map<string, string>()
      for (const [name, iso] of Object.entries(T)) {
        const at = new Date(iso)
        const id = `${at
          .toISOString()
          .replace(/[-:]/g, '')
          .replace(/\.\d+Z$/, 'Z')}-${name.toLowerCase().padStart(6, '0')}`
        idOf.set(id, name)
        await writeBackupRecord(r2!.repo, { ...real[0]!, id, startedAt: at.toISOString(), finishedAt: new Date(at.getTime() + 300_000).toISOString() })
      }
      for (const x of real) expect((await runMain(['forget', '--repo', r2!.dir, '--force', x.id])).code).toBe(0)
      const keeps = async (...rules: string[]) => {
        const res = await runMain(['expire', '--repo', r2!.dir, '--dry-run', '--json', ...rules])
        expect(res.code, res.stderr).toBe(0)
        return JSON.parse(res.stdout)
          .clusters[0].backups.filter((x: { keep: boolean }) => x.keep)
          .map((x: { id: string }) => idOf.get(x.id))
      }
      const table: [string[], string[]][] = [
        [
          ['--keep-last', '3'],
          ['F8', 'F7', 'F6'],
        ],
        [
          ['--keep-hourly', '4'],
          ['F8', 'F6', 'F5', 'F4'],
        ],
        [
          ['--keep-daily', '4'],
          ['F8', 'F6', 'F5', 'F3'],
        ],
        [
          ['--keep-daily', '4', '--tz', '+02:00'],
          ['F8', 'F6', 'F5', 'F2'],
        ],
        [
          ['--keep-weekly', '3'],
          ['F8', 'F6', 'F3'],
        ],
        [
          ['--keep-monthly', '2'],
          ['F8', 'F3'],
        ],
        [
          ['--keep-yearly', '2'],
          ['F8', 'F1'],
        ],
        [
          ['--keep-within', '1w'],
          ['F8', 'F7', 'F6'],
        ],
        [
          ['--keep-last', '1', '--keep-weekly', '2', '--keep-monthly', '3'],
          ['F8', 'F6', 'F3', 'F2'],
        ],
      ]
      for (const [rules, expected] of table) expect(await keeps(...rules), rules.join(' ')).toEqual(expected)
      // Without --dry-run the combined policy leaves exactly its set.
      const res = await runMain(['expire', '--repo', r2!.dir, '--keep-last', '1', '--keep-weekly', '2', '--keep-monthly', '3'])
      expect(res.code, res.stderr).toBe(0)
      expect((await listBackups(r2!.repo)).map((x) => idOf.get(x.id))).toEqual(['F2', 'F3', 'F6', 'F8'])
      // A policy that keeps nothing is refused, nothing removed.
      const empty = await runMain(['expire', '--repo', r2!.dir, '--keep-wal-within', '1d'])
      expect(empty.code).toBe(2)
      expect(empty.stderr).toMatch(/keeps no backup of cluster .*all 4 would be removed/)
      expect((await listBackups(r2!.repo)).length).toBe(4)
    })

    it('a backup waits for a running expire; expire leaves WAL alone while a backup runs', async () => {
      // A live expire lock of another process: the backup says it waits, and goes on once the lock is gone.
      const other = await r.second()
      const expireLock = await other.acquireLock('shared', { purpose: 'expire' })
      const messages: string[] = []
      let finished = false
      const running = takeBackup({ server: { conninfo: pg.url() }, repo: r.repo, onEvent: (e) => e.type === 'message' && messages.push(e.text) }).finally(
        () => {
          finished = true
        },
      )
      await waitUntil('the backup waits for the expire', () => messages.some((m) => /waiting for an expire to finish/.test(m)), 30_000)
      await sleep(1500)
      expect(finished).toBe(false)
      await expireLock.release()
      const done = await running
      // While a backup lock is live, expire removes backups but no WAL.
      const backupLock = await other.acquireLock('shared', { purpose: 'backup' })
      const before = await segments(r.repo, done.systemId)
      const res = await runMain(['expire', '--repo', r.dir, '--keep-last', '1', '--json'])
      await backupLock.release()
      expect(res.code, res.stderr).toBe(0)
      expect(res.stderr).toMatch(/a backup is running .* no WAL is removed this time/)
      const c = JSON.parse(res.stdout).clusters[0]
      expect(c.removedBackups).toBe(1)
      expect(c.removedWalFiles).toBe(0)
      expect(c.wal.removedFiles).toBeGreaterThan(0)
      expect(c.wal.deferred).toMatch(/a backup is running/)
      expect(await segments(r.repo, done.systemId)).toEqual(expect.arrayContaining(before))
    })

    it('backup --expire applies the stored policy; info shows window, retention and the space each backup holds alone', async () => {
      const set = await runMain(['policy', 'set', '--repo', r.dir, '--keep-last', '2'])
      expect(set.code, set.stderr).toBe(0)
      const res = await runMain(['backup', '-d', pg.url(), '--repo', r.dir, '--expire', '--json'])
      expect(res.code, res.stderr).toBe(0)
      const out = JSON.parse(res.stdout)
      expect(out.expire.clusters[0].policySource).toBe('default')
      const left = await listBackups(r.repo, out.systemId)
      expect(left.map((x) => x.id)).toEqual(
        out.expire.clusters[0].backups
          .filter((x: { keep: boolean }) => x.keep)
          .map((x: { id: string }) => x.id)
          .reverse(),
      )
      expect(left.at(-1)!.id).toBe(out.id)

      const info = await runMain(['info', '--repo', r.dir, '--json'])
      expect(info.code, info.stderr).toBe(0)
      const c = JSON.parse(info.stdout).clusters[0]
      expect(c.recoverable.from).toEqual({ lsn: left[0]!.endLsn, time: left[0]!.finishedAt, backupId: left[0]!.id })
      expect(parseLsn(c.recoverable.to.lsn)).toBeGreaterThanOrEqual(parseLsn(left[1]!.endLsn))
      expect(c.retention.policy).toEqual({ keepLast: 2 })
      expect(c.retention.remove).toEqual([])
      // The space held alone, recounted plainly: every blob id of every backup in sets.
      await r.repo.refreshIndex()
      const refs = new Map<string, Set<string>>()
      for (const x of await listBackups(r.repo)) {
        const ids = new Set<string>([...x.files.chunks.map((ch) => ch.blob), ...x.serverManifest])
        for await (const e of new FileListReader(r.repo, x.files).entries()) {
          for (const ext of e.extents ?? []) if (ext.blob) ids.add(ext.blob)
          if (e.fileMap) {
            if (typeof e.fileMap === 'string') ids.add(e.fileMap)
            for (const ext of (await fileMapOf(e, e.fileMap, (id) => r.repo.readBlob(id))).extents) if (ext.blob) ids.add(ext.blob)
          }
        }
        refs.set(x.id, ids)
      }
      for (const x of c.backups) {
        let alone = 0
        for (const id of refs.get(x.id)!) {
          if ([...refs].some(([other, s]) => other !== x.id && s.has(id))) continue
          alone += r.repo.locateBlob(id)?.storedLength ?? 0
        }
        expect(x.aloneBytes, x.id).toBe(alone)
      }
      expect(c.backups.some((x: { aloneBytes: number }) => x.aloneBytes > 0)).toBe(true)
      const human = await runMain(['info', '--repo', r.dir])
      expect(human.stdout).toMatch(/recoverable: from .* to .* on timeline 1/)
      expect(human.stdout).toMatch(/retention \(the default policy: keep-last 2\): keeps 2 of 2 backups/)
      expect((await runMain(['info', '--repo', r.dir, '--no-space', '--json'])).stdout).toMatch(/"aloneBytes": null/)
    })
  })
})
