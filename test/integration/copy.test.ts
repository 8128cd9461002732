// `pgkeep copy` between real repositories (fs and the harness's S3 server, plain and encrypted) of a real PostgreSQL
// 17 cluster's backups: fs → S3 encrypted → fs plain; an incremental copy stores only what the new backup added;
// the last copy verifies and restores on its own (the source out of reach, tablespace relocated) to the source's
// table contents; window hashes in an encrypted copy are its own ids of the windows' bytes, and an incremental
// backup into it stores what the same backup stores in the source; a copy SIGKILLed
// mid-backup leaves nothing half-listed (verify passes after each kill) and the next run finishes; key rotation
// rewrites no pack, the old passphrase stops working, and the last key cannot be removed.

import { createHash } from 'node:crypto'
import { chmodSync, readdirSync, readFileSync, renameSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type BackupRecord,
  extentsIn,
  FileListReader,
  initRepository,
  listBackups,
  listWalKeys,
  openRepository,
  type Repository,
  UNKNOWN_WINDOW,
  WINDOW_BYTES,
  fileMapOf,
} from '../../src/repo/index.js'
import { openStorage } from '../../src/storage/open.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { loadPgbench, touchPages } from '../harness/load.js'
import { tempDir } from '../harness/repo-fixtures.js'
import { type S3TestServer, startS3Server } from '../harness/s3-server.js'
import { addOwnTables, startRestored, stopRestored, tableChecksums, waitForPromotion } from './restore-fixture.js'
import { ensureBuilt, spawnPgkeep, waitUntil } from './wal-helpers.js'

const MAJOR = 17
const FAST_SCRYPT = { N: 1 << 12, r: 8, p: 1 }

beforeAll(() => ensureBuilt(), 120_000)

/** Every file under `dir` (recursively), with its size. */
function filesUnder(dir: string): { path: string; size: number }[] {
  const out: { path: string; size: number }[] = []
  let names: string[]
  try {
    names = readdirSync(dir)
  } catch {
    return out
  }
  for (const name of names) {
    const p = join(dir, name)
    const st = statSync(p, { throwIfNoEntry: false })
    if (!st) continue
    if (st.isDirectory()) out.push(...filesUnder(p))
    else out.push({ path: p, size: st.size })
  }
  return out
}

/**
 * Checks every window hash of a backup's file maps that is not unknown: it must be the id the window's bytes have as
 * a blob in `repo` (its own keyed id in an encrypted repository), what an incremental backup there compares with.
 */
async function checkWindowHashes(repo: Repository, rec: BackupRecord): Promise<{ known: number; unknown: number; v1Maps: number }> {
  let known = 0
  let unknown = 0
  let v1Maps = 0
  for await (const e of new FileListReader(repo, rec.files).entries()) {
    if (!e.fileMap) continue
    const m = await fileMapOf(e, e.fileMap, (id) => repo.readBlob(id))
    let cached: [string, Buffer] | undefined
    const read = async (id: string) => (cached?.[0] === id ? cached[1] : (cached = [id, await repo.readBlob(id)])[1])
    if (!m.windowHashes) continue // version 2: no window hashes, page hashes do not depend on the repository
    v1Maps++
    for (const [k, w] of m.windowHashes.entries()) {
      if (w === null) continue
      if (w === UNKNOWN_WINDOW) {
        unknown++
        continue
      }
      const from = k * WINDOW_BYTES
      const bytes = Buffer.alloc(Math.min(WINDOW_BYTES, m.sizeBytes - from))
      for (const x of extentsIn(m.extents, from, bytes.length)) {
        if (x.blob !== null) (await read(x.blob)).copy(bytes, x.offset - from, x.blobOffset, x.blobOffset + x.length)
      }
      expect(repo.blobIdOf(bytes), `window ${k} of '${e.path}' in backup ${rec.id}`).toBe(w)
      known++
    }
  }
  return { known, unknown, v1Maps }
}

