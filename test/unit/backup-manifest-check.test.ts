// The check of what a backup received against the server's backup_manifest (src/backup/manifest-check.ts), on a
// real manifest from pg_basebackup 15: it passes on exactly what the manifest lists, and names every kind of
// difference (a missing file, an extra one, another size, another CRC-32C, another WAL range). Every case runs
// both ways a backup can check: the manifest held whole (checkAgainstManifest), and as it arrives (ManifestIntake:
// in chunks of odd sizes, stored in pieces, checked line by line), which must say exactly the same.

import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  checkAgainstManifest,
  MANIFEST_PIECE_BYTES,
  ManifestIntake,
  type ManifestPieceStore,
  type ReceivedFile,
  ReceivedFiles,
} from '../../src/backup/manifest-check.js'
import { FormatError, IntegrityError, ProtocolError } from '../../src/errors.js'
import type { Lsn } from '../../protocol/index.js'
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

/** Pieces kept in memory by their SHA-256, as the repository keeps blobs; counts what was read back. */
function memoryStore(): ManifestPieceStore & { pieces: Map<string, Buffer>; reads: number } {
  const pieces = new Map<string, Buffer>()
  const store = {
    pieces,
    reads: 0,
    put: async (piece: Uint8Array) => {
      const id = createHash('sha256').update(piece).digest('hex')
      pieces.set(id, Buffer.from(piece))
      return id
    },
    read: async (id: string) => {
      store.reads++
      return pieces.get(id)!
    },
  }
  return store
}

/** `manifest` through a ManifestIntake in chunks of 1 to 5,000 bytes; resolves the pieces' ids. */
async function intake(manifest: Buffer, received: ReceivedFiles, start: Lsn, end: Lsn, store = memoryStore()): Promise<string[]> {
  const m = new ManifestIntake(received, store)
  for (let at = 0, n = 1; at < manifest.length; at += n, n = (n * 7919) % 5000 || 1) {
    // The protocol's chunks are views of a buffer it reuses: overwritten once the intake has them.
    const chunk = Buffer.from(manifest.subarray(at, at + n))
    await m.add(chunk)
    chunk.fill(0x20)
  }
  return m.finish(start, end)
}

/** What both checks say (the same), the manifest held whole and as it arrives; undefined when they pass. */
async function check(received: ReceivedFile[] | ReceivedFiles, start = range.startLsn, end = range.endLsn, manifest = bytes): Promise<string | undefined> {
  const files = Array.isArray(received) ? received : [...received.files()]
  const said: (string | undefined)[] = []
  for (const run of [() => checkAgainstManifest(manifest, receivedOf(files), start, end), () => intake(manifest, receivedOf(files), start, end)]) {
    try {
      await run()
      said.push(undefined)
    } catch (err) {
      expect(err).toBeInstanceOf(IntegrityError)
      said.push((err as Error).message)
    }
  }
  expect(said[1]).toBe(said[0])
  return said[0]
}

describe('checkAgainstManifest', () => {
  it('passes on exactly the files the manifest lists', async () => {
    expect(manifest.files.length).toBeGreaterThan(100)
    expect(manifest.files.every((f) => f.checksumAlgorithm === 'CRC32C')).toBe(true)
    expect(await check(receivedAsListed())).toBeUndefined()
  })

  it('passes on the same files arrived in another order', async () => {
    const files = listed()
    expect(await check([...files.slice(50), ...files.slice(0, 50).reverse()])).toBeUndefined()
  })

  // Each difference early in the order of arrival (so the rest is looked up by path) and late (the files before it
  // compared in order).
  for (const where of ['early', 'late'] as const) {
    it(`names a file that did not arrive, one that arrived unlisted, another size and another CRC-32C (${where})`, async () => {
      const files = listed()
      const sized = files.map((f, i) => ({ f, i })).filter(({ f }) => f.sizeBytes > 0)
      const [a, b, c] = where === 'early' ? sized.slice(0, 3) : sized.slice(-3)
      const wrongCrc = c!.f.crc32c === '00000000' ? '00000001' : '00000000'
      files[b!.i] = { ...b!.f, sizeBytes: b!.f.sizeBytes + 8192 }
      files[c!.i] = { ...c!.f, crc32c: wrongCrc }
      files.splice(a!.i, 1, { path: 'base/1/99999', sizeBytes: 8192, crc32c: '00000000' })
      const message = (await check(files))!
      expect(message).toContain(`'${a!.f.path}' is in the server's manifest but did not arrive`)
      expect(message).toContain("'base/1/99999' arrived but is not in the server's manifest")
      expect(message).toContain(`'${b!.f.path}' has ${b!.f.sizeBytes + 8192} bytes, the server's manifest says ${b!.f.sizeBytes}`)
      expect(message).toContain(`'${c!.f.path}' has CRC-32C ${wrongCrc}, the server's manifest says ${c!.f.crc32c}`)
    })
  }

  // In the order of arrival a second arrival of a listed file is one more than the manifest lists (the file list
  // refuses the path twice as well).
  it('names a listed file that arrived again, and one that arrived after every listed one, as not listed', async () => {
    const files = listed()
    const message = (await check([...files, files[3]!, { path: 'base/1/99999', sizeBytes: 0, crc32c: '00000000' }]))!
    expect(message).toContain(`'${files[3]!.path}' arrived but is not in the server's manifest`)
    expect(message).toContain("'base/1/99999' arrived but is not in the server's manifest")
  })

  it('names a file that arrived twice out of order', async () => {
    const files = listed()
    expect(await check([files[3]!, ...files])).toContain(`'${files[3]!.path}' arrived twice`)
  })

  it("refuses a WAL range other than the backup's", async () => {
    expect(await check(receivedAsListed(), range.startLsn, range.endLsn + 8n)).toMatch(/WAL range does not match/)
  })

  it('refuses a manifest whose checksum does not match, whatever arrived', async () => {
    const damaged = Buffer.from(bytes)
    const at = damaged.indexOf('"Size": ') + '"Size": '.length
    damaged[at] = damaged[at] === 0x31 ? 0x32 : 0x31
    expect(await check(receivedAsListed(), range.startLsn, range.endLsn, damaged)).toMatch(/checksum mismatch/)
  })
})

