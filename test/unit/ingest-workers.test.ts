// Ingest on worker threads against ingest on the calling thread: the same content (relation files full,
// deduplicated, changed, grown and shrunk against a parent; plain files; a PG 17 INCREMENTAL file) goes through a
// window store with workers and one without (which, over a parent with page CRCs, hashes pages as they arrive and
// copies only changed ones), into two copies of one repository (plain and encrypted); file maps,
// blob ids, CRCs and stats must be byte-identical, and right by independent facts (SHA-256 / HMAC computed here,
// bytes read back and verified). Also the codec pool itself. The workers run the build's compiled module (dist/,
// which `npm test` builds first).

import { createHash, createHmac } from 'node:crypto'
import { cp, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { IncrementalFileIngest } from '../../src/backup/incremental-ingest.js'
import { PlainFileIngest } from '../../src/backup/plain-ingest.js'
import { RelationFileIngest } from '../../src/backup/relation-ingest.js'
import { AssertionError } from '../../src/errors.js'
import { crc32c } from '../../src/pg/crc32c.js'
import { encodeIncrementalFile } from '../../src/pg/incremental-file.js'
import { BlobCodec } from '../../src/repo/blob.js'
import { pageHashesOf } from '../../src/repo/codec-work.js'
import { encodeFileMap, type Extent, extentsIn, type FileMap } from '../../src/repo/file-map.js'
import { CodecPool, defaultWorkers, workerModuleUrl } from '../../src/repo/codec-pool.js'
import type { RepoKeys } from '../../src/repo/crypto.js'
import { initRepository, openRepository, type Repository } from '../../src/repo/index.js'
import { WindowStore } from '../../src/repo/window-store.js'
import { openFsStorage } from '../../src/storage/fs.js'

const PAGE = 8192
const WINDOW = 128 * PAGE

/** A seeded generator (mulberry32), so every run sees the same content. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A heap-like page: header, a compressible run, then `noise` random bytes at the end. */
function page(seed: number, noise = 3000): Buffer {
  const r = prng(seed)
  const p = Buffer.alloc(PAGE, 0x20)
  p.writeUInt16LE(24, 12)
  p.writeUInt16LE(PAGE - noise, 14)
  p.writeUInt32LE(seed, 24)
  for (let i = PAGE - noise; i < PAGE; i++) p[i] = Math.floor(r() * 256)
  return p
}

const pages = (from: number, n: number, noise?: number) => Buffer.concat(Array.from({ length: n }, (_, i) => page(from + i, noise)))

interface Outcome {
  map: Buffer
  crc32c: number
  stats: unknown
  extents: Extent[]
  fileMap?: FileMap
}

/** Feeds `bytes` in uneven pieces, as tar delivers them (the same split on both paths). */
async function feed(ing: { push(b: Buffer): Promise<void> | undefined }, bytes: Uint8Array, seed: number): Promise<void> {
  const r = prng(seed)
  for (let off = 0; off < bytes.length; ) {
    const n = Math.min(bytes.length - off, 1 + Math.floor(r() * 400_000))
    await ing.push(Buffer.from(bytes.subarray(off, off + n)))
    off += n
  }
}

async function relation(store: WindowStore, bytes: Buffer, parent?: FileMap): Promise<Outcome> {
  const ing = new RelationFileIngest(store, bytes.length, parent)
  await feed(ing, bytes, bytes.length)
  const r = await ing.finish()
  return { map: encodeFileMap(r.fileMap), crc32c: r.crc32c, stats: { ...ing.stats }, extents: r.fileMap.extents, fileMap: r.fileMap }
}

async function plain(store: WindowStore, bytes: Buffer): Promise<Outcome> {
  const ing = new PlainFileIngest(store)
  await feed(ing, bytes, bytes.length + 1)
  const r = await ing.finish()
  expect(r.sizeBytes).toBe(bytes.length)
  return { map: Buffer.from(JSON.stringify(r.extents)), crc32c: r.crc32c, stats: { ...ing.stats }, extents: r.extents }
}

async function incremental(store: WindowStore, bytes: Uint8Array, parent: FileMap): Promise<Outcome> {
  const ing = new IncrementalFileIngest(store, 'base/5/16390', parent)
  await feed(ing, bytes, 7)
  const r = await ing.finish()
  return { map: encodeFileMap(r.fileMap), crc32c: r.incrementalCrc32c, stats: { ...ing.stats }, extents: r.fileMap.extents, fileMap: r.fileMap }
}

/** The file's bytes from its extents, every blob read back (and so verified) through `repo`. */
async function rebuild(repo: Repository, extents: Extent[]): Promise<Buffer> {
  const parts: Buffer[] = []
  for (const e of extents) {
    if (e.blob === null) parts.push(Buffer.alloc(e.length))
    else parts.push((await repo.readBlob(e.blob)).subarray(e.blobOffset, e.blobOffset + e.length))
  }
  return Buffer.concat(parts)
}

// XXH64 itself is checked against the reference implementation's values in repo-page-hash.test.ts.
const pageHash = (p: Uint8Array) => pageHashesOf(p, 'xxh64')

let workerUrl: URL
beforeAll(() => {
  const url = workerModuleUrl()
  if (!url) throw new Error("no compiled codec worker in dist/: run 'npm run build' (npm test does it)")
  workerUrl = url
})

describe.each([
  { name: 'plain', passphrase: undefined },
  { name: 'encrypted', passphrase: 'correct horse' },
])('ingest on workers equals ingest on the main thread ($name repository)', ({ passphrase }) => {
  let dir: string
  let main: Repository
  let pooled: Repository
  let mainStore: WindowStore
  let pool: WindowStore
  let keys: RepoKeys | undefined
  const scrypt = { N: 1024, r: 8, p: 1 }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-ingest-'))
    const a = await initRepository(await openFsStorage(join(dir, 'a')), passphrase ? { encrypt: { passphrase, scrypt } } : {})
    await a.close()
    // Two copies of one repository: the same keys, so the same blob ids, and independent dedup state.
    await cp(join(dir, 'a'), join(dir, 'b'), { recursive: true })
    main = await openRepository(await openFsStorage(join(dir, 'a')), { passphrase })
    pooled = await openRepository(await openFsStorage(join(dir, 'b')), { passphrase })
    keys = (pooled as unknown as { keys: RepoKeys | undefined }).keys
    mainStore = await main.openWindowStore({ workers: 0 })
    // Two workers and a small in-flight bound: results come back out of order and submitters wait.
    pool = await pooled.openWindowStore({ workers: 2, maxInFlight: 3 })
    expect(pool.workers).toBe(2)
  })
  afterAll(async () => {
    await pool?.close()
    await mainStore?.close()
    await main?.close()
    await pooled?.close()
    await rm(dir, { recursive: true, force: true })
  })

  /** Runs one ingest on both paths; the outcomes must be identical. Returns the pooled one and the encodes it cost. */
  async function both(run: (store: WindowStore) => Promise<Outcome>): Promise<{ o: Outcome; encodes: number; stored: number }> {
    const want = await run(mainStore)
    const encodesBefore = pool.jobCounts.encoded
    const storedBefore = pooled.sessionStats.blobsStored
    const got = await run(pool)
    expect(got.map.equals(want.map), 'file map / extents').toBe(true)
    expect(got.crc32c).toBe(want.crc32c)
    expect(got.stats).toEqual(want.stats)
    return { o: got, encodes: pool.jobCounts.encoded - encodesBefore, stored: pooled.sessionStats.blobsStored - storedBefore }
  }

  const idOf = (bytes: Uint8Array) =>
    passphrase ? createHmac('sha256', keys!.idKey).update(bytes).digest('hex') : createHash('sha256').update(bytes).digest('hex')

  // 3 windows and a partial one: a compressible window, an all-zero window, an incompressible window, 57 pages.
  const v1 = Buffer.concat([pages(0, 128), Buffer.alloc(WINDOW), pages(1000, 128, PAGE), pages(2000, 57)])
  Buffer.alloc(PAGE).copy(v1, 5 * PAGE) // a zero page inside a stored window
  let map1: FileMap
  let map3: FileMap
  // v1 with three pages changed in window 0, one page zeroed in window 2, and grown by 71 pages.
  const v3 = Buffer.concat([v1, pages(3000, 71)])
  page(9001).copy(v3, 2 * PAGE)
  page(9002).copy(v3, 3 * PAGE)
  page(9003).copy(v3, 100 * PAGE)
  Buffer.alloc(PAGE).copy(v3, 300 * PAGE)

  it('a full relation file: same map; ids, page hashes and CRC as computed independently; bytes read back', async () => {
    const { o, encodes, stored } = await both((st) => relation(st, v1))
    map1 = o.fileMap!
    expect(o.crc32c).toBe(crc32c(v1))
    expect(map1.extents.map((e) => e.blob)).toEqual([
      idOf(v1.subarray(0, WINDOW)),
      null,
      idOf(v1.subarray(2 * WINDOW, 3 * WINDOW)),
      idOf(v1.subarray(3 * WINDOW)),
    ])
    for (let i = 0; i * PAGE < v1.length; i++)
      expect(map1.pageHashes.subarray(i * 8, i * 8 + 8), `page ${i}`).toEqual(pageHash(v1.subarray(i * PAGE, (i + 1) * PAGE)))
    expect(stored).toBe(3)
    expect(encodes).toBe(stored)
    await pooled.flush()
    expect((await rebuild(pooled, o.extents)).equals(v1)).toBe(true)
  })

  it('the same content again, without a parent: deduplicated, and nothing is encoded', async () => {
    const { o, encodes } = await both((st) => relation(st, v1))
    expect(o.stats).toEqual({ storedBytes: 0, reusedBytes: 0 })
    expect(encodes).toBe(0)
  })

  it('against a parent: unchanged windows reused without encoding, changed pages gathered, growth stored', async () => {
    const { o, encodes, stored } = await both((st) => relation(st, v3, map1))
    map3 = o.fileMap!
    expect(o.crc32c).toBe(crc32c(v3))
    // Window 1 (zeros) and the incompressible window 2 minus one zeroed page: reused or holes, never encoded.
    expect(encodes).toBe(stored)
    expect(stored).toBeLessThanOrEqual(3) // changed pages of windows 0 and 3, and the new window 3's tail
    expect(extentsIn(map3.extents, WINDOW, WINDOW).map((e) => e.blob)).toEqual([null])
    for (let i = 0; i * PAGE < v3.length; i++)
      expect(map3.pageHashes.subarray(i * 8, i * 8 + 8), `page ${i}`).toEqual(pageHash(v3.subarray(i * PAGE, (i + 1) * PAGE)))
    await pooled.flush()
    expect((await rebuild(pooled, o.extents)).equals(v3)).toBe(true)
  })

  it('an unchanged file against its parent: everything reused, nothing encoded', async () => {
    const { o, encodes } = await both((st) => relation(st, v3, map3))
    expect(o.stats).toEqual({ storedBytes: 0, reusedBytes: v3.length - WINDOW }) // window 1 is a hole, not a reuse
    expect(encodes).toBe(0)
  })

  it('a shrunk file against its parent', async () => {
    const v4 = v3.subarray(0, 200 * PAGE)
    const { o } = await both((st) => relation(st, v4, map3))
    expect(o.crc32c).toBe(crc32c(v4))
    await pooled.flush()
    expect((await rebuild(pooled, o.extents)).equals(v4)).toBe(true)
  })

  it('plain files: whole pieces, an all-zero piece, a short tail, and a small file', async () => {
    const big = Buffer.concat([pages(5000, 128, 5000), Buffer.alloc(WINDOW), pages(6000, 72), Buffer.from('tail of the file')])
    const { o } = await both((st) => plain(st, big))
    expect(o.crc32c).toBe(crc32c(big))
    expect(o.extents.map((e) => e.blob)).toEqual([idOf(big.subarray(0, WINDOW)), null, idOf(big.subarray(2 * WINDOW))])
    const small = Buffer.from('PG_VERSION 15\n')
    const s = await both((st) => plain(st, small))
    expect(s.o.crc32c).toBe(crc32c(small))
    await pooled.flush()
    expect((await rebuild(pooled, o.extents)).equals(big)).toBe(true)
  })

  it('a PG 17 INCREMENTAL file merged into its parent', async () => {
    // Blocks 3 and 130 change, 140 becomes zeros, 520 and 521 lie past the parent's 512; truncation at 522.
    const blocks = new Map<number, Buffer>([
      [3, page(7003)],
      [130, page(7130)],
      [140, Buffer.alloc(PAGE)],
      [520, page(7520)],
      [521, page(7521)],
    ])
    const inc = encodeIncrementalFile(
      [...blocks].map(([blockNumber, p]) => ({ blockNumber, page: p })),
      522,
    )
    const { o } = await both((st) => incremental(st, inc, map3))
    expect(o.crc32c).toBe(crc32c(inc))
    expect(v3.length).toBe(512 * PAGE)
    const want = Buffer.concat([v3, Buffer.alloc(10 * PAGE)])
    for (const [n, p] of blocks) p.copy(want, n * PAGE)
    for (let i = 0; i < 522; i++)
      expect(o.fileMap!.pageHashes.subarray(i * 8, i * 8 + 8), `page ${i}`).toEqual(pageHash(want.subarray(i * PAGE, (i + 1) * PAGE)))
    await pooled.flush()
    expect((await rebuild(pooled, o.extents)).equals(want)).toBe(true)
  })

  it('with every turn at the workers taken, the calling thread does the work itself; blobs are added in call order', async () => {
    const store = await pooled.openWindowStore({ workers: 1, maxInFlight: 1 })
    try {
      const contents = [0, 1, 2, 3].map((i) => pages(50_000 + 1000 * i, 128))
      const windows = contents.map((c) => {
        const w = store.takeBuffer()
        c.copy(w)
        return w.subarray(0, c.length)
      })
      // Given together: the first takes the worker's only turn, the other three find it taken.
      const facts = await Promise.all(windows.map((w) => store.analyze(w, { id: true, pageHashes: 'xxh64' })))
      expect(facts.map((f) => f.id)).toEqual(contents.map(idOf))
      for (const [i, f] of facts.entries()) expect(f.pageHashes!.equals(pageHash(contents[i]!)), `window ${i}`).toBe(true)
      expect(store.jobCounts).toMatchObject({ analyzed: 4, analyzedByCaller: 3 })
      // Stored without waiting in between: the first is encoded on the worker, the rest here while it is busy, and
      // each is added only after the one before it.
      const added: string[] = []
      const stores = facts.map((f) => store.store(f.id!, f.window, () => added.push(f.id!)))
      await Promise.all(stores)
      await store.drain()
      expect(store.jobCounts).toMatchObject({ encoded: 4, encodedByCaller: 3 })
      expect(added).toEqual(contents.map(idOf))
      await pooled.flush()
      for (const [i, c] of contents.entries()) expect((await pooled.readBlob(idOf(c))).equals(c), `blob ${i}`).toBe(true)
    } finally {
      await store.close()
    }
  })

  it('a window equal to one still being stored is not encoded again, nor once that one is stored', async () => {
    const store = await pooled.openWindowStore({ workers: 1, maxInFlight: 2 })
    try {
      const content = pages(70_000, 128)
      const windowOf = () => {
        const w = store.takeBuffer()
        content.copy(w)
        return w.subarray(0, content.length)
      }
      const id = idOf(content)
      const outcomes: boolean[] = []
      // The second is given while the first is at the worker.
      await Promise.all([store.store(id, windowOf(), (s) => outcomes.push(s)), store.store(id, windowOf(), (s) => outcomes.push(s))])
      await store.drain()
      await store.store(id, windowOf(), (s) => outcomes.push(s))
      expect(outcomes.sort()).toEqual([false, false, true])
      expect(store.jobCounts.encoded).toBe(1)
    } finally {
      await store.close()
    }
  })

  it('a second session reads every blob the pooled path stored, verified against its id', async () => {
    await pooled.flush()
    const again = await openRepository(await openFsStorage(join(dir, 'b')), { passphrase })
    try {
      expect((await rebuild(again, map3.extents)).equals(v3)).toBe(true)
    } finally {
      await again.close()
    }
  })
})

