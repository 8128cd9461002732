// Restore from an encrypted repository on S3 (the harness's s3rver): the data arrives in far fewer GET requests
// than there are blobs (neighbouring blobs of a pack are read together), the copy starts, fetches its WAL from S3
// through `pgkeep wal get` with the passphrase and AWS variables in the server's environment, and equals the source.

import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { takeBackup, type BackupResult } from '../../src/backup/backup.js'
import { findBackup } from '../../src/repo/backup-record.js'
import { FileListReader } from '../../src/repo/file-list.js'
import { fileMapOf } from '../../src/repo/inline-file-map.js'
import { initRepository, type Repository } from '../../src/repo/index.js'
import { runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { loadPgbench } from '../harness/load.js'
import { openSpec, specLocation, type StorageSpec } from '../harness/repo-fixtures.js'
import { type S3TestServer, startS3Server } from '../harness/s3-server.js'
import { addOwnTables, startRestored, stopRestored, tableChecksums, waitForPromotion } from './restore-fixture.js'
import { ensureBuilt } from './wal-helpers.js'

beforeAll(() => ensureBuilt(), 120_000)

const MAJOR = 17
const PASSPHRASE = 'restore from s3'

describe('restore from S3', () => {
  let pg: Cluster
  let s3: S3TestServer
  let spec: StorageSpec
  let repo: Repository
  let b: BackupResult
  let want: Record<string, string>
  beforeAll(async () => {
    pg = await startCluster({ major: MAJOR })
    s3 = await startS3Server()
    spec = {
      kind: 's3',
      endpoint: s3.endpoint,
      bucket: s3.bucket,
      prefix: `${s3.prefix}restore/`,
      accessKeyId: s3.accessKeyId,
      secretAccessKey: s3.secretAccessKey,
    }
    repo = await initRepository(await openSpec(spec), { encrypt: { passphrase: PASSPHRASE } })
    await loadPgbench(pg, 3)
    await addOwnTables(pg)
    b = await takeBackup({ server: { conninfo: pg.url() }, repo })
    want = await tableChecksums(pg)
  })
  afterAll(async () => {
    await repo?.close()
    await pg?.destroy()
    await s3?.stop()
  })

  it('reads blobs in runs, and the copy starts and recovers through wal get on S3', async () => {
    // Data blobs of the backup: counted from its file list, independently of the reader.
    const rec = await findBackup(repo, b.id)
    // Blobs a restore reads: data blobs and the file maps of relation files whose entries do not list their
    // extents (docs/backup-format.md §3), counted from the file list.
    const blobs = new Set<string>()
    for await (const e of new FileListReader(repo, rec.files).entries()) {
      if (typeof e.fileMap === 'string' && !e.extents) blobs.add(e.fileMap)
      const extents = e.extents ?? (e.fileMap ? (await fileMapOf(e, e.fileMap, (id) => repo.readBlob(id))).extents : [])
      for (const x of extents) if (x.blob) blobs.add(x.blob)
    }
    const { url, env } = specLocation(spec)
    const dir = join(pg.baseDir, 'from-s3')
    const before = (await s3.requestLog?.())?.length ?? 0
    const res = await runMain(
      [
        'restore',
        '--repo',
        url,
        '--pgdata',
        dir,
        '--tablespace-mapping',
        `${pg.tablespaceDirs[0]}=${dir}-ts`,
        '--target-immediate',
        '--target-action',
        'promote',
        '--json',
      ],
      { ...env, PGKEEP_PASSPHRASE: PASSPHRASE },
    )
    expect(res.code, res.stderr).toBe(0)
    const out = JSON.parse(res.stdout)
    expect(out.hints.join('\n')).toMatch(/PGKEEP_PASSPHRASE/)
    expect(out.hints.join('\n')).toMatch(/AWS_\* variables/)
    if (s3.requestLog) {
      const packGets = (await s3.requestLog()).slice(before).filter((r) => r.startsWith('GET ') && r.includes('/packs/'))
      console.log(
        `restore from S3: ${blobs.size} blobs (data and file maps) arrived in ${packGets.length} pack GET requests; reader: ${JSON.stringify(out.reads)}`,
      )
      expect(packGets.length).toBeLessThan(blobs.size / 4)
    }

    // The server inherits this process's environment: that is where the passphrase and the AWS variables go.
    const saved = { ...process.env }
    Object.assign(process.env, env, { PGKEEP_PASSPHRASE: PASSPHRASE })
    let c: Cluster | undefined
    try {
      c = await startRestored(MAJOR, dir, pg.baseDir, [`${dir}-ts`])
      await waitForPromotion(c)
      expect(await tableChecksums(c)).toEqual(want)
      expect(await c.log()).toMatch(/restored log file "[0-9A-F]{24}" from archive/)
    } finally {
      if (c) await stopRestored(c)
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k]
      Object.assign(process.env, saved)
    }
  })
})