describe('parseServerManifest with onFile', () => {
  it('visits the same files, in order, that it otherwise returns', async () => {
    const seen: ManifestFile[] = []
    const m = parseServerManifest(bytes, { onFile: (f) => seen.push(f) })
    expect(m.files).toEqual([])
    expect(seen).toEqual(manifest.files)
    expect(m.walRanges).toEqual(manifest.walRanges)
  })
})

describe('ManifestIntake', () => {
  it('stores the manifest in pieces of 4 MiB, the same as slicing it whole, and reads none back', async () => {
    // A manifest of over two pieces: the fixture's files repeated under other names, with its checksum made anew.
    const lines = bytes.toString('utf8').split('\n')
    const first = lines.indexOf('"Files": [') + 1
    const end = lines.findIndex((l) => l.startsWith(']'))
    const fileLines = lines
      .slice(first, end)
      .map((l) => l.replace(/,$/, ''))
      .filter((l) => l.startsWith('{ "Path"'))
    const many: string[] = []
    const received: ReceivedFile[] = []
    for (let copy = 0; many.length < 70_000; copy++) {
      for (const l of fileLines) {
        const f = JSON.parse(l) as { Path: string; Size: number; Checksum: string }
        const path = `copy${copy}/${f.Path}`
        many.push(JSON.stringify({ ...f, Path: path }))
        received.push({ path, sizeBytes: f.Size, crc32c: f.Checksum })
      }
    }
    const body = `${[...lines.slice(0, first), many.join(',\n'), ...lines.slice(end, -2)].join('\n')}\n`
    const big = Buffer.from(`${body}"Manifest-Checksum": "${createHash('sha256').update(body).digest('hex')}"}\n`)
    expect(big.length).toBeGreaterThan(2 * MANIFEST_PIECE_BYTES)
    const store = memoryStore()
    const ids = await intake(big, receivedOf(received), range.startLsn, range.endLsn, store)
    const slices = []
    for (let at = 0; at < big.length; at += MANIFEST_PIECE_BYTES)
      slices.push(
        createHash('sha256')
          .update(big.subarray(at, at + MANIFEST_PIECE_BYTES))
          .digest('hex'),
      )
    expect(ids).toEqual(slices)
    expect(store.reads).toBe(0)
  })

  it('checks a manifest laid out otherwise (not one file a line) whole, read back from its pieces, with the same result', async () => {
    // The same JSON on one line: what PostgreSQL never writes, and still a valid manifest.
    const oneLine = (m: Buffer) => {
      const text = m.toString('utf8')
      const cut = text.lastIndexOf('\n', text.length - 2) + 1
      const body = `${text.slice(0, cut).replace(/\n(?!$)/g, ' ')}`
      return Buffer.from(`${body}"Manifest-Checksum": "${createHash('sha256').update(body).digest('hex')}"}\n`)
    }
    const flat = oneLine(bytes)
    const store = memoryStore()
    await intake(flat, receivedAsListed(), range.startLsn, range.endLsn, store)
    expect(store.reads).toBe(1)
    const files = listed()
    files[2] = { ...files[2]!, sizeBytes: files[2]!.sizeBytes + 1 }
    expect(await check(files, range.startLsn, range.endLsn, flat)).toContain(`'${files[2]!.path}' has ${files[2]!.sizeBytes} bytes`)
  })

  it('refuses more manifest than the files received can need, and a file line that fails its checks, at once', async () => {
    // 200 files received: the bound is 1 MiB and 8.5 KiB a file (2.66 MiB).
    const few = receivedOf(listed().slice(0, 200))
    const m = new ManifestIntake(few, memoryStore())
    for (let i = 0; i < 40; i++) await m.add(Buffer.alloc(64 << 10, 0x20))
    await expect(m.add(Buffer.alloc(256 << 10, 0x20))).rejects.toThrow(ProtocolError)
    // A path listed twice.
    const text = bytes.toString('utf8')
    const firstFile = text.indexOf('\n{') + 1
    const line = text.slice(firstFile, text.indexOf('\n', firstFile) + 1)
    const twice = new ManifestIntake(receivedAsListed(), memoryStore())
    await expect(twice.add(Buffer.from(text.slice(0, firstFile) + line + line))).rejects.toThrow(FormatError)
  })
})
