// RestoredManifest, the backup_manifest a restore writes as files complete: every line lands in add() order across
// its batched writes, add() hands back the writes only when it started one, and a failed write is never lost
// (thrown by the next add that returns the writes and by finish(), never an unhandled rejection).

import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { parseServerManifest } from '../../src/pg/backup-manifest.js'
import { MANIFEST_NAME, RestoredManifest } from '../../src/restore/restored-manifest.js'
import { tempDir } from '../harness/repo-fixtures.js'

const file = (i: number) => ({
  path: `base/5/${100000 + i}`,
  size: 8192 * (i % 7),
  lastModified: new Date(Date.UTC(2026, 11, 7, 12, 0, i % 60)),
  checksumAlgorithm: 'CRC32C' as const,
  checksum: ((i * 2654435761) >>> 0).toString(16).padStart(8, '0'),
})

describe('RestoredManifest', () => {
  let tmp: ReturnType<typeof tempDir> | undefined
  afterEach(() => {
    tmp?.remove()
    tmp = undefined
  })

  it('writes every file in the order added over many batches; add returns the writes only when it started one', async () => {
    tmp = tempDir('manifest')
    const dir = tmp.dir
    const m = await RestoredManifest.create(dir, { version: 1 })
    const n = 5000
    let returned = 0
    for (let i = 0; i < n; i++) {
      const r = m.add(file(i))
      if (r) {
        returned++
        await r
      }
    }
    expect(m.add({ ...file(0), path: 'pg_wal/000000010000000000000001' })).toBeUndefined()
    await m.finish([{ timeline: 1, startLsn: 0x1000028n, endLsn: 0x1000138n }], false)
    // About 100 bytes a line and a write per 64 KiB: a handful of writes, not one per file.
    expect(returned).toBeGreaterThan(3)
    expect(returned).toBeLessThan(n / 100)
    const parsed = parseServerManifest(await readFile(join(dir, MANIFEST_NAME)), { verifyChecksum: true })
    expect(parsed.files.map((f) => [f.path, f.size, f.checksum])).toEqual(Array.from({ length: n }, (_, i) => [file(i).path, file(i).size, file(i).checksum]))
  })

  it('a failed write is thrown by the next add that returns the writes and by finish, and is never unhandled', async () => {
    tmp = tempDir('manifest')
    const dir = tmp.dir
    const m = await RestoredManifest.create(dir, { version: 1 })
    const unhandled: unknown[] = []
    const onUnhandled = (e: unknown) => unhandled.push(e)
    process.on('unhandledRejection', onUnhandled)
    try {
      // Closing the file underneath makes every later write fail.
      await m.discard()
      let thrown: unknown
      let i = 0
      for (; i < 5000 && thrown === undefined; i++) await m.add(file(i))?.catch((e: unknown) => (thrown = e))
      expect(thrown).toBeInstanceOf(Error)
      // More lines, their writes not waited for (as a caller that does not wait would), then the end: the failure
      // is still there, and nothing was left unhandled meanwhile.
      for (let k = 0; k < 2000; k++) void m.add(file(i + k))
      await new Promise((resolve) => setTimeout(resolve, 50))
      await expect(m.finish([{ timeline: 1, startLsn: 0x1000028n, endLsn: 0x1000138n }], false)).rejects.toThrow()
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })
})
