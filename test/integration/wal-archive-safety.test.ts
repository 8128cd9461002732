// Archiving and recovery never take a wrong repository for a right one, against real servers:
// - archive_command = `pgkeep wal push` into an empty location (an unmounted mount point) and into a missing one
//   (a mistyped path) fails: PostgreSQL counts the failures in pg_stat_archiver, keeps the segment as .ready and
//   tries again; nothing is created there. Once the repository exists (`pgkeep init`), the kept segment arrives.
//   `wal stream`, `wal get` and `backup` (without --init) refuse such a location too; `backup --init` says it created one.
// - restore_command = `pgkeep wal get` (prefetch on) for a cluster the repository does not know stops recovery
//   with FATAL: the server does not start (and so never promotes), and its log shows the failure.

import { existsSync } from 'node:fs'
import { copyFile, chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execFileSync } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { handOver } from '../harness/server-user.js'
import { takeTarBackup } from '../harness/tar-backup.js'
import { shareWithServer } from './restore-fixture.js'
import { BIN, ensureBuilt, startExpectingFailure, stopPrefetchDaemons, waitUntil } from './wal-helpers.js'

beforeAll(() => ensureBuilt(), 120_000)

const MAJOR = 16

interface Archiver {
  archived: string | null
  failed: number
  lastFailed: string | null
}

