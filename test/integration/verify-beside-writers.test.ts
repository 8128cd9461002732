// verify beside live writers (a backup finishing, `wal stream` storing segments), on a real file-system repository
// through the library: verify lists records, index objects and packs one after the other, and writers store packs,
// index objects and records all the while. Here another session stores a whole backup (packs, index object, WAL
// record, backup record) after verify opened the repository and again at the start of each of verify's listings;
// verify must report no problem, and a verify started afterwards finds everything sound and counts it all.

import { join } from 'node:path'
import { afterAll, expect, it } from 'vitest'
import { type BlobId, initRepository, openRepository, type Repository, verifyRepository } from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { verifyBackups } from '../../src/verify/verify-backups.js'
import { blobContent, tempDir, withListHook } from '../harness/repo-fixtures.js'
import { writeSyntheticBackup } from '../harness/synthetic-backup.js'

const base = tempDir('verify-beside-writers')
afterAll(() => base.remove())

const BLOB_BYTES = 4096

/** Backup number `n`: 40 blobs of its own, stored with their WAL and record by `writer`. */
async function storeBackup(writer: Repository, n: number): Promise<void> {
  const blobs: BlobId[] = []
  for (let i = 0; i < 40; i++) blobs.push((await writer.putBlob('data', blobContent(n, i).subarray(0, BLOB_BYTES))).id)
  await writeSyntheticBackup(writer, {
    id: `20260101T00000${n}Z-00000${n}`,
    systemId: `700000000000000000${n}`,
    blobs,
    blobBytes: BLOB_BYTES,
    blobsPerFile: 10,
    withWal: true,
  })
}

it('verify reports nothing about packs, index objects and records written while it runs', async () => {
  const root = join(base.dir, 'repo')
  const first = await initRepository(await openFsStorage(root), { packTargetBytes: 65536 })
  await storeBackup(first, 1)
  await first.close()

  const writer = await openRepository(await openFsStorage(root))
  let n = 1
  const listed: string[] = []
  // The verifying instance's storage: before each listing verify starts, the writer stores a whole new backup.
  const storage = withListHook(await openFsStorage(root), async (prefix) => {
    if (!['records/', 'index/', 'packs/'].includes(prefix)) return
    listed.push(prefix)
    await storeBackup(writer, ++n)
  })
  const checker = await openRepository(storage)
  try {
    // And one between the open (which loaded the index) and the start of verify.
    await storeBackup(writer, ++n)
    const structure = await verifyRepository(checker, { readData: true })
    expect(structure.problems).toEqual([])
    const backups = await verifyBackups(checker)
    expect(backups.problems).toEqual([])
    // Each of the three listings of verifyRepository and the pack listing of verifyBackups met a writer.
    expect(listed.filter((p) => p === 'records/').length).toBeGreaterThanOrEqual(1)
    expect(listed.filter((p) => p === 'index/').length).toBeGreaterThanOrEqual(1)
    expect(listed.filter((p) => p === 'packs/').length).toBeGreaterThanOrEqual(2)
    expect(backups.backups).toBeGreaterThanOrEqual(2)
  } finally {
    await checker.close()
    await writer.close()
  }

  // Afterwards, a fresh verify sees every backup, whole, and every blob re-hashed.
  const again = await openRepository(await openFsStorage(root))
  try {
    const structure = await verifyRepository(again, { readData: true })
    expect(structure.problems).toEqual([])
    expect(structure.stats.unindexedPacks).toBe(0)
    const backups = await verifyBackups(again)
    expect(backups.problems).toEqual([])
    expect(backups.backups).toBe(n)
    expect(backups.files).toBe(n * 4)
  } finally {
    await again.close()
  }
})