describe('copy', () => {
  let pg: Cluster
  let s3: S3TestServer
  const tmp = tempDir('copy')
  const A = join(tmp.dir, 'a') // fs, plain: where the backups are taken
  const C = join(tmp.dir, 'c') // fs, plain: a copy of the copy
  const D = join(tmp.dir, 'd') // fs, encrypted, small packs: the interrupted copy
  let B: string // S3, encrypted
  let s3env: Record<string, string>
  const PB = 'passphrase of b'
  const PD = 'passphrase of d'
  const opened: Repository[] = []
  const cli = (args: string[], env: Record<string, string> = {}) => runMain(args, { ...s3env, ...env })
  const ok = async (args: string[], env: Record<string, string> = {}) => {
    const r = await cli(args, env)
    expect(r.code, `pgkeep ${args.join(' ')}: ${r.stderr}`).toBe(0)
    return r
  }
  const open = async (url: string, passphrase?: string) => {
    const r = await openRepository(await openStorage(url, s3env), { passphrase })
    opened.push(r)
    return r
  }
  /** Blobs and stored bytes of a repository, from its index (what it holds, whoever wrote it). */
  const holdings = async (url: string, passphrase?: string) => {
    const r = await open(url, passphrase)
    let bytes = 0
    for await (const o of r.storage.list('packs/')) bytes += o.sizeBytes
    return { blobs: r.indexStats.blobs, packBytes: bytes }
  }
  let b1: string
  let b2: string
  let want: Record<string, string>

  beforeAll(async () => {
    // The restored server's restore_command reads C as the server user: it must get through the directory above.
    chmodSync(tmp.dir, 0o711)
    s3 = await startS3Server()
    s3env = {
      AWS_ENDPOINT_URL: s3.endpoint,
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      AWS_REGION: s3.region,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    }
    B = `s3://${s3.bucket}/${s3.prefix}copy-b`
    pg = await startCluster({ major: MAJOR })
    await loadPgbench(pg, 2)
    await addOwnTables(pg)
    await ok(['init', '--repo', A])
    b1 = JSON.parse((await ok(['backup', '-d', pg.url(), '--repo', A, '--cluster', 'main', '--json'])).stdout).id
  }, 180_000)
  afterAll(async () => {
    for (const r of opened) await r.close().catch(() => {})
    await pg?.destroy()
    await s3?.stop()
    tmp.remove()
  })

  it('copies fs → S3 encrypted → fs plain; an incremental copy stores what the backup added', async () => {
    await ok(['init', '--repo', B, '--encrypt'], { PGKEEP_PASSPHRASE: PB })
    const first = JSON.parse((await ok(['copy', '--repo', A, '--to', B, '--with-wal', '--json'], { PGKEEP_TO_PASSPHRASE: PB })).stdout)
    expect(first.backups).toEqual([{ id: b1, systemId: expect.any(String), result: 'copied' }])
    expect(first.wal.copied).toBeGreaterThan(0)
    // --with-wal: every WAL file of the source is in the copy.
    const [a, b] = [await open(A), await open(B, PB)]
    const systemId = first.backups[0].systemId as string
    expect(await listWalKeys(b, systemId)).toEqual(await listWalKeys(a, systemId))
    await ok(['verify', '--repo', B, '--read-data'], { PGKEEP_PASSPHRASE: PB })

    // A second backup after 1% of pgbench's pages changed, then the copy again: the target grows by about what the
    // source grew by for that backup (the same new blobs, re-encrypted), not by a second full copy.
    await touchPages(pg, 1)
    await pg.sql('checkpoint')
    const aBefore = await holdings(A)
    const backup2 = JSON.parse((await ok(['backup', '-d', pg.url(), '--repo', A, '--json'])).stdout)
    b2 = backup2.id
    expect(backup2.type).toBe('incremental')
    want = await tableChecksums(pg)
    const aAfter = await holdings(A)
    const bBefore = await holdings(B, PB)
    const second = JSON.parse((await ok(['copy', '--repo', A, '--to', B, '--json'], { PGKEEP_TO_PASSPHRASE: PB })).stdout)
    const bAfter = await holdings(B, PB)
    expect(second.backups.map((x: { id: string; result: string }) => [x.id, x.result])).toEqual([
      [b1, 'present'],
      [b2, 'copied'],
    ])
    const grew = { source: { blobs: aAfter.blobs - aBefore.blobs, bytes: aAfter.packBytes - aBefore.packBytes } }
    const target = { blobs: bAfter.blobs - bBefore.blobs, bytes: bAfter.packBytes - bBefore.packBytes }
    console.log(
      `incremental copy: the source grew by ${grew.source.blobs} blobs, ${grew.source.bytes} bytes for backup 2 (WAL included); ` +
        `the target by ${target.blobs} blobs, ${target.bytes} bytes; the copy read ${second.read.bytes} bytes; full copy stored ${first.stored.storedBytes} bytes`,
    )
    expect(target.blobs).toBe(second.stored.blobs)
    expect(target.blobs).toBeLessThanOrEqual(grew.source.blobs)
    // Encryption adds 28 bytes a blob, and the WAL of the first copy may already be there.
    expect(target.bytes).toBeLessThanOrEqual(grew.source.bytes + 64 * target.blobs + 65536)
    expect(target.bytes).toBeLessThan(first.stored.storedBytes / 4)

    // And on to a plain repository on fs, from the encrypted one.
    await ok(['init', '--repo', C])
    const third = JSON.parse((await ok(['copy', '--repo', B, '--to', C, '--with-wal', '--json'], { PGKEEP_PASSPHRASE: PB })).stdout)
    expect(third.backups.map((x: { result: string }) => x.result)).toEqual(['copied', 'copied'])
    await ok(['verify', '--repo', C, '--read-data'])
    // The records are the source's, but for the blob ids they name.
    const strip = (r: BackupRecord) => ({ ...r, files: { ...r.files, chunks: r.files.chunks.map((c) => ({ ...c, blob: '' })) }, serverManifest: [] })
    const c = await open(C)
    expect((await listBackups(c)).map(strip)).toEqual((await listBackups(a)).map(strip))
    // Plain to plain through an encrypted copy: a full backup comes back with the same blob ids, byte for byte.
    expect((await listBackups(c))[0]!.files.chunks).toEqual((await listBackups(a))[0]!.files.chunks)
  }, 240_000)

  it('an interrupted copy lists nothing half-copied, and the next run finishes it', async () => {
    // Small packs, so a kill finds some; a low scrypt cost (through the library), so the many opens below are quick.
    const dStorage = await openStorage(D, {})
    await (await initRepository(dStorage, { encrypt: { passphrase: PD, scrypt: FAST_SCRYPT }, packTargetBytes: 65536 })).close()
    await dStorage.close()
    const count = (prefix: string) => filesUnder(join(D, prefix)).length
    const listed: string[][] = []
    let kills = 0
    for (let run = 0; ; run++) {
      expect(run, 'the copy should finish within a few runs').toBeLessThan(6)
      const walAtStart = count('records/wal')
      const child = spawnPgkeep(['copy', '--repo', A, '--to', D, '--json'], { PGKEEP_TO_PASSPHRASE: PD })
      // Killed once this run has written WAL records (the first step of a backup's copy) and then packs of the
      // backup's files: mid-backup, before its record, unless the kill lands as the copy writes its last record.
      let packsAfterWal: number | undefined
      await waitUntil(
        'the copy has stored WAL and file data, or ended',
        async () => {
          if (child.child.exitCode !== null) return true
          if (packsAfterWal === undefined && count('records/wal') > walAtStart) packsAfterWal = count('packs')
          return packsAfterWal !== undefined && count('packs') > packsAfterWal + 2
        },
        120_000,
        10,
      )
      if (child.child.exitCode === null) {
        child.kill('SIGKILL')
        expect(await child.exited).toBe('SIGKILL')
        kills++
        // Nothing half-listed: the repository verifies, and every backup it lists is whole.
        const v = await cli(['verify', '--repo', D, '--json'], { PGKEEP_PASSPHRASE: PD })
        expect(v.code, v.stdout + v.stderr).toBe(0)
        listed.push(
          JSON.parse((await cli(['info', '--repo', D, '--json'], { PGKEEP_PASSPHRASE: PD })).stdout).clusters.flatMap((x: { backups: { id: string }[] }) =>
            x.backups.map((b) => b.id),
          ),
        )
        continue
      }
      expect(await child.exited, child.output()).toBe(0)
      // stdout's JSON object, after the messages on stderr.
      const last = JSON.parse(/^\{$[\s\S]*^\}$/m.exec(child.output())![0])
      // What the earlier runs completed is not copied again.
      if (kills > 0) expect(last.backups[0].result).toBe(listed.at(-1)!.includes(b1) ? 'present' : 'copied')
      // A backup the killed runs left unlisted finds the WAL they stored (they were killed after storing some). A
      // kill can also come after the last record, while the copy ends: then this run finds every backup present and
      // looks at no WAL.
      if (last.backups.some((x: { result: string }) => x.result === 'copied')) expect(last.wal.present).toBeGreaterThan(0)
      else expect(last.wal).toMatchObject({ copied: 0, present: 0 })
      break
    }
    console.log(`interrupted copy: ${kills} kills, backups listed after each: ${JSON.stringify(listed)}`)
    expect(kills).toBeGreaterThanOrEqual(1)
    // In the order they are copied, whole: a kill that lands as the copy ends finds both listed.
    for (const l of listed) expect([[], [b1], [b1, b2]]).toContainEqual(l)
    await ok(['verify', '--repo', D, '--read-data'], { PGKEEP_PASSPHRASE: PD })
    // Window hashes in the encrypted copy are its own ids of the windows' bytes (or unknown, never the source's).
    const d = await open(D, PD)
    for (const rec of await listBackups(d)) {
      const w = await checkWindowHashes(d, rec)
      console.log(`backup ${rec.id} (${rec.type}) in the encrypted copy: ${w.known} window hashes checked, ${w.unknown} unknown`)
      if (w.v1Maps > 0) expect(w.known).toBeGreaterThan(0)
      if (rec.type === 'full') expect(w.unknown).toBe(0)
    }
    // A copy with nothing left to do reads and stores nothing.
    const again = JSON.parse((await ok(['copy', '--repo', A, '--to', D, '--json'], { PGKEEP_TO_PASSPHRASE: PD })).stdout)
    expect(again.backups.map((x: { result: string }) => x.result)).toEqual(['present', 'present'])
    expect(again.stored.blobs).toBe(0)
    expect(again.read.bytes).toBe(0)
  }, 300_000)

  it('the copy restores on its own, and backs up incrementally on what was copied', async () => {
    // The source is out of reach while the copy restores.
    const away = `${A}.away`
    renameSync(A, away)
    const dir = join(pg.baseDir, 'from-copy')
    const res = await ok([
      'restore',
      '--repo',
      C,
      '--backup',
      b2,
      '--pgdata',
      dir,
      '--tablespace-mapping',
      `${pg.tablespaceDirs[0]}=${dir}-ts`,
      '--target-immediate',
      '--target-action',
      'promote',
    ])
    expect(res.stderr).not.toMatch(/error/i)
    let restored: Cluster | undefined
    try {
      restored = await startRestored(MAJOR, dir, pg.baseDir, [`${dir}-ts`], { repoDir: C })
      await waitForPromotion(restored)
      expect(await tableChecksums(restored)).toEqual(want)
      const [{ location }] = await restored.sql<{ location: string }>(`select pg_tablespace_location(oid) as location from pg_tablespace where spcname = 'ts1'`)
      expect(location).toBe(`${dir}-ts`)
    } finally {
      if (restored) await stopRestored(restored)
      renameSync(away, A)
    }

    // A backup into the encrypted copy is incremental on the copied backup and stores what the same backup stores
    // in the source: file maps copied right (window hashes translated or unknown, page hashes as they were) find
    // the unchanged pages there as well. Pages compared by pgkeep (summarize_wal off), where window hashes
    // matter; both backups are based on backup 2, and nothing changes between them.
    await pg.configure({ summarize_wal: false })
    await pg.reload()
    await touchPages(pg, 1)
    const inCopy = JSON.parse((await ok(['backup', '-d', pg.url(), '--repo', B, '--json'], { PGKEEP_PASSPHRASE: PB })).stdout)
    const inSource = JSON.parse((await ok(['backup', '-d', pg.url(), '--repo', A, '--json'])).stdout)
    console.log(
      `the same incremental backup stored ${inCopy.storedBytes} bytes in the copy and ${inSource.storedBytes} in the source (${inCopy.incrementalMode}); ` +
        `the full one: ${(await listBackups(await open(C)))[0]!.storedBytes}`,
    )
    expect(inCopy.incrementalMode).toBe('client')
    expect(inCopy).toMatchObject({ type: 'incremental', parent: b2 })
    expect(inSource).toMatchObject({ type: 'incremental', parent: b2 })
    expect(inCopy.storedBytes).toBeLessThanOrEqual(inSource.storedBytes * 1.1 + 65536)
  }, 240_000)

  it('key rotation rewrites no pack; the old passphrase no longer opens; the last key stays', async () => {
    const packs = () => Object.fromEntries(filesUnder(join(D, 'packs')).map((f) => [f.path, createHash('sha256').update(readFileSync(f.path)).digest('hex')]))
    const before = packs()
    expect(Object.keys(before).length).toBeGreaterThan(10)
    const list = async (passphrase: string) =>
      JSON.parse((await ok(['key', 'list', '--repo', D, '--json'], { PGKEEP_PASSPHRASE: passphrase })).stdout).keys as {
        id: string
        current: boolean
        createdAt: string
        scrypt: { N: number }
      }[]
    const [k1] = await list(PD)
    expect(k1).toMatchObject({ current: true, scrypt: FAST_SCRYPT, createdAt: expect.stringMatching(/^\d{4}-/) })

    // passwd: a new key replaces the current one.
    const passwd = JSON.parse((await ok(['key', 'passwd', '--repo', D, '--json'], { PGKEEP_PASSPHRASE: PD, PGKEEP_NEW_PASSPHRASE: 'second' })).stdout)
    expect(passwd.removedKeyId).toBe(k1!.id)
    const refused = await cli(['info', '--repo', D], { PGKEEP_PASSPHRASE: PD })
    expect(refused.code).toBe(23)
    expect(refused.stderr).toMatch(/wrong passphrase/)
    expect((await list('second')).map((k) => [k.id, k.current])).toEqual([[passwd.keyId, true]])

    // add: both passphrases open it; remove the other one's key: only one does.
    const pfile = join(tmp.dir, 'third')
    await import('node:fs/promises').then((fs) => fs.writeFile(pfile, 'third\n', { mode: 0o600 }))
    const added = JSON.parse((await ok(['key', 'add', '--repo', D, '--new-passphrase-file', pfile, '--json'], { PGKEEP_PASSPHRASE: 'second' })).stdout)
    expect((await list('third')).map((k) => [k.id, k.current]).sort()).toEqual(
      [
        [passwd.keyId, false],
        [added.keyId, true],
      ].sort(),
    )
    // The key this passphrase opened is kept without --force.
    const own = await cli(['key', 'remove', '--repo', D, added.keyId.slice(0, 12)], { PGKEEP_PASSPHRASE: 'third' })
    expect(own.code).toBe(2)
    expect(own.stderr).toMatch(/key passwd/)
    await ok(['key', 'remove', '--repo', D, passwd.keyId.slice(0, 12)], { PGKEEP_PASSPHRASE: 'third' })
    expect((await cli(['info', '--repo', D], { PGKEEP_PASSPHRASE: 'second' })).code).toBe(23)
    // The last key is never removed, --force or not.
    const last = await cli(['key', 'remove', '--repo', D, added.keyId, '--force'], { PGKEEP_PASSPHRASE: 'third' })
    expect(last.code).toBe(2)
    expect(last.stderr).toMatch(/last readable key/)
    // A passphrase on the command line is refused.
    expect((await cli(['key', 'add', '--repo', D, '--new-passphrase=x'], { PGKEEP_PASSPHRASE: 'third' })).code).toBe(2)

    expect(packs()).toEqual(before)
    await ok(['verify', '--repo', D, '--read-data'], { PGKEEP_PASSPHRASE: 'third' })
  }, 120_000)
})
