// `pgkeep backup` given bad input or failing parts: each exits non-zero with a clear message and a hint, and no
// backup is listed that should not be. One major (16) suffices: these are client-side behaviours.

import { execFileSync, spawn } from 'node:child_process'
import { mkdir, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect, createReplicationSlot, startReplication } from '../../protocol/index.js'
import { runBin, runMain } from '../harness/cli.js'
import { type Cluster, ROLES, startCluster } from '../harness/cluster.js'
import { loadPgbench } from '../harness/load.js'
import { noteSkip } from '../harness/reference-tools.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'

const backupsIn = async (repoDir: string, env: Record<string, string> = {}) => {
  const r = await runMain(['info', '--repo', repoDir, '--json'], env)
  expect(r.code, r.stderr).toBe(0)
  return (JSON.parse(r.stdout).clusters as { backups: { id: string; type: string }[] }[]).flatMap((c) => c.backups)
}

describe('pgkeep backup faults (PG 16)', () => {
  let pg: Cluster
  let r: TestRepo
  beforeAll(async () => {
    pg = await startCluster({ major: 16 })
    await loadPgbench(pg, 2)
    r = await freshFsRepo()
  })
  afterAll(async () => {
    await pg?.destroy()
    await r?.close()
  })

  it('an unreachable server: exit 10, hint, nothing listed', async () => {
    const res = await runMain(['backup', '-d', 'host=127.0.0.1 port=1 user=x password=y', '--repo', r.dir])
    expect(res.code).toBe(10)
    expect(res.stderr).toMatch(/could not connect to server/)
    expect(res.stderr).toMatch(/^HINT: /m)
    expect(await backupsIn(r.dir)).toEqual([])
  })

  it('a role without REPLICATION: exit 11 and the ALTER ROLE hint', async () => {
    const res = await runMain(['backup', '-d', pg.url({ user: ROLES.noReplication }), '--repo', r.dir])
    expect(res.code).toBe(11)
    expect(res.stderr).toMatch(/HINT: grant the role replication rights: ALTER ROLE norepl REPLICATION/)
  })

  it('a repository of an unknown format version: exit 22 naming both versions', async () => {
    const dir = join(pg.baseDir, 'future-repo')
    expect((await runMain(['init', '--repo', dir])).code).toBe(0)
    const config = JSON.parse(await readFile(join(dir, 'config'), 'utf8'))
    config.version = 99
    await writeFile(join(dir, 'config'), JSON.stringify(config))
    const res = await runMain(['backup', '-d', pg.url(), '--repo', dir])
    expect(res.code).toBe(22)
    expect(res.stderr).toMatch(/99/)
  })

  it('a wrong passphrase: exit 23 with a hint, and the right one works', async () => {
    const dir = join(pg.baseDir, 'enc-repo')
    expect((await runMain(['init', '--repo', dir, '--encrypt'], { PGKEEP_PASSPHRASE: 'right one' })).code).toBe(0)
    const bad = await runMain(['backup', '-d', pg.url(), '--repo', dir], { PGKEEP_PASSPHRASE: 'wrong one' })
    expect(bad.code).toBe(23)
    expect(bad.stderr).toMatch(/passphrase/i)
    expect(bad.stderr).toMatch(/^HINT: /m)
    const good = await runMain(['backup', '-d', pg.url(), '--repo', dir, '--json'], { PGKEEP_PASSPHRASE: 'right one' })
    expect(good.code, good.stderr).toBe(0)
    expect(await backupsIn(dir, { PGKEEP_PASSPHRASE: 'right one' })).toHaveLength(1)
  })

  it('a repository location that cannot be written: a storage error, exit 20', async () => {
    const res = await runMain(['backup', '-d', pg.url(), '--repo', '/etc/passwd/not-a-dir', '--init'])
    expect(res.code).toBe(20)
    expect(res.stderr).toMatch(/pgkeep: error: /)
  })

  it('a named slot in use by someone else: exit 12 naming the slot, and it is left alone', async () => {
    const holder = await connect(pg.url())
    await createReplicationSlot(holder, 'busy_slot', { reserveWal: true })
    const [{ lsn }] = await pg.sql<{ lsn: string }>(`select restart_lsn::text lsn from pg_replication_slots where slot_name = 'busy_slot'`)
    const { parseLsn } = await import('../../protocol/index.js')
    const stream = await startReplication(holder, { slot: 'busy_slot', startLsn: parseLsn(lsn) - (parseLsn(lsn) % (16n << 20n)) })
    try {
      const res = await runMain(['backup', '-d', pg.url(), '--repo', r.dir, '--slot', 'busy_slot'])
      expect(res.code).toBe(12)
      expect(res.stderr).toMatch(/busy_slot/)
      expect(res.stderr).toMatch(/^HINT: .*(another process|--slot)/m)
    } finally {
      await stream.stop()
      await holder.close()
    }
    expect(await pg.sql(`select 1 from pg_replication_slots where slot_name = 'busy_slot'`)).toHaveLength(1)
    await pg.sql(`select pg_drop_replication_slot('busy_slot')`)
  })

  it('no second free WAL sender: exit 12 with the max_wal_senders hint', async () => {
    const tight = await startCluster({ major: 16, conf: { max_wal_senders: 1 }, tablespaces: 0 })
    try {
      const res = await runMain(['backup', '-d', tight.url(), '--repo', join(tight.baseDir, 'repo'), '--init'])
      expect(res.code).toBe(12)
      expect(res.stderr).toMatch(/max_wal_senders/)
    } finally {
      await tight.destroy()
    }
  })

  it('a parent whose data pack is gone: a full backup instead, saying why', async () => {
    const dir = join(pg.baseDir, 'parent-repo')
    const first = await runMain(['backup', '-d', pg.url(), '--repo', dir, '--json', '--init'])
    expect(first.code, first.stderr).toBe(0)
    // Remove the parent's largest pack: its file data (WAL and metadata packs are smaller here).
    const packDirs = await readdir(join(dir, 'packs'))
    const packs = (await Promise.all(packDirs.map(async (d) => (await readdir(join(dir, 'packs', d))).map((f) => join(dir, 'packs', d, f))))).flat()
    const sizes = await Promise.all(packs.map(async (p) => (await stat(p)).size))
    await unlink(packs[sizes.indexOf(Math.max(...sizes))])
    // verify names the backup and its files that lost data.
    const firstId = JSON.parse(first.stdout).id
    const verify = await runMain(['verify', '--repo', dir])
    expect(verify.code).toBe(30)
    expect(verify.stdout).toMatch(new RegExp(`backup ${firstId} file '[^']+': data blob '[0-9a-f]{64}' is missing`))
    const second = await runMain(['backup', '-d', pg.url(), '--repo', dir, '--json'])
    expect(second.code, second.stderr).toBe(0)
    expect(second.stderr).toMatch(/missing.*taking a full backup instead/)
    expect(JSON.parse(second.stdout).type).toBe('full')
  })

  it('verify names a backup whose WAL is gone', async () => {
    const dir = join(pg.baseDir, 'wal-repo')
    const b = await runMain(['backup', '-d', pg.url(), '--repo', dir, '--json', '--init'])
    expect(b.code, b.stderr).toBe(0)
    const id = JSON.parse(b.stdout).id
    expect((await runMain(['verify', '--repo', dir])).code).toBe(0)
    const walDir = join(dir, 'records', 'wal')
    const [cluster] = await readdir(walDir)
    const [segment] = (await readdir(join(walDir, cluster))).sort()
    await unlink(join(walDir, cluster, segment))
    const verify = await runMain(['verify', '--repo', dir])
    expect(verify.code).toBe(30)
    expect(verify.stdout).toMatch(new RegExp(`backup ${id}: WAL segment '${segment.slice(0, 24)}' it needs is not in the repository`))
  })

  it('SIGINT: exit 14 with "interrupted", nothing listed, no slot left; running again succeeds', async () => {
    const dir = join(pg.baseDir, 'int-repo')
    await mkdir(dir)
    const child = spawn(
      process.execPath,
      [join(import.meta.dirname, '..', '..', 'bin', 'pgkeep.js'), 'backup', '-d', pg.url(), '--repo', dir, '--init', '--max-rate', '8M'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    let stderr = ''
    child.stderr.on('data', (d) => (stderr += d))
    // Interrupt once the server is streaming files to it (not after a fixed time: a loaded machine may not
    // even have loaded the CLI by then, and a fast one may have finished).
    await expect
      .poll(async () => (await pg.sql(`select 1 from pg_stat_progress_basebackup where phase = 'streaming database files'`)).length, {
        timeout: 60_000,
        interval: 100,
      })
      .toBe(1)
    child.kill('SIGINT')
    const code = await new Promise<number>((res) => child.once('exit', (c) => res(c ?? -1)))
    expect(code, stderr).toBe(14)
    expect(stderr).toMatch(/interrupted by SIGINT/)
    expect(await backupsIn(dir)).toEqual([])
    await expect.poll(async () => (await pg.sql(`select 1 from pg_replication_slots where slot_name like 'pgkeep_%'`)).length).toBe(0)
    const again = await runBin(['backup', '-d', pg.url(), '--repo', dir, '--init', '--json'])
    expect(again.code, again.stderr).toBe(0)
    expect(await backupsIn(dir)).toHaveLength(1)
  })

  it("records and prints the server's page checksum failures, and flags the backup", async () => {
    const bad = await startCluster({ major: 16, tablespaces: 0 })
    try {
      await bad.sql(`create table victim as select g id, md5(g::text) v from generate_series(1, 5000) g`)
      await bad.sql('checkpoint')
      const [{ path }] = await bad.sql<{ path: string }>(`select pg_relation_filepath('victim') path`)
      await bad.stop()
      const file = join(bad.dataDir, path)
      const bytes = await readFile(file)
      bytes.fill(0x5a, 8192 + 4000, 8192 + 4100) // inside page 1, past its header: only the checksum can tell
      await writeFile(file, bytes)
      await bad.start()
      const dir = join(bad.baseDir, 'repo')
      const res = await runMain(['backup', '-d', bad.url(), '--repo', dir, '--init', '--json'])
      expect(res.code, res.stderr).toBe(0)
      expect(res.stderr).toMatch(/pgkeep: warning: server: .*checksum verification failed/)
      expect(JSON.parse(res.stdout).checksumFailures).toBeGreaterThanOrEqual(1)
      const info = await runMain(['info', '--repo', dir])
      expect(info.stdout).toMatch(/CHECKSUM FAILURES/)
    } finally {
      await bad.destroy()
    }
  })

  it('a full disk in the repository: exit 20 with a disk-space hint, nothing listed', async () => {
    const mnt = join(pg.baseDir, 'tiny')
    await mkdir(mnt)
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt], { stdio: 'ignore' })
    } catch {
      return noteSkip('disk-full backup test', 'cannot mount a small tmpfs here (needs root)')
    }
    try {
      const res = await runMain(['backup', '-d', pg.url(), '--repo', join(mnt, 'repo'), '--init'])
      expect(res.code, res.stderr).toBe(20)
      expect(res.stderr).toMatch(/space/i)
    } finally {
      execFileSync('umount', [mnt])
      await rm(mnt, { recursive: true, force: true })
    }
  })
})
