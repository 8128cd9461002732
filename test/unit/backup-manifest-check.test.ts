// The check of what a backup received against the server's backup_manifest (src/backup/manifest-check.ts), on a
// real manifest from pg_basebackup 15: it passes on exactly what the manifest lists, and names every kind of
// difference (a missing file, an extra one, another size, another CRC-32C, another WAL range).

import { describe, expect, it } from 'vitest'
import { checkAgainstManifest, HeldManifest, type ReceivedFile, ReceivedFiles } from '../../src/backup/manifest-check.js'
import { IntegrityError, ProtocolError } from '../../src/errors.js'
import { type ManifestFile, parseServerManifest } from '../../src/pg/backup-manifest.js'
import { fixture } from '../fixtures/pg/fixtures.js'

const bytes = Buffer.from(fixture('backup_manifest-15.gz'))
const manifest = parseServerManifest(bytes)
const range = manifest.walRanges[0]!

/** The files of a backup that received exactly the manifest's, in the order the server sent them. */
function listed(): ReceivedFile[] {
  return manifest.files.map((f) => ({ path: f.path, sizeBytes: f.size, crc32c: f.checksum! }))
}

function receivedAsListed(): ReceivedFiles {
  return receivedOf(listed())
}

function receivedOf(files: ReceivedFile[]): ReceivedFiles {
  const r = new ReceivedFiles()
  for (const f of files) r.add(f)
  return r
}

function check(received: ReceivedFile[] | ReceivedFiles, start = range.startLsn, end = range.endLsn): string | undefined {
  try {
    checkAgainstManifest(bytes, Array.isArray(received) ? receivedOf(received) : received, start, end)
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

  it('passes on the same files arrived in another order', () => {
    const files = listed()
    expect(check([...files.slice(50), ...files.slice(0, 50).reverse()])).toBeUndefined()
  })

  // Each difference early in the order of arrival (so the rest is looked up by path) and late (the files before it
  // compared in order).
  for (const where of ['early', 'late'] as const) {
    it(`names a file that did not arrive, one that arrived unlisted, another size and another CRC-32C (${where})`, () => {
      const files = listed()
      const sized = files.map((f, i) => ({ f, i })).filter(({ f }) => f.sizeBytes > 0)
      const [a, b, c] = where === 'early' ? sized.slice(0, 3) : sized.slice(-3)
      const wrongCrc = c!.f.crc32c === '00000000' ? '00000001' : '00000000'
      files[b!.i] = { ...b!.f, sizeBytes: b!.f.sizeBytes + 8192 }
      files[c!.i] = { ...c!.f, crc32c: wrongCrc }
      files.splice(a!.i, 1, { path: 'base/1/99999', sizeBytes: 8192, crc32c: '00000000' })
      const message = check(files)!
      expect(message).toContain(`'${a!.f.path}' is in the server's manifest but did not arrive`)
      expect(message).toContain("'base/1/99999' arrived but is not in the server's manifest")
      expect(message).toContain(`'${b!.f.path}' has ${b!.f.sizeBytes + 8192} bytes, the server's manifest says ${b!.f.sizeBytes}`)
      expect(message).toContain(`'${c!.f.path}' has CRC-32C ${wrongCrc}, the server's manifest says ${c!.f.crc32c}`)
    })
  }

  // In the order of arrival a second arrival of a listed file is one more than the manifest lists (the file list
  // refuses the path twice as well).
  it('names a listed file that arrived again, and one that arrived after every listed one, as not listed', () => {
    const files = listed()
    const message = check([...files, files[3]!, { path: 'base/1/99999', sizeBytes: 0, crc32c: '00000000' }])!
    expect(message).toContain(`'${files[3]!.path}' arrived but is not in the server's manifest`)
    expect(message).toContain("'base/1/99999' arrived but is not in the server's manifest")
  })

  it('names a file that arrived twice out of order', () => {
    const files = listed()
    expect(check([files[3]!, ...files])).toContain(`'${files[3]!.path}' arrived twice`)
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

describe('HeldManifest', () => {
  it('holds the pieces as one, grown past its first guess, and refuses more than the files received can need', () => {
    const held = new HeldManifest()
    // 200 files received: a first buffer of 1 MiB and 50 KiB, grown twice by 2.5 MiB of pieces; the bound is
    // 1 MiB and 8.5 KiB a file (2.66 MiB).
    const pieces = Array.from({ length: 40 }, (_, i) => Buffer.alloc(64 << 10, i))
    for (const p of pieces) held.add(p, 200)
    expect(held.bytes.equals(Buffer.concat(pieces))).toBe(true)
    expect(() => held.add(Buffer.alloc(256 << 10), 200)).toThrow(ProtocolError)
    expect(held.bytes.length).toBe(40 << 16)
  })
})
