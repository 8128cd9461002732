// Hostile repositories: a real backup of a real server, then variants of its record and file list written through
// the library the way an attacker with write access to the repository could write them: paths that escape,
// absolute paths, links that lead out, a file where later entries need a directory, bad tablespace oids and
// locations, setuid modes, extents that do not tile, a link that disagrees with the record, a CRC that does not
// match. Every restore of such a backup exits with the integrity status (30) and nothing outside the restore's
// own targets is created, removed or changed: a sentinel tree around the targets is listed before and after.
// `pgkeep verify` (without --read-data) names every one of them.

import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { takeBackup, type BackupResult } from '../../src/backup/backup.js'
import { type BackupRecord, findBackup, newBackupId, writeBackupRecord } from '../../src/repo/backup-record.js'
import { type FileEntry, FileListReader } from '../../src/repo/file-list.js'
import { FileListWriter } from '../../src/repo/file-list-writer.js'
import { openRepository, type Repository } from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { runBin } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'
import { addOwnTables } from './restore-fixture.js'
import { ensureBuilt } from './wal-helpers.js'

const MAJOR = 16

beforeAll(() => ensureBuilt(), 120_000)

/** Every entry under `dir`, links not followed: type, mode, size and content hash of files, link targets. */
async function listTree(dir: string): Promise<string[]> {
  const out: string[] = []
  const walk = async (abs: string, rel: string) => {
    for (const name of (await readdir(abs)).sort()) {
      const p = join(abs, name)
      const r = `${rel}/${name}`
      const st = await lstat(p)
      const mode = (st.mode & 0o7777).toString(8)
      if (st.isSymbolicLink()) out.push(`${r} link`)
      else if (st.isDirectory()) {
        out.push(`${r} dir ${mode}`)
        await walk(p, r)
      } else out.push(`${r} file ${mode} ${st.size} ${(await readFile(p)).toString('base64').slice(0, 40)}`)
    }
  }
  await walk(dir, '')
  return out
}

