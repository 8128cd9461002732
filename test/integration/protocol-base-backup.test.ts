// BASE_BACKUP and START_REPLICATION through protocol/, on every major, proved by external oracles:
// pg_verifybackup (where the Debian tool fits), the server's own pg_wal files (byte comparison), and starting the
// extracted backup as a server whose tables equal the source's.

import { execFileSync } from 'node:child_process'
import { copyFile, mkdir, readFile, readlink, rm, symlink, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, startCluster, startOnDataDir } from '../harness/cluster.js'
import { type Major, MAJORS } from '../harness/pg-binaries.js'
import { crc32c, crc32cHexLE } from '../../src/pg/crc32c.js'
import { parseServerManifest } from '../../src/pg/backup-manifest.js'
import { formatLsn } from '../../protocol/index.js'
import { SLAB_BYTES } from '../../protocol/wire/socket-input.js'
import { execFileP, noteSkip, verifyBackupPlan } from '../harness/reference-tools.js'
import { takeTarBackup, type TarBackup, type TarBackupOptions } from '../harness/tar-backup.js'

const TABLE_CHECKSUM = (t: string) => `select count(*)::text n, md5(string_agg(id::text || ':' || v, ',' order by id)) h from ${t}`

async function loadData(c: Cluster): Promise<void> {
  await c.sql(`create table t_main as select g id, md5(g::text) v from generate_series(1, 150000) g`)
  await c.sql(`create table t_ts tablespace ts1 as select g id, repeat(md5(g::text), 3) v from generate_series(1, 50000) g`)
  await c.sql(`create index on t_ts (id) tablespace ts1`)
  await c.sql(`create table t_live (id serial primary key, v text)`)
}

/** Writes rows and switches WAL segments until stopped, so the stream has work to do while the backup runs. */
function startWriter(c: Cluster): { stop: () => Promise<number> } {
  let running = true
  let rows = 0
  const client = new pg.Client({ host: c.socketDir, port: c.port, user: 'postgres', database: 'postgres' })
  client.on('error', () => {}) // the server may be stopped under it when a test fails
  const loop = (async () => {
    await client.connect()
    for (let i = 0; running; i++) {
      await client.query(`insert into t_live (v) select md5(random()::text) from generate_series(1, 2000)`)
      rows += 2000
      if (i % 5 === 4) await client.query('select pg_switch_wal()')
    }
    await client.end()
  })()
  return {
    stop: async () => {
      running = false
      await loop
      return rows
    },
  }
}

/** Extracts the tar backup into `target` with each tablespace relocated, and puts WAL and manifest in place. */
async function extract(b: TarBackup, target: string): Promise<string[]> {
  await mkdir(target, { recursive: true })
  const base = b.archives.find((a) => a.tablespaceOid === null)!
  execFileSync('tar', ['-xf', base.path, '-C', target])
  const tablespaceDirs: string[] = []
  for (const a of b.archives.filter((x) => x.tablespaceOid !== null)) {
    const dir = `${target}_ts${a.tablespaceOid}`
    await mkdir(dir, { recursive: true })
    execFileSync('tar', ['-xf', a.path, '-C', dir])
    const link = join(target, 'pg_tblspc', String(a.tablespaceOid))
    expect(await readlink(link)).toBe(a.location) // base.tar carries the symlink to the original location
    await unlink(link)
    await symlink(dir, link)
    tablespaceDirs.push(dir)
  }
  for (const s of b.walSegments) await copyFile(join(b.walDir, s), join(target, 'pg_wal', s))
  await copyFile(b.manifestPath, join(target, 'backup_manifest'))
  return tablespaceDirs
}

/**
 * Checks every file of the extracted directory against the checksum the server computed for it in its own
 * backup_manifest (the oracle where pg_verifybackup 15 cannot read the manifest), and the manifest's WAL range.
 */
