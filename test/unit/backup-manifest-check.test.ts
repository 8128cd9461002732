// The check of what a backup received against the server's backup_manifest (src/backup/manifest-check.ts), on a
// real manifest from pg_basebackup 15: it passes on exactly what the manifest lists, and names every kind of
// difference (a missing file, an extra one, another size, another CRC-32C, another WAL range).

import { describe, expect, it } from 'vitest'
import type { ReceivedFiles } from '../../src/backup/backup-files.js'
import { checkAgainstManifest } from '../../src/backup/manifest-check.js'
import { IntegrityError } from '../../src/errors.js'
import { type ManifestFile, parseServerManifest } from '../../src/pg/backup-manifest.js'
import { fixture } from '../fixtures/pg/fixtures.js'

const bytes = Buffer.from(fixture('backup_manifest-15.gz'))
const manifest = parseServerManifest(bytes)
const range = manifest.walRanges[0]!

/** What a backup that received exactly the manifest's files would hold. */
function receivedAsListed(): ReceivedFiles {
  return new Map(manifest.files.map((f) => [f.path, { sizeBytes: f.size, crc32c: f.checksum! }]))
}

function check(received: ReceivedFiles, start = range.startLsn, end = range.endLsn): string | undefined {
  try {
    checkAgainstManifest(bytes, received, start, end)
    return undefined
  } catch (err) {
    expect(err).toBeInstanceOf(IntegrityError)
    return (err as Error).message
  }
}

describe('checkAgainstManifest', () => {
  it('passes on exactly the files the manifest lists', () => {
    expect(manifest.files.length).toBeGreaterThan(100)
    expect(manifest.files.every((f) => f.checksumAlgorithm === 'CRC32C')).toBe(true)
    expect(check(receivedAsListed())).toBeUndefined()
  })

  it('names a file that did not arrive, one that arrived unlisted, another size and another CRC-32C', () => {
    const r = receivedAsListed()
    const [a, b, c] = manifest.files.filter((f) => f.size > 0)
    r.delete(a!.path)
    r.set('base/1/99999', { sizeBytes: 8192, crc32c: '00000000' })
    r.set(b!.path, { ...r.get(b!.path)!, sizeBytes: b!.size + 8192 })
    const wrongCrc = c!.checksum === '00000000' ? '00000001' : '00000000'
    r.set(c!.path, { ...r.get(c!.path)!, crc32c: wrongCrc })
    const message = check(r)!
    expect(message).toContain(`'${a!.path}' is in the server's manifest but did not arrive`)
    expect(message).toContain("'base/1/99999' arrived but is not in the server's manifest")
    expect(message).toContain(`'${b!.path}' has ${b!.size + 8192} bytes, the server's manifest says ${b!.size}`)
    expect(message).toContain(`'${c!.path}' has CRC-32C ${wrongCrc}, the server's manifest says ${c!.checksum}`)
  })

  it("refuses a WAL range other than the backup's", () => {
    expect(check(receivedAsListed(), range.startLsn, range.endLsn + 8n)).toMatch(/WAL range does not match/)
  })

  it('refuses a manifest whose checksum does not match, whatever arrived', () => {
    const damaged = Buffer.from(bytes)
    const at = damaged.indexOf('"Size": ') + '"Size": '.length
    damaged[at] = damaged[at] === 0x31 ? 0x32 : 0x31
    expect(() => checkAgainstManifest(damaged, receivedAsListed(), range.startLsn, range.endLsn)).toThrow(/checksum mismatch/)
  })
})

describe('parseServerManifest with onFile', () => {
  it('visits the same files, in order, that it otherwise returns', () => {
    const seen: ManifestFile[] = []
    const m = parseServerManifest(bytes, { onFile: (f) => seen.push(f) })
    expect(m.files).toEqual([])
    expect(seen).toEqual(manifest.files)
    expect(m.walRanges).toEqual(manifest.walRanges)
  })
})