describe('restore and verify of hostile repositories', () => {
  let pg: Cluster
  let r: TestRepo
  let repo: Repository
  let b: BackupResult
  let base: BackupRecord
  let entries: FileEntry[]
  /** A sentinel tree: what a hostile backup aims at. Targets are made inside it, beside `outside/`. */
  let sentinel: string
  let outside: string
  const hostile = new Map<string, { id: string; expect: RegExp }>()

  beforeAll(async () => {
    pg = await startCluster({ major: MAJOR })
    r = await freshFsRepo()
    await addOwnTables(pg)
    b = await takeBackup({ server: { conninfo: pg.url() }, repo: r.repo })
    repo = await openRepository(await openFsStorage(r.dir))
    base = await findBackup(repo, b.id)
    entries = []
    for await (const e of new FileListReader(repo, base.files).entries()) entries.push(e)

    sentinel = await mkdtemp(join(tmpdir(), 'pgkeep-sentinel-'))
    outside = join(sentinel, 'outside')
    await mkdir(join(outside, 'dir'), { recursive: true, mode: 0o700 })
    await chmod(join(outside, 'dir'), 0o700)
    await writeFile(join(outside, 'precious'), 'keep me', { mode: 0o600 })

    const content = entries.find((e) => e.path === 'PG_VERSION')!
    const ts = base.tablespaces[0]!
    const file = (path: string, extra: Partial<FileEntry> = {}): FileEntry => ({ ...content, path, ...extra })
    /** A copy of the real backup with `change` applied to its entries and record, written as a new backup. */
    type Change = { add?: FileEntry[]; edit?: (e: FileEntry) => FileEntry; record?: (rec: BackupRecord) => void; text?: (chunk: string) => string }
    const variant = async (name: string, expect: RegExp, change: Change) => {
      const w = new FileListWriter()
      for (const e of entries) w.add(change.edit ? change.edit({ ...e }) : e)
      for (const e of change.add ?? []) w.add(e)
      const rec: BackupRecord = structuredClone(base)
      rec.id = newBackupId(new Date(Date.parse('2020-01-01T00:00:00Z') + hostile.size * 1000))
      rec.files = await w.finish(repo)
      if (change.text) {
        // The chunks as bytes, edited where the list writer cannot go (an entry type it does not know).
        for (const c of rec.files.chunks) c.blob = (await repo.putBlob('meta', Buffer.from(change.text((await repo.readBlob(c.blob)).toString())))).id
      }
      change.record?.(rec)
      await writeBackupRecord(repo, rec)
      hostile.set(name, { id: rec.id, expect })
    }
    await variant('a path that escapes with ..', /'\.\.' segment/, { add: [file('../outside/pwned')] })
    await variant('a path that escapes inside the tree', /'\.\.' segment/, { add: [file('base/../../outside/pwned')] })
    await variant('an absolute path', /absolute/, { add: [file(join(outside, 'abs'))] })
    await variant('a link that leads out', /symlink is only allowed at pg_tblspc/, {
      add: [{ path: 'base/evil', type: 'symlink', mode: 0o777, mtime: 1, sizeBytes: 0, linkTarget: outside }, file('base/evil/pwned')],
    })
    await variant('a tablespace link the record does not list, and a file through it', /tablespace 99999, which the backup does not list/, {
      add: [{ path: 'pg_tblspc/99999', type: 'symlink', mode: 0o777, mtime: 1, sizeBytes: 0, linkTarget: outside }, file('pg_tblspc/99999/pwned')],
    })
    await variant('a tablespace link that disagrees with the record', /links 'pg_tblspc\/\d+' to '.*outside'|points to '.*outside'/, {
      edit: (e) => (e.type === 'symlink' ? { ...e, linkTarget: outside } : e),
    })
    await variant('a setuid file', /setuid/, { edit: (e) => (e.path === 'PG_VERSION' ? { ...e, mode: 0o4755 } : e) })
    await variant('a sticky, world-writable directory', /sticky/, { edit: (e) => (e.path === 'base' ? { ...e, mode: 0o1777 } : e) })
    await variant('a link in place of a file', /symlink is only allowed at pg_tblspc/, {
      edit: (e) => (e.path === 'PG_VERSION' ? { path: e.path, type: 'symlink', mode: 0o777, mtime: 1, sizeBytes: 0, linkTarget: outside } : e),
    })
    await variant('a fifo', /unknown type "p"/, { text: (t) => t.replace('["PG_VERSION","f"', '["PG_VERSION","p"') })
    await variant('extents that do not tile the file', /do not tile|covering/, {
      edit: (e) => (e.path === 'PG_VERSION' ? { ...e, extents: e.extents!.map((x) => ({ ...x, offset: x.offset + 1 })) } : e),
    })
    // A small relation file lists its map's extents in its entry, and a restore takes those: other extents there
    // must not pass. Where the map is a blob, verify compares them with the map's; the restore reads past the blob.
    const listed = entries.find((e) => typeof e.fileMap === 'string' && e.extents)!
    await variant("inline extents that are not the file map's", /refers to bytes/, {
      edit: (e) => (e.path === listed.path ? { ...e, extents: e.extents!.map((x, i) => (i === 0 ? { ...x, blobOffset: x.blobOffset + 8192 } : x)) } : e),
    })
    // A one-page file's map is inline, its extents the only ones: another file's there pass every structural check,
    // and the restore's CRC-32C check stops them (verify reads blobs, not files, and does not see it).
    const onePage = entries.filter((e) => typeof e.fileMap === 'object' && e.sizeBytes === 8192)
    const victim = onePage[0]!
    const other = onePage.find((e) => e.crc32c !== victim.crc32c)!
    await variant("another file's extents beside an inline map (CRC-32C)", /CRC-32C/, {
      edit: (e) => (e.path === victim.path ? { ...e, extents: other.extents } : e),
    })
    await variant('a tablespace oid that is a path', /tablespace oid/, {
      record: (rec) => void (rec.tablespaces[0]!.oid = '../../outside' as unknown as number),
    })
    await variant('a negative tablespace oid', /tablespace oid/, { record: (rec) => void (rec.tablespaces[0]!.oid = -1) })
    await variant('a relative tablespace location', /not an absolute path/, { record: (rec) => void (rec.tablespaces[0]!.location = '../outside') })
    await variant('a tablespace location with ..', /'\.\.' segment/, { record: (rec) => void (rec.tablespaces[0]!.location = `${ts.location}/../../outside`) })
    await variant('a recorded CRC that does not match the content', /CRC-32C/, { edit: (e) => (e.path === 'PG_VERSION' ? { ...e, crc32c: '00000000' } : e) })
  })

  afterAll(async () => {
    await repo?.close()
    await pg?.destroy()
    await r?.close()
    if (sentinel) await rm(sentinel, { recursive: true, force: true })
  })

  it('every hostile backup: restore exits 30 naming the entry, nothing outside the targets changes', async () => {
    expect(hostile.size).toBe(18)
    for (const [name, h] of hostile) {
      const target = join(sentinel, `target-${h.id}`)
      const before = await listTree(outside)
      const res = await runBin([
        'restore',
        '--repo',
        r.dir,
        '--backup',
        h.id,
        '--pgdata',
        target,
        '--tablespace-mapping',
        `${pg.tablespaceDirs[0]}=${target}-ts`,
      ])
      expect(res.code, `${name}: ${res.stderr}`).toBe(30)
      expect(res.stderr, name).toMatch(h.expect)
      expect(await listTree(outside), name).toEqual(before)
      // Besides `outside/`, only this restore's own two targets may exist in the sentinel tree.
      const names = (await readdir(sentinel)).filter((n) => n !== 'outside' && !n.startsWith('target-'))
      expect(names, name).toEqual([])
    }
  })

  it('verify names every hostile backup, also without --read-data', async () => {
    const res = await runBin(['verify', '--repo', r.dir])
    expect(res.code, res.stdout + res.stderr).toBe(30)
    const out = res.stdout + res.stderr
    for (const [name, h] of hostile) {
      // The CRC variant is only found by reading the data (the list itself is well-formed).
      if (/CRC/.test(name)) continue
      expect(out, name).toContain(`backup ${h.id}`)
    }
    expect(out).toMatch(/file '[^']+': its extents differ from those of its file map '[0-9a-f]{64}'/)
    expect(out).not.toContain(`backup ${b.id}`)
  })

  it('a delta restore over a target whose directories were replaced by links writes nothing through them', async () => {
    const target = join(sentinel, 'target-delta')
    const first = await runBin([
      'restore',
      '--repo',
      r.dir,
      '--backup',
      b.id,
      '--pgdata',
      target,
      '--tablespace-mapping',
      `${pg.tablespaceDirs[0]}=${target}-ts`,
    ])
    expect(first.code, first.stderr).toBe(0)
    // Someone replaces a database directory and pg_wal by links to the sentinel's directory.
    const db = (await readdir(join(target, 'base'))).find((n) => n !== '1')!
    await rm(join(target, 'base', db), { recursive: true })
    await symlink(join(outside, 'dir'), join(target, 'base', db))
    await rm(join(target, 'pg_wal'), { recursive: true })
    await symlink(join(outside, 'dir'), join(target, 'pg_wal'))
    const before = await listTree(outside)
    const res = await runBin(['restore', '--repo', r.dir, '--backup', b.id, '--pgdata', target, '--delta'])
    expect(res.code, res.stderr).toBe(0)
    expect(await listTree(outside)).toEqual(before)
    expect((await lstat(join(target, 'base', db))).isDirectory()).toBe(true)
    expect((await lstat(join(target, 'pg_wal'))).isDirectory()).toBe(true)
    // The tablespace stayed where the target's own link points: the mapping of the first restore.
    const link = (await readdir(join(target, 'pg_tblspc')))[0]!
    expect((await lstat(join(target, 'pg_tblspc', link))).isSymbolicLink()).toBe(true)
    expect(await readdir(`${target}-ts`)).toContainEqual(expect.stringMatching(/^PG_16_/))
  })
})