describe('CodecPool', () => {
  const codec = new BlobCodec(undefined, 3)

  it('analyzes a window as computed here, hands it back intact, and takes it from the sender', async () => {
    const pool = new CodecPool({ keys: undefined, compressionLevel: 3, workers: 1, workerUrl })
    try {
      const w = pool.takeBuffer()
      const content = pages(42, 128)
      Buffer.alloc(PAGE).copy(content, 7 * PAGE)
      content.copy(w)
      const view = w.subarray(0, 100 * PAGE + 17) // a partial window with a partial page
      const f = await pool.analyze(view, { id: true, pageHashes: 'xxh64' })
      expect(w.length).toBe(0) // transferred, not copied
      const sent = content.subarray(0, 100 * PAGE + 17)
      expect(f.window.equals(sent)).toBe(true)
      expect(f.id).toBe(createHash('sha256').update(sent).digest('hex'))
      expect(f.allZero).toBe(false)
      expect(f.legacyPageHashes).toBeUndefined()
      for (let i = 0; i < 101; i++) expect(f.pageHashes!.subarray(i * 8, i * 8 + 8)).toEqual(pageHash(sent.subarray(i * PAGE, (i + 1) * PAGE)))
      // A version 1 parent's window hash equal to the id: no SHA-256 page hashes; another one: them too.
      const again = await pool.analyze(f.window, { id: false, legacyUnlessId: f.id })
      expect(again.pageHashes).toBeUndefined()
      expect(again.legacyPageHashes).toBeUndefined()
      const legacy = await pool.analyze(again.window, { id: false, legacyUnlessId: null })
      expect(legacy.legacyPageHashes).toEqual(pageHashesOf(sent, 'sha256-64'))
      expect(legacy.id).toBe(f.id)
      const e = await pool.encode(legacy.window)
      // The stored bytes come back in the window's own memory (nothing allocated per blob).
      expect(e.stored.buffer).toBe(e.window.buffer)
      expect(e.stored.length).toBeLessThan(sent.length)
      expect(codec.decode(e.stored, e.flags, sent.length, Buffer.from(f.id!, 'hex'), 'test blob').equals(sent)).toBe(true)
      const zero = pool.takeBuffer().fill(0)
      const z = await pool.analyze(zero, { id: true, pageHashes: 'xxh64' })
      expect(z).toMatchObject({ allZero: true, id: undefined, pageHashes: undefined })
    } finally {
      await pool.close()
    }
  })

  it('encodes an incompressible window as its own bytes, and an encrypted one too large for the window apart', async () => {
    const random = createHash('sha512')
    const noise = Buffer.concat(Array.from({ length: WINDOW / 64 }, (_, i) => random.copy().update(String(i)).digest()))
    const keys = { dataKey: Buffer.alloc(32, 1), idKey: Buffer.alloc(32, 2) }
    for (const k of [undefined, keys]) {
      const pool = new CodecPool({ keys: k, compressionLevel: 1, workers: 1, workerUrl })
      const here = new BlobCodec(k, 1)
      try {
        for (const length of [WINDOW, WINDOW - 4096]) {
          const w = pool.takeBuffer()
          noise.copy(w)
          const e = await pool.encode(w.subarray(0, length))
          expect(e.flags).toBe(0) // not compressed
          // Plain: the window's own bytes, where they were. Encrypted: 28 bytes more, in the window while they fit.
          expect(e.stored.buffer === e.window.buffer, `${k ? 'encrypted' : 'plain'} ${length}`).toBe(!k || length < WINDOW)
          const id = here.idOf(noise.subarray(0, length))
          expect(here.decode(e.stored, e.flags, length, id, 'test blob').equals(noise.subarray(0, length))).toBe(true)
          pool.recycle(e.window)
        }
      } finally {
        await pool.close()
      }
    }
  })

  it.each([
    { by: 'the worker', maxInFlight: 2 },
    { by: 'the calling thread', maxInFlight: 1 },
  ])('a window store gives a window back only after the stored bytes in it were added (encoded by $by)', async ({ maxInFlight }) => {
    // A target that holds the first blob's add until released: the second blob's stored bytes (in its window's
    // memory) wait meanwhile, while the backup goes on taking window buffers and filling them.
    const added = new Map<string, Buffer>()
    let release!: () => void
    const held = new Promise<void>((resolve) => (release = resolve))
    const target = {
      codec,
      hasBlob: () => false,
      putEncoded: async (id: string, stored: Buffer) => {
        added.set(id, Buffer.from(stored))
        if (added.size === 1) await held
        return { stored: true }
      },
    }
    const pool = new CodecPool({ keys: undefined, compressionLevel: 3, workers: 1, maxInFlight, workerUrl })
    const store = new WindowStore(target, pool, undefined)
    try {
      const contents = [pages(70_000, 128), pages(71_000, 128)]
      const stores = contents.map((c) => {
        const w = store.takeBuffer()
        c.copy(w)
        return store.store(createHash('sha256').update(c).digest('hex'), w.subarray(0, c.length))
      })
      // Both encoded (the second on the worker too with two turns, here with one), the first blob's add held.
      while (added.size === 0 || pool.jobCounts.encode + store.jobCounts.encodedByCaller < 2) await new Promise((r) => setTimeout(r, 5))
      await new Promise((r) => setTimeout(r, 5))
      expect(added.size).toBe(1)
      expect(store.jobCounts.encodedByCaller).toBe(maxInFlight === 1 ? 1 : 0)
      for (let i = 0; i < 8; i++) store.takeBuffer().fill(0xee)
      release()
      await Promise.all(stores)
      await store.drain()
      for (const c of contents) {
        const id = createHash('sha256').update(c).digest('hex')
        expect(codec.decode(added.get(id)!, 1, c.length, Buffer.from(id, 'hex'), 'test blob').equals(c), id).toBe(true)
      }
    } finally {
      await store.close()
    }
  })

  it('refuses buffers it did not hand out (transferring them would detach memory others use)', async () => {
    const pool = new CodecPool({ keys: undefined, compressionLevel: 3, workers: 1, workerUrl })
    try {
      await expect(pool.analyze(Buffer.from('abc'), { id: true })).rejects.toThrow(AssertionError)
      await expect(pool.encode(Buffer.alloc(WINDOW + 1).subarray(0, WINDOW))).rejects.toThrow(AssertionError)
    } finally {
      await pool.close()
    }
  })

  it('keeps at most maxInFlight jobs at the workers; many callers all get their own answer', async () => {
    const pool = new CodecPool({ keys: undefined, compressionLevel: 1, workers: 2, maxInFlight: 1, workerUrl })
    try {
      const contents = Array.from({ length: 12 }, (_, i) => pages(100 * i, 1 + i))
      const results = await Promise.all(
        contents.map((c) => {
          const w = pool.takeBuffer()
          c.copy(w)
          return pool.analyze(w.subarray(0, c.length), { id: true })
        }),
      )
      for (const [i, f] of results.entries()) expect(f.id).toBe(createHash('sha256').update(contents[i]!).digest('hex'))
      expect(pool.jobCounts.analyze).toBe(12)
    } finally {
      await pool.close()
    }
  })

  it('fails the jobs of a worker that dies instead of hanging', async () => {
    const dead = new URL('data:text/javascript,process.exit(3)')
    const pool = new CodecPool({ keys: undefined, compressionLevel: 3, workers: 1, workerUrl: dead })
    try {
      await expect(pool.analyze(pool.takeBuffer(), { id: true })).rejects.toThrow(/codec worker exited with code 3/)
    } finally {
      await pool.close()
    }
  })

  it('stops idle workers and starts them again on demand', async () => {
    const pool = new CodecPool({ keys: undefined, compressionLevel: 3, workers: 2, idleMs: 50, workerUrl })
    try {
      await pool.analyze(pool.takeBuffer().fill(1), { id: true })
      expect(pool.runningWorkers).toBe(2)
      await new Promise((r) => setTimeout(r, 300))
      expect(pool.runningWorkers).toBe(0)
      const f = await pool.analyze(pool.takeBuffer().fill(2), { id: true })
      expect(f.id).toBe(createHash('sha256').update(Buffer.alloc(WINDOW, 2)).digest('hex'))
    } finally {
      await pool.close()
    }
  })

  it('runs workers on the cores beyond those counted busy, at most the maximum', () => {
    // Two busy cores (an incremental backup's thread and the server; a restore's thread and the disk).
    expect([1, 2, 3, 4, 6, 8, 64].map((n) => defaultWorkers(2, 4, n))).toEqual([0, 0, 1, 2, 4, 4, 4])
    // One (a full backup's calling thread takes windows itself while the workers are busy).
    expect([1, 2, 3, 4, 6, 64].map((n) => defaultWorkers(1, 4, n))).toEqual([0, 1, 2, 3, 4, 4])
  })

  it('decodes and verifies blobs, and hashes pages, as the calling thread does', async () => {
    const pool = new CodecPool({ keys: undefined, compressionLevel: 3, workers: 1, workerUrl })
    try {
      const content = pages(77, 40)
      const e = codec.encode(content)
      const id = createHash('sha256').update(content).digest('hex')
      expect((await pool.decode(e.stored, e.flags, content.length, id)).equals(content)).toBe(true)
      await expect(pool.decode(e.stored, e.flags, content.length, 'ab'.repeat(32))).rejects.toThrow(/blob 'abab/)
      for (const algorithm of ['xxh64', 'sha256-64'] as const) {
        const w = pool.takeBuffer()
        content.copy(w)
        const h = await pool.hashPages(w.subarray(0, content.length), algorithm)
        expect(h.window.equals(content)).toBe(true)
        expect(h.hashes).toEqual(pageHashesOf(content, algorithm))
      }
    } finally {
      await pool.close()
    }
  })
})
