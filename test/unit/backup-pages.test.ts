// Page tracking without a server: file maps as docs/backup-format.md §4 lays them out, file lists (§3), and the
// relation-file ingest: after random page changes a child backup's extents rebuild the new file exactly while
// storing only the changed pages.

import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { IncrementalFileIngest } from '../../src/backup/incremental-ingest.js'
import { PlainFileIngest } from '../../src/backup/plain-ingest.js'
import { RelationFileIngest } from '../../src/backup/relation-ingest.js'
import { FormatError } from '../../src/errors.js'
import { crc32c } from '../../src/pg/crc32c.js'
import { encodeIncrementalFile } from '../../src/pg/incremental-file.js'
import { pageHashesOf } from '../../src/repo/codec-work.js'
import { pageCrcsOf } from '../../src/repo/page-hash.js'
import { encodeChunk, FileListReader, type FileEntry, extentsKey, inlineExtents } from '../../src/repo/file-list.js'
import { FileListWriter } from '../../src/repo/file-list-writer.js'
import { decodeFileMap, encodeFileMap, type Extent, type FileMap, UNKNOWN_WINDOW } from '../../src/repo/file-map.js'
import { initRepository, type Repository } from '../../src/repo/index.js'
import type { WindowStore } from '../../src/repo/window-store.js'
import { openFsStorage } from '../../src/storage/fs.js'

const PAGE = 8192

/** A page that looks like a heap page: a header with pd_upper set, and random tuple bytes. */
function page(seed: number): Buffer {
  const p = randomBytes(PAGE)
  p.writeUInt16LE(24, 12)
  p.writeUInt16LE(4000 + (seed % 100), 14)
  return p
}

async function rebuild(repo: Repository, extents: Extent[]): Promise<Buffer> {
  const parts: Buffer[] = []
  const blobs = new Map<string, Buffer>()
  for (const e of extents) {
    if (e.blob === null) parts.push(Buffer.alloc(e.length))
    else {
      if (!blobs.has(e.blob)) blobs.set(e.blob, await repo.readBlob(e.blob))
      parts.push(blobs.get(e.blob)!.subarray(e.blobOffset, e.blobOffset + e.length))
    }
  }
  return Buffer.concat(parts)
}

async function ingestRelation(store: WindowStore, bytes: Buffer, parent?: FileMap) {
  const ing = new RelationFileIngest(store, bytes.length, parent)
  // Uneven pieces, as tar delivers them.
  for (let off = 0; off < bytes.length; ) {
    const n = Math.min(bytes.length - off, 1 + Math.floor(Math.random() * 300_000))
    await ing.push(bytes.subarray(off, off + n))
    off += n
  }
  const r = await ing.finish()
  return { ...r, stats: ing.stats }
}