async function verifyAgainstServerManifest(b: TarBackup, dir: string): Promise<number> {
  const manifest = parseServerManifest(await readFile(b.manifestPath), { verifyChecksum: true })
  expect(manifest.walRanges).toEqual([{ timeline: b.timeline, startLsn: b.startLsn, endLsn: b.endLsn }])
  for (const f of manifest.files) {
    const bytes = await readFile(join(dir, f.path))
    expect(bytes.length, f.path).toBe(f.size)
    expect(f.checksumAlgorithm).toBe('CRC32C')
    expect(crc32cHexLE(crc32c(bytes)), f.path).toBe(f.checksum)
  }
  return manifest.files.length
}

/** Every complete streamed segment equals the server's own file, byte for byte. */
async function expectServerWal(b: TarBackup, src: Cluster): Promise<void> {
  for (const name of b.completeSegments) {
    const ours = await readFile(join(b.walDir, name))
    const theirs = await readFile(join(src.dataDir, 'pg_wal', name))
    expect(ours.equals(theirs), `segment ${name} differs from the server's`).toBe(true)
  }
}

async function verifyWithTool(major: Major, dir: string): Promise<void> {
  const plan = verifyBackupPlan(major)
  if (!plan.tool) return noteSkip(`pg_verifybackup on PG ${major}`, plan.note!)
  if (plan.note) noteSkip(`part of pg_verifybackup on PG ${major}`, plan.note)
  const { stdout } = await execFileP(plan.tool, [...plan.args, dir])
  expect(stdout).toMatch(/backup successfully verified/)
}

describe.each(MAJORS)('base backup with streamed WAL from PG %i', (major) => {
  let src: Cluster
  let restored: Cluster | undefined
  beforeAll(async () => {
    src = await startCluster({ major })
    await loadData(src)
  })
  afterAll(async () => {
    await restored?.stop('immediate').catch(() => {})
    await src?.destroy()
  })

  it('writes tars that verify, start as a server with equal tables, and WAL equal to the server pg_wal', async () => {
    // The server must keep its own copy of every segment until they are compared: without a slot, a checkpoint
    // that the writer's WAL volume triggers (slower machines write more of it) may recycle them first.
    await src.sql(`select pg_create_physical_replication_slot('keep_for_comparison', true)`)
    const writer = startWriter(src)
    let b: TarBackup
    try {
      b = await takeTarBackup(src.url(), join(src.baseDir, 'backup'))
    } finally {
      await writer.stop()
    }
    // The server sends the tablespaces first and the data directory last, on every version.
    const [{ oid }] = await src.sql<{ oid: number }>(`select oid from pg_tablespace where spcname = 'ts1'`)
    expect(b.archives.map((a) => a.name)).toEqual([`${oid}.tar`, 'base.tar'])
    expect(b.endLsn).toBeGreaterThan(b.startLsn)
    expect(b.walSegments.length).toBeGreaterThan(0)

    expect(b.completeSegments.length).toBeGreaterThan(0)
    await expectServerWal(b, src)
    await src.sql(`select pg_drop_replication_slot('keep_for_comparison')`)

    const target = join(src.baseDir, 'restored')
    const tablespaceDirs = await extract(b, target)
    const files = await verifyAgainstServerManifest(b, target)
    console.log(
      `PG ${major}: ${files} files match the server's manifest; WAL ${formatLsn(b.startLsn)}..${formatLsn(b.endLsn)} in ${b.walSegments.length} segments, ${b.completeSegments.length} compared with pg_wal`,
    )
    await verifyWithTool(major, target)

    restored = await startOnDataDir(major, target, { baseDir: src.baseDir, tablespaceDirs })
    for (const t of ['t_main', 't_ts']) {
      const [want] = await src.sql(TABLE_CHECKSUM(t))
      const [got] = await restored.sql(TABLE_CHECKSUM(t))
      expect(got, `table ${t}`).toEqual(want)
    }
    const [{ n }] = await restored.sql<{ n: string }>(`select count(*)::text n from t_live`)
    expect(Number(n)).toBeGreaterThanOrEqual(0)
    const log = await restored.log()
    expect(log).toMatch(/consistent recovery state reached|database system is ready to accept connections/)
    await restored.stop()
    await rm(target, { recursive: true, force: true })
    for (const d of tablespaceDirs) await rm(d, { recursive: true, force: true })
  })
})