describe(`archiving into a location without a repository, recovery of a cluster the repository does not know (PostgreSQL ${MAJOR})`, () => {
  let primary: Cluster
  let work: string
  let empty: string
  let missing: string
  const pushTo = (repo: string) => `${process.execPath} ${BIN} wal push --repo ${repo} %p`
  const archiver = async (): Promise<Archiver> => {
    const [r] = await primary.sql<{ archived: string | null; failed: string; last_failed: string | null }>(
      'select last_archived_wal archived, failed_count::text failed, last_failed_wal last_failed from pg_stat_archiver',
    )
    return { archived: r!.archived, failed: Number(r!.failed), lastFailed: r!.last_failed }
  }
  const setArchiveCommand = async (command: string) => {
    await primary.sql(`alter system set archive_command = '${command.replace(/'/g, "''")}'`)
    await primary.reload()
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'pgkeep-archsafety-'))
    await chmod(work, 0o755)
    // An empty directory the server's user owns (where a file system should have been mounted), and a path whose
    // last part does not exist (a typo).
    empty = join(work, 'mnt-backup')
    await mkdir(empty, { mode: 0o755 })
    await handOver(empty)
    missing = join(work, 'mnt-bakcup', 'pgkeep')
    primary = await startCluster({ major: MAJOR, tablespaces: 0, conf: { archive_mode: 'on', archive_command: pushTo(empty), wal_keep_size: '1GB' } })
  })
  afterAll(async () => {
    await primary?.destroy()
    if (work) await rm(work, { recursive: true, force: true })
  })

  it('wal push fails into an empty or a missing location: PostgreSQL keeps the segment and archives it once the repository exists', async () => {
    await primary.sql('create table t (id int primary key, v text)')
    await primary.sql(`insert into t select g, md5(g::text) from generate_series(1, 10000) g`)
    const [{ w }] = await primary.sql<{ w: string }>('select pg_walfile_name(pg_switch_wal()) w')
    const ready = join(primary.dataDir, 'pg_wal', 'archive_status', `${w}.ready`)

    await waitUntil('the archiver failed twice on the empty location', async () => (await archiver()).failed >= 2, 60_000)
    let a = await archiver()
    expect(a.lastFailed).toBe(w)
    expect(a.archived).toBeNull()
    expect(existsSync(ready), `${w}.ready kept`).toBe(true)
    expect(await readdir(empty), 'nothing created in the empty location').toEqual([])
    const log = await primary.log()
    expect(log).toMatch(new RegExp(`pgkeep: error: there is no repository at '${empty}': the location is empty or does not exist`))
    expect(log).toMatch(new RegExp(`HINT: .*only if you mean to start a new repository there, create it with 'pgkeep init --repo ${empty}'`))
    expect(log).toMatch(/archive command failed with exit code 22/)

    // A mistyped path: the same, and the path is not created.
    const before = a.failed
    await setArchiveCommand(pushTo(missing))
    await waitUntil('the archiver failed on the missing location', async () => (await archiver()).failed >= before + 2, 120_000)
    a = await archiver()
    expect(a.lastFailed).toBe(w)
    expect(existsSync(ready)).toBe(true)
    expect(existsSync(join(work, 'mnt-bakcup')), 'nothing created on the way to the missing location').toBe(false)

    // The repository is created on purpose; the kept segment is archived and is the server's own.
    expect((await runMain(['init', '--repo', empty])).code).toBe(0)
    shareWithServer(empty)
    await setArchiveCommand(pushTo(empty))
    await waitUntil(`the archiver stored ${w}`, async () => ((await archiver()).archived ?? '') >= w, 120_000)
    expect(existsSync(join(primary.dataDir, 'pg_wal', 'archive_status', `${w}.done`))).toBe(true)
    const dest = join(work, 'fetched')
    const got = await runMain(['wal', 'get', '--repo', empty, '--prefetch', '0', '--cluster', await systemIdOf(primary), w, dest])
    expect(got.code, got.stderr).toBe(0)
    expect((await readFile(dest)).equals(await readFile(join(primary.dataDir, 'pg_wal', w)))).toBe(true)
  })

  it('wal push, wal stream, wal get and backup refuse a location without a repository; backup --init creates one and says so', async () => {
    const none = join(work, 'none')
    await mkdir(none)
    const [{ w }] = await primary.sql<{ w: string }>('select pg_walfile_name(pg_current_wal_lsn()) w')
    await copyFile(join(primary.dataDir, 'pg_wal', w), join(work, w))
    for (const [args, code] of [
      [['wal', 'push', '--repo', none, join(work, w)], 22],
      [['wal', 'stream', '-d', primary.url(), '--repo', none, '--slot', 'never_created', '--create-slot'], 22],
      [['wal', 'get', '--repo', none, w, join(work, 'RECOVERYXLOG')], 255],
      [['backup', '-d', primary.url(), '--repo', none], 22],
    ] as const) {
      const res = await runMain([...args])
      expect(res.code, `${args.slice(0, 2).join(' ')}: ${res.stderr}`).toBe(code)
      expect(res.stderr).toMatch(new RegExp(`there is no repository at '${none}'`))
      expect(res.stderr).toMatch(/^HINT: check --repo/m)
      if (args[0] === 'backup') expect(res.stderr).toMatch(/or give this backup --init/)
      expect(await readdir(none), `${args.slice(0, 2).join(' ')} created nothing`).toEqual([])
    }
    expect(await primary.sql(`select 1 from pg_replication_slots where slot_name = 'never_created'`)).toEqual([])
    // A location with other files in it but no repository: not a repository (and not created over either).
    await writeFile(join(none, 'something-else'), 'x')
    expect((await runMain(['backup', '-d', primary.url(), '--repo', none, '--init'])).code).toBe(22)
    await rm(join(none, 'something-else'))

    const made = await runMain(['backup', '-d', primary.url(), '--repo', none, '--init', '--json'])
    expect(made.code, made.stderr).toBe(0)
    expect(made.stderr).toMatch(new RegExp(`pgkeep: created an unencrypted repository at ${none}`))
    const again = await runMain(['backup', '-d', primary.url(), '--repo', none, '--init', '--json'])
    expect(again.code, again.stderr).toBe(0)
    expect(again.stderr).not.toMatch(/created/)
    expect(JSON.parse(again.stdout).type).toBe('incremental')
    // --compress belongs to creating a repository.
    expect((await runMain(['backup', '-d', primary.url(), '--repo', none, '--compress', 'none'])).code).toBe(2)
  })

  it('wal get for a cluster the repository does not know stops recovery with FATAL instead of promoting', async () => {
    // `empty` is a repository now, holding the primary's WAL only. Another cluster's copy points its
    // restore_command at it (a wrong --repo in restore_command, or a repository that lost this cluster).
    const other = await startCluster({ major: MAJOR, tablespaces: 0 })
    try {
      await other.sql('create table u as select 1 x')
      const backup = await takeTarBackup(other.url(), join(work, 'backup-other'))
      const baseDir = await mkdtemp(join(tmpdir(), 'pgkeep-archsafety-restored-'))
      const dataDir = join(baseDir, 'data')
      await mkdir(dataDir)
      execFileSync('tar', ['-xf', backup.archives.find((x) => x.tablespaceOid === null)!.path, '-C', dataDir])
      await writeFile(join(dataDir, 'recovery.signal'), '')
      try {
        const { started, log } = await startExpectingFailure(MAJOR, dataDir, {
          baseDir,
          conf: { archive_mode: 'off', restore_command: `${process.execPath} ${BIN} wal get --repo ${empty} --linger 2 %f %p` },
        })
        expect(started, log).toBe(false)
        expect(log).toMatch(/FATAL: {2}could not restore file "[^"]+" from archive: child process exited with exit code 255/)
        expect(log).toMatch(
          new RegExp(`pgkeep: error: repository '${empty}' holds no cluster '${await systemIdOf(other)}'; it holds cluster ${await systemIdOf(primary)}`),
        )
        expect(log).not.toMatch(/archive recovery complete|selected new timeline ID|database system is ready to accept connections/)
        expect(log).not.toMatch(/is not in the repository/)
      } finally {
        await stopPrefetchDaemons(join(dataDir, 'pg_wal', '.pgkeep-prefetch'))
        await rm(baseDir, { recursive: true, force: true })
      }
    } finally {
      await other.destroy()
    }

    // The same from the command line: --cluster naming no cluster of the repository is exit 255 and names what
    // there is, never exit 1.
    const res = await runMain([
      'wal',
      'get',
      '--repo',
      empty,
      '--prefetch',
      '0',
      '--cluster',
      '7000000000000000001',
      '000000010000000000000001',
      join(work, 'x'),
    ])
    expect(res.code).toBe(255)
    expect(res.stderr).toMatch(new RegExp(`holds no cluster '7000000000000000001'; it holds cluster ${await systemIdOf(primary)}`))
  })
})

async function systemIdOf(c: Cluster): Promise<string> {
  return (await c.sql<{ s: string }>('select system_identifier::text s from pg_control_system()'))[0]!.s
}