describe('relation file ingest', () => {
  let dir: string
  let repo: Repository
  let store: WindowStore
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-unit-'))
    repo = await initRepository(await openFsStorage(dir))
    store = await repo.openWindowStore({ workers: 0 })
  })
  afterAll(async () => {
    await store.close()
    await repo.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('rebuilds a full file exactly, with holes for all-zero windows and page hashes as specified', async () => {
    const pages = 300
    const bytes = Buffer.concat(Array.from({ length: pages }, (_, i) => (i >= 128 && i < 256 ? Buffer.alloc(PAGE) : page(i))))
    const { fileMap } = await ingestRelation(store, bytes)
    expect((await rebuild(repo, fileMap.extents)).equals(bytes)).toBe(true)
    expect(fileMap.pageHashAlgorithm).toBe('xxh64')
    expect(fileMap.windowHashes).toBeUndefined()
    expect(fileMap.extents.some((e) => e.blob === null && e.offset === 128 * PAGE && e.length === 128 * PAGE)).toBe(true) // pages 128..255 are zeros
    for (const i of [0, 5, 299]) {
      expect(fileMap.pageHashes.subarray(i * 8, i * 8 + 8)).toEqual(pageHashesOf(bytes.subarray(i * PAGE, (i + 1) * PAGE), 'xxh64'))
    }
    expect(fileMap.pageHashes.subarray(130 * 8, 131 * 8)).toEqual(Buffer.alloc(8))
    // A window without a parent is one blob.
    expect(fileMap.extents[0]).toEqual({ offset: 0, length: 128 * PAGE, blob: repo.blobIdOf(bytes.subarray(0, 128 * PAGE)), blobOffset: 0 })
    // Every page's CRC-32C, the all-zero ones' too, and the file's joined from them.
    expect(fileMap.pageCrcs).toEqual(pageCrcsOf(bytes))
    expect(fileMap.pageCrcs!.readUInt32LE(130 * 4)).toBe(0x90444623) // as docs/backup-format.md §4 says
  })

  it("an incremental takes an unchanged page's CRC-32C from the parent's map and computes a changed page's", async () => {
    const pages = 300
    const base = Buffer.concat(Array.from({ length: pages }, (_, i) => (i >= 128 && i < 256 ? Buffer.alloc(PAGE) : page(i))))
    const full = await ingestRelation(store, base)
    expect(full.crc32c).toBe(crc32c(base))
    const next = Buffer.from(base)
    page(9007).copy(next, 7 * PAGE)
    // The parent's map says other CRCs than their bytes have for page 5 (unchanged, in a changed window), 7
    // (changed), 130 (in a window of zeros) and 260 (in an unchanged window).
    const parent = decodeFileMap(encodeFileMap(full.fileMap))
    const flip = (crcs: Buffer, p: number) => crcs.writeUInt32LE((crcs.readUInt32LE(p * 4) ^ 1) >>> 0, p * 4)
    for (const p of [5, 7, 130, 260]) flip(parent.pageCrcs!, p)
    const r = await ingestRelation(store, next, parent)
    expect((await rebuild(repo, r.fileMap.extents)).equals(next)).toBe(true)
    // The parent's CRCs of the unchanged pages are taken as they are.
    const want = pageCrcsOf(next)
    for (const p of [5, 260]) flip(want, p)
    expect(r.fileMap.pageCrcs).toEqual(want)
    // So the file's CRC is not that of the bytes received: the server's manifest would say so (backup-files.ts).
    expect(r.crc32c).not.toBe(crc32c(next))
    // With the parent's map as written, the file's CRC is that of its bytes, and the map's CRCs are the pages'.
    const honest = await ingestRelation(store, next, decodeFileMap(encodeFileMap(full.fileMap)))
    expect(honest.crc32c).toBe(crc32c(next))
    expect(honest.fileMap.pageCrcs).toEqual(pageCrcsOf(next))
    // A parent without page CRCs (a version 2 map): every page's CRC is computed.
    const { pageCrcs: _, ...v2 } = full.fileMap
    const fromV2 = await ingestRelation(store, next, decodeFileMap(encodeFileMap(v2)))
    expect(fromV2.crc32c).toBe(crc32c(next))
    expect(fromV2.fileMap.pageCrcs).toEqual(pageCrcsOf(next))
  })

  it('after random page changes, growth and truncation, stores only changed pages and rebuilds exactly', async () => {
    for (let round = 0; round < 5; round++) {
      const pages = 200 + Math.floor(Math.random() * 300)
      const base = Buffer.concat(Array.from({ length: pages }, (_, i) => page(i)))
      const parent = (await ingestRelation(store, base)).fileMap
      const changed = new Set<number>()
      const next = Buffer.from(base)
      for (let k = 0; k < 1 + Math.floor(Math.random() * 10); k++) {
        const p = Math.floor(Math.random() * pages)
        page(p + 1000).copy(next, p * PAGE)
        changed.add(p)
      }
      const grow = round % 2 === 0 ? 7 : 0
      const child = round === 3 ? next.subarray(0, (pages - 9) * PAGE) : Buffer.concat([next, ...Array.from({ length: grow }, (_, i) => page(5000 + i))])
      const r = await ingestRelation(store, child, parent)
      expect((await rebuild(repo, r.fileMap.extents)).equals(child)).toBe(true)
      expect(r.crc32c).toBe(crc32c(child))
      expect(r.fileMap.pageCrcs).toEqual(pageCrcsOf(child))
      const newPages = [...changed].filter((p) => p * PAGE < child.length).length + (round === 3 ? 0 : grow)
      expect(r.stats.storedBytes).toBeLessThanOrEqual(newPages * PAGE)
      expect(r.stats.reusedBytes).toBeGreaterThanOrEqual(child.length - (newPages + 128) * PAGE)
    }
  })

  it("merges a PG 17 INCREMENTAL file into the parent: changed blocks new, the rest the parent's, past truncation zeros", async () => {
    const pages = 260
    const base = Buffer.concat(Array.from({ length: pages }, (_, i) => page(i)))
    const parent = (await ingestRelation(store, base)).fileMap
    // The server sends blocks 3, 130 and 261 (a new one past the end); the file is now 262 blocks long.
    const blocks = new Map([
      [3, page(7003)],
      [130, page(7130)],
      [261, page(7261)],
    ])
    const inc = encodeIncrementalFile(
      [...blocks].map(([n, data]) => ({ blockNumber: n, page: data })),
      262,
    )
    const ing = new IncrementalFileIngest(store, 'base/5/16390', parent)
    for (let off = 0; off < inc.length; off += 5000) await ing.push(Buffer.from(inc.subarray(off, off + 5000)))
    const r = await ing.finish()
    const want = Buffer.concat([base, Buffer.alloc(2 * PAGE)])
    for (const [n, data] of blocks) data.copy(want, n * PAGE)
    expect((await rebuild(repo, r.fileMap.extents)).equals(want)).toBe(true)
    expect(r.fileMap.pageHashes).toEqual(pageHashesOf(want, 'xxh64'))
    expect(r.fileMap.pageCrcs).toEqual(pageCrcsOf(want))
    expect(r.incrementalSizeBytes).toBe(inc.length)
    // Over a parent whose map has no page CRCs, the blocks not sent have none: the map is version 2.
    const { pageCrcs: _, ...v2 } = parent
    const over2 = new IncrementalFileIngest(store, 'base/5/16390', decodeFileMap(encodeFileMap(v2)))
    await over2.push(Buffer.from(inc))
    const r2 = await over2.finish()
    expect(r2.fileMap.pageCrcs).toBeUndefined()
    expect(encodeFileMap(r2.fileMap)[4]).toBe(2)
    expect((await rebuild(repo, r2.fileMap.extents)).equals(want)).toBe(true)
    // A later client-side backup of the same bytes reuses everything.
    const again = await ingestRelation(store, want, r.fileMap)
    expect(again.stats.storedBytes).toBe(0)
    expect((await rebuild(repo, again.fileMap.extents)).equals(want)).toBe(true)
  })

  // A parent written by pgkeep before file map version 2: SHA-256 page hashes and window ids (docs/backup-format.md §4).
  async function versionOneMapOf(bytes: Buffer): Promise<FileMap> {
    const m = (await ingestRelation(store, bytes)).fileMap
    const windowHashes: (string | null)[] = []
    for (let off = 0; off < bytes.length; off += 128 * PAGE) {
      const w = bytes.subarray(off, off + 128 * PAGE)
      windowHashes.push(w.every((b) => b === 0) ? null : repo.blobIdOf(w))
    }
    const v1: FileMap = {
      sizeBytes: m.sizeBytes,
      pageHashAlgorithm: 'sha256-64',
      windowHashes,
      pageHashes: pageHashesOf(bytes, 'sha256-64'),
      extents: m.extents,
    }
    return decodeFileMap(encodeFileMap(v1)) // as read back from the repository
  }

  it('a parent with a version 1 map: compared by window id and SHA-256 page hashes; the new map is version 3', async () => {
    const pages = 400
    const base = Buffer.concat(Array.from({ length: pages }, (_, i) => (i >= 256 && i < 384 ? Buffer.alloc(PAGE) : page(i))))
    const parent = await versionOneMapOf(base)
    const next = Buffer.from(base)
    for (const p of [3, 200, 201]) page(p + 9000).copy(next, p * PAGE) // windows 0 and 1 change, window 3 does not
    const r = await ingestRelation(store, next, parent)
    expect((await rebuild(repo, r.fileMap.extents)).equals(next)).toBe(true)
    expect(r.stats.storedBytes).toBe(3 * PAGE)
    expect(r.stats.reusedBytes).toBe((pages - 128 - 3) * PAGE)
    expect(r.fileMap.pageHashAlgorithm).toBe('xxh64')
    expect(r.fileMap.pageHashes).toEqual(pageHashesOf(next, 'xxh64'))
    expect(r.fileMap.pageCrcs).toEqual(pageCrcsOf(next))
    expect(r.crc32c).toBe(crc32c(next))
    // The next backup compares with the version 3 map: nothing changed, nothing stored.
    const again = await ingestRelation(store, next, decodeFileMap(encodeFileMap(r.fileMap)))
    expect(again.stats.storedBytes).toBe(0)
    expect((await rebuild(repo, again.fileMap.extents)).equals(next)).toBe(true)
  })

  it('a PG 17 INCREMENTAL file over a version 1 map keeps version 1 (the blocks not sent keep their hashes)', async () => {
    const pages = 260
    const base = Buffer.concat(Array.from({ length: pages }, (_, i) => page(i)))
    const parent = await versionOneMapOf(base)
    const changed = page(8130)
    const inc = encodeIncrementalFile([{ blockNumber: 130, page: changed }], 260)
    const ing = new IncrementalFileIngest(store, 'base/5/16391', parent)
    await ing.push(Buffer.from(inc))
    const r = await ing.finish()
    const want = Buffer.from(base)
    changed.copy(want, 130 * PAGE)
    expect((await rebuild(repo, r.fileMap.extents)).equals(want)).toBe(true)
    expect(r.fileMap.pageHashAlgorithm).toBe('sha256-64')
    expect(r.fileMap.pageHashes).toEqual(pageHashesOf(want, 'sha256-64'))
    expect(r.fileMap.windowHashes).toEqual([parent.windowHashes![0], UNKNOWN_WINDOW, parent.windowHashes![2]])
    expect(r.fileMap.pageCrcs).toBeUndefined()
    // A client-side backup after it compares in version 1 terms and writes version 3.
    const again = await ingestRelation(store, want, decodeFileMap(encodeFileMap(r.fileMap)))
    expect(again.stats.storedBytes).toBe(0)
    expect(again.fileMap.pageHashAlgorithm).toBe('xxh64')
    expect(again.fileMap.pageCrcs).toEqual(pageCrcsOf(want))
  })

  it('plain files: 1 MiB blobs, all-zero pieces as holes, CRC over all bytes', async () => {
    const bytes = Buffer.concat([randomBytes(1_500_000), Buffer.alloc(1 << 20), randomBytes(10)])
    const ing = new PlainFileIngest(store)
    await ing.push(bytes)
    const r = await ing.finish()
    expect(r.sizeBytes).toBe(bytes.length)
    expect((await rebuild(repo, r.extents)).equals(bytes)).toBe(true)
  })
})