describe('base backup through a slow consumer (PG 15)', () => {
  let src: Cluster
  beforeAll(async () => {
    src = await startCluster({ major: 15 })
    await loadData(src)
  })
  afterAll(async () => src?.destroy())

  it('keeps the socket paused while the consumer waits, and every byte intact', async () => {
    let consumed = 0
    let paused = false
    let maxBuffered = 0
    const onEvent: TarBackupOptions['onEvent'] = async (e, conn) => {
      if (e.type !== 'data') return
      consumed += e.data.length
      // Keep a reference to a payload across a pause: pg-protocol's buffer reuse would overwrite it.
      const kept = e.data
      const copy = Buffer.from(kept)
      if (!paused && consumed > 4 << 20) {
        paused = true
        const before = conn.bytesReceived
        await new Promise((r) => setTimeout(r, 1500))
        const after = conn.bytesReceived
        maxBuffered = after - consumed
        // Reads stopped: at most what socket buffers held when we stopped pulling.
        expect(after - before).toBeLessThan(2 << 20)
      } else if (Math.random() < 0.05) {
        await new Promise((r) => setTimeout(r, 2))
      }
      expect(kept.equals(copy)).toBe(true)
    }
    const b = await takeTarBackup(src.url(), join(src.baseDir, 'backup'), { onEvent })
    expect(paused).toBe(true)
    expect(maxBuffered).toBeLessThan(2 << 20)
    console.log(`slow consumer: ${consumed} bytes consumed, at most ${maxBuffered} bytes buffered ahead during a 1.5 s pause`)
    const target = join(src.baseDir, 'restored')
    await extract(b, target)
    await verifyWithTool(15, target)
  })

  it('with transientData reads into the same memory again, and every byte is still what the server sent', async () => {
    // A message across two slabs comes as a copy of its own; the others are views of slabs.
    const inSlab = (data: Buffer, slabs: Set<ArrayBufferLike>) => data.buffer.byteLength === SLAB_BYTES && slabs.add(data.buffer)
    const slabs = new Set<ArrayBufferLike>()
    const walSlabs = new Set<ArrayBufferLike>()
    let walBytes = 0
    let events = 0
    let switched = false
    // The server keeps its own copy of every segment until they are compared (as in the test above).
    await src.sql(`select pg_create_physical_replication_slot('keep_transient', true)`)
    const b = await takeTarBackup(src.url(), join(src.baseDir, 'backup-transient'), {
      transientData: true,
      onEvent: async (e) => {
        if (e.type !== 'data') return
        events++
        inSlab(e.data, slabs)
        if (switched) return
        // Three full segments of WAL through the stream while it runs: each switch sends the rest of a segment.
        switched = true
        for (let i = 0; i < 3; i++) await src.sql(`insert into t_live (v) select md5(g::text) from generate_series(1, 1000) g; select pg_switch_wal()`)
      },
      onWalData: (data) => {
        walBytes += data.length
        inSlab(data, walSlabs)
      },
    })
    // Tens of MB through slabs: without reuse, a new slab for every SLAB_BYTES received.
    expect(b.bytes).toBeGreaterThan(80 * SLAB_BYTES)
    expect(slabs.size).toBeLessThan(40)
    expect(walBytes).toBeGreaterThan(3 * 64 * SLAB_BYTES)
    expect(walSlabs.size).toBeLessThan(40)
    console.log(`transientData: ${events} data events, ${b.bytes} bytes, in ${slabs.size} distinct slabs; WAL ${walBytes} bytes in ${walSlabs.size}`)
    expect(b.completeSegments.length).toBeGreaterThanOrEqual(3)
    await expectServerWal(b, src)
    await src.sql(`select pg_drop_replication_slot('keep_transient')`)
    const target = join(src.baseDir, 'restored-transient')
    await extract(b, target)
    expect(await verifyAgainstServerManifest(b, target)).toBeGreaterThan(500)
    await verifyWithTool(15, target)
  })
})