describe('file map encoding (docs/backup-format.md §4)', () => {
  const id = (c: string) => c.repeat(64)
  const m: FileMap = {
    sizeBytes: 130 * PAGE,
    pageHashAlgorithm: 'sha256-64',
    windowHashes: [id('a'), null],
    pageHashes: Buffer.concat(Array.from({ length: 130 }, (_, i) => Buffer.alloc(8, i))),
    extents: [
      { offset: 0, length: 100 * PAGE, blob: id('1'), blobOffset: 0 },
      { offset: 100 * PAGE, length: 28 * PAGE, blob: null, blobOffset: 0 },
      { offset: 128 * PAGE, length: 2 * PAGE, blob: id('2'), blobOffset: PAGE },
    ],
  }

  it('version 2 (XXH64 page hashes): lays the bytes out as the document says, and decodes them back', () => {
    const m2: FileMap = { sizeBytes: m.sizeBytes, pageHashAlgorithm: 'xxh64', pageHashes: m.pageHashes, extents: m.extents }
    const b = encodeFileMap(m2)
    expect(b.toString('latin1', 0, 4)).toBe('PKFM')
    expect([b[4], b[5]]).toEqual([2, 1]) // version 2, algorithm 1: XXH64
    expect(b.readUInt16LE(6)).toBe(128)
    expect(Number(b.readBigUInt64LE(8))).toBe(130 * PAGE)
    expect(b.readUInt32LE(16)).toBe(2) // distinct blobs
    expect(b.readUInt32LE(20)).toBe(3) // extents
    expect(b.toString('hex', 24, 56)).toBe(id('1'))
    const hashes = 24 + 64 // no window hashes
    expect(b.subarray(hashes + 8 * 129, hashes + 8 * 130)).toEqual(Buffer.alloc(8, 129))
    const ext = hashes + 8 * 130
    expect(b.readUInt32LE(ext + 20 + 12)).toBe(0xffffffff) // the hole
    expect(b.length).toBe(ext + 60)
    expect(decodeFileMap(b)).toEqual(m2)
    const unknown = Buffer.from(b)
    unknown[5] = 9
    expect(() => decodeFileMap(unknown)).toThrow(/unknown page hash algorithm 9/)
    expect(() => encodeFileMap({ ...m2, windowHashes: [null, null] })).toThrow(FormatError)
  })

  it('version 3 (XXH64 page hashes and page CRCs): version 2 with the CRCs after the hashes', () => {
    const pageCrcs = Buffer.concat(Array.from({ length: 130 }, (_, i) => Buffer.alloc(4, 200 - i)))
    const m3: FileMap = { sizeBytes: m.sizeBytes, pageHashAlgorithm: 'xxh64', pageHashes: m.pageHashes, pageCrcs, extents: m.extents }
    const b = encodeFileMap(m3)
    expect([b[4], b[5]]).toEqual([3, 1]) // version 3, algorithm 1: XXH64
    const hashes = 24 + 64
    expect(b.subarray(hashes + 8 * 129, hashes + 8 * 130)).toEqual(Buffer.alloc(8, 129))
    const crcs = hashes + 8 * 130
    expect(b.subarray(crcs, crcs + 4)).toEqual(Buffer.alloc(4, 200))
    expect(b.subarray(crcs + 4 * 129, crcs + 4 * 130)).toEqual(Buffer.alloc(4, 71))
    const ext = crcs + 4 * 130
    expect(b.readUInt32LE(ext + 20 + 12)).toBe(0xffffffff) // the hole
    expect(b.length).toBe(ext + 60)
    expect(decodeFileMap(b)).toEqual(m3)
    // Page CRCs only with XXH64 hashes, one per page.
    expect(() => encodeFileMap({ ...m, pageCrcs })).toThrow(/page CRCs in a map of sha256-64/)
    expect(() => encodeFileMap({ ...m3, pageCrcs: pageCrcs.subarray(4) })).toThrow(/516 page CRC bytes/)
    expect(() => decodeFileMap(b.subarray(0, b.length - 4))).toThrow(FormatError)
  })

  it('version 1 (SHA-256 page hashes and window hashes): lays the bytes out as the document says, and decodes them back', () => {
    const b = encodeFileMap(m)
    expect(b.toString('latin1', 0, 4)).toBe('PKFM')
    expect(b[4]).toBe(1)
    expect(b.readUInt16LE(6)).toBe(128)
    expect(Number(b.readBigUInt64LE(8))).toBe(130 * PAGE)
    expect(b.readUInt32LE(16)).toBe(2) // distinct blobs
    expect(b.readUInt32LE(20)).toBe(3) // extents
    expect(b.toString('hex', 24, 56)).toBe(id('1'))
    const windows = 24 + 64
    expect(b.toString('hex', windows, windows + 32)).toBe(id('a'))
    expect(b.subarray(windows + 32, windows + 64)).toEqual(Buffer.alloc(32))
    const hashes = windows + 64
    expect(b.subarray(hashes + 8 * 129, hashes + 8 * 130)).toEqual(Buffer.alloc(8, 129))
    const ext = hashes + 8 * 130
    expect(b.readUInt32LE(ext + 20 + 12)).toBe(0xffffffff) // the hole
    expect(b.readUInt32LE(ext + 40 + 16)).toBe(PAGE)
    expect(b.length).toBe(ext + 60)
    expect(decodeFileMap(b)).toEqual(m)
  })

  it('rejects truncated, extended and inconsistent maps with FormatError', () => {
    const b = encodeFileMap(m)
    expect(() => decodeFileMap(b.subarray(0, b.length - 1))).toThrow(FormatError)
    expect(() => decodeFileMap(Buffer.concat([b, Buffer.alloc(1)]))).toThrow(FormatError)
    const gap = Buffer.from(b)
    gap.writeUInt32LE(99 * PAGE, 24 + 64 + 64 + 8 * 130 + 8) // first extent one page short: a gap
    expect(() => decodeFileMap(gap)).toThrow(/does not continue/)
    expect(() => encodeFileMap({ ...m, pageHashes: Buffer.alloc(8) })).toThrow(FormatError)
  })
})

/** Meta blobs kept in memory, named by their SHA-256. */
function memorySink() {
  const blobs = new Map<string, Buffer>()
  return {
    blobs,
    putBlob: async (_t: 'meta', bytes: Uint8Array) => {
      const id = createHash('sha256').update(bytes).digest('hex')
      blobs.set(id, Buffer.from(bytes))
      return { id, stored: true }
    },
    readBlob: async (id: string) => blobs.get(id)!,
  }
}

describe('file lists (docs/backup-format.md §3)', () => {
  it('sorts, chunks, and finds every entry by path', async () => {
    const sink = memorySink()
    const w = new FileListWriter()
    const entries: FileEntry[] = []
    for (let i = 0; i < 10_000; i++) {
      const e: FileEntry = { path: `base/5/${(i * 7919) % 10_000}`, type: 'file', mode: 0o600, mtime: 1_700_000_000 + i, sizeBytes: i }
      // Every file tiles its size with extents (holes here); the reader refuses anything else.
      if (i > 0) e.extents = [{ offset: 0, length: i, blob: null, blobOffset: 0 }]
      entries.push(e)
      w.add(e)
    }
    w.add({ path: 'pg_tblspc/16390', type: 'symlink', mode: 0o777, mtime: 1, sizeBytes: 0, linkTarget: '/srv/ts1' })
    const summary = await w.finish(sink)
    expect(summary.count).toBe(10_001)
    expect(summary.chunks.length).toBe(3)
    expect(summary.sizeBytes).toBe(entries.reduce((s, e) => s + e.sizeBytes, 0))
    const r = new FileListReader(sink, summary, 2)
    const all: string[] = []
    for await (const e of r.entries()) all.push(e.path)
    expect(all).toEqual([...all].sort())
    for (const e of entries.filter((_, i) => i % 97 === 0)) expect(await r.get(e.path)).toEqual(e)
    expect((await r.get('pg_tblspc/16390'))?.linkTarget).toBe('/srv/ts1')
    expect(await r.get('base/5/nope')).toBeUndefined()
  })

  it("a relation file's entry lists its map's extents beside the map when they are few, and reads back with both", async () => {
    const x = (n: number): Extent[] => Array.from({ length: n }, (_, k) => ({ offset: k * PAGE, length: PAGE, blob: 'ab'.repeat(32), blobOffset: k * PAGE }))
    expect(inlineExtents({ sizeBytes: 4 * PAGE, extents: x(4) })).toEqual(x(4))
    expect(inlineExtents({ sizeBytes: 5 * PAGE, extents: x(5) })).toBeUndefined()
    expect(inlineExtents({ sizeBytes: 1 << 20, extents: [{ offset: 0, length: 1 << 20, blob: null, blobOffset: 0 }] })).toBeDefined()
    expect(inlineExtents({ sizeBytes: (1 << 20) + PAGE, extents: [{ offset: 0, length: (1 << 20) + PAGE, blob: null, blobOffset: 0 }] })).toBeUndefined()
    const sink = memorySink()
    const w = new FileListWriter()
    const e: FileEntry = { path: 'base/5/16384', type: 'file', mode: 0o600, mtime: 1, sizeBytes: 2 * PAGE, fileMap: 'cd'.repeat(32), extents: x(2) }
    w.add(e)
    const r = new FileListReader(sink, await w.finish(sink))
    expect(await r.get(e.path)).toEqual(e)
    expect(extentsKey(x(2))).toBe(extentsKey(x(2)))
    expect(extentsKey(x(2))).not.toBe(extentsKey([x(2)[0]!, { ...x(2)[1]!, blobOffset: 0 }]))
    expect(extentsKey([{ offset: 0, length: PAGE, blob: null, blobOffset: 0 }])).not.toBe(extentsKey(x(1)))
  })

  it('writes the chunks of entries sorted from many runs exactly as of one sorted list', async () => {
    // 20,000 entries in a scattered order: the writer sorts them in runs (8,192 entries each) and merges those. Every
    // fifth name has characters of 2, 4 and (most) 3 bytes of UTF-8 each (a run outgrows the writer's first buffer).
    const sink = memorySink()
    const w = new FileListWriter()
    const entries: FileEntry[] = []
    for (let i = 0; i < 20_000; i++) {
      const n = (i * 7919) % 20_000
      // Quotes and backslashes: escaped in the JSON lines, so a path's JSON is longer than the path.
      const name = n % 5 === 0 ? `ü😀${'€'.repeat(100 + (n % 50))}${n}` : n % 11 === 0 ? `"q\\${n}` : `${n}`
      const e: FileEntry = { path: `base/${n % 7}/${name}`, type: 'file', mode: 0o600, mtime: 1_700_000_000, sizeBytes: 0, crc32c: '00000000' }
      entries.push(e)
      w.add(e)
    }
    const summary = await w.finish(sink)
    const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : 1))
    expect(summary.chunks.map((c) => c.count)).toEqual([4096, 4096, 4096, 4096, 3616])
    summary.chunks.forEach((c, k) => {
      const part = sorted.slice(k * 4096, (k + 1) * 4096)
      expect(sink.blobs.get(c.blob)?.equals(encodeChunk(part))).toBe(true)
      expect([c.first, c.last]).toEqual([part[0]!.path, part[part.length - 1]!.path])
    })
  })

  it('refuses a path listed twice', async () => {
    const w = new FileListWriter()
    w.add({ path: 'a', type: 'file', mode: 0, mtime: 0, sizeBytes: 0 })
    w.add({ path: 'a', type: 'file', mode: 0, mtime: 0, sizeBytes: 0 })
    await expect(w.finish({ putBlob: async () => ({ id: 'x', stored: true }) })).rejects.toThrow(/appears twice/)
  })

  it('refuses a path listed twice when the two lie in different runs', async () => {
    const w = new FileListWriter()
    for (let i = 0; i < 9000; i++) w.add({ path: `f${i}`, type: 'file', mode: 0, mtime: 0, sizeBytes: 0 })
    w.add({ path: 'f17', type: 'file', mode: 0, mtime: 0, sizeBytes: 0 })
    await expect(w.finish({ putBlob: async () => ({ id: 'x', stored: true }) })).rejects.toThrow(/'f17' appears twice/)
  })
})
