// The storage conformance suite (restic's habit): one function checks every point of the contract in
// src/storage/storage.ts, and runs against each driver (fs, s3 on s3rver or PGKEEP_TEST_S3_ENDPOINT) raw and
// wrapped in the retry and concurrency-limit decorators (through openStorage, the production wiring); and on S3
// stores that refuse conditional writes (pgkeep's check-and-read-back fallback) or enforce them (a loopback proxy
// in front of s3rver, test/harness/s3-conditional-proxy.ts).

import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { AlreadyExistsError, NotFoundError, StorageError, isPgkeepError } from '../../src/errors.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { withCheckedIfAbsent } from '../../src/storage/if-absent.js'
import { openStorage } from '../../src/storage/open.js'
import { openS3Storage, type S3StorageOptions } from '../../src/storage/s3.js'
import type { Body, ObjectInfo, Storage } from '../../src/storage/storage.js'
import { startS3ConditionalProxy, type S3ConditionalProxy } from '../harness/s3-conditional-proxy.js'
import { startS3Server, type S3TestServer } from '../harness/s3-server.js'

const MIB = 1 << 20

/** What a variant of the suite runs against. */
interface Subject {
  readonly storage: Storage
  /** Size of one multipart part (s3): streamed bodies above it take the multipart path. */
  readonly partSizeBytes?: number
  /** Largest body in memory that goes up in one PutObject (s3; default `partSizeBytes`). */
  readonly singlePutMaxBytes?: number
  /** Requests the S3 server saw (local s3rver only), to check that multipart really happened. */
  readonly requestLog?: () => Promise<string[]>
  /**
   * Of many concurrent `ifAbsent` writers of one key exactly one wins (default: `features.conditionalWrite`; true
   * for the check-and-read-back fallback too, whose writers here never stall).
   */
  readonly exclusiveIfAbsent?: boolean
  close(): Promise<void>
}

// ---- helpers ---------------------------------------------------------------------------------------------------

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

async function readAll(s: Storage, key: string, o: { offset?: number; length?: number } = {}): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const c of s.read(key, o)) parts.push(c)
  return Buffer.concat(parts)
}

async function listAll(s: Storage, prefix: string): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = []
  for await (const i of s.list(prefix)) out.push(i)
  return out
}

/** A factory body yielding `data` in chunks of `chunkBytes` (odd sizes on purpose), optionally with a hook. */
function chunked(data: Uint8Array, chunkBytes: number, onChunk?: (sentBytes: number) => void | Promise<void>): () => AsyncIterable<Uint8Array> {
  return async function* () {
    for (let off = 0; off < data.byteLength; off += chunkBytes) {
      // Copies: the driver may keep chunks across awaits, and each replay must yield fresh buffers.
      yield Buffer.from(data.subarray(off, Math.min(data.byteLength, off + chunkBytes)))
      await onChunk?.(Math.min(data.byteLength, off + chunkBytes))
    }
  }
}

async function expectRejects(p: Promise<unknown> | (() => Promise<unknown>), check: (e: unknown) => void): Promise<void> {
  let caught: { e: unknown } | undefined
  try {
    await (typeof p === 'function' ? p() : p)
  } catch (e) {
    caught = { e }
  }
  expect(caught, 'expected a rejection').toBeDefined()
  check(caught?.e)
}

const BAD_KEYS = ['', '/abs', 'a//b', 'a/../b', '..', 'a/./b', 'a/', 'nul\0byte', '.tmp-x', 'a/.tmp-1', 'back\\slash']

// ---- the suite -------------------------------------------------------------------------------------------------

function storageConformance(label: string, open: () => Promise<Subject>): void {
  describe(`storage conformance: ${label}`, () => {
    let subject: Subject
    let s: Storage
    let counter = 0
    /** A fresh key namespace per test, so tests never see each other's objects. */
    const ns = (): string => `t${++counter}-${randomBytes(3).toString('hex')}/`

    beforeAll(async () => {
      subject = await open()
      s = subject.storage
    })
    afterAll(async () => {
      await subject?.close()
    })

    it('has a printable name and feature flags', () => {
      expect(typeof s.name).toBe('string')
      expect(s.name.length).toBeGreaterThan(0)
      expect(typeof s.features.conditionalWrite).toBe('boolean')
      expect(typeof s.features.fsync).toBe('boolean')
      expect(typeof s.features.remote).toBe('boolean')
    })

    it('round-trips a small object and stats it', async () => {
      const key = ns() + 'small'
      const data = randomBytes(1000)
      const before = Date.now()
      await s.write(key, data)
      expect(sha256(await readAll(s, key))).toBe(sha256(data))
      const info = await s.stat(key)
      expect(info?.key).toBe(key)
      expect(info?.sizeBytes).toBe(1000)
      expect(info?.modifiedAt).toBeInstanceOf(Date)
      // Generous: clocks of a remote store may differ a little, and s3rver/S3 keep second precision.
      expect(Math.abs((info?.modifiedAt.getTime() ?? 0) - before)).toBeLessThan(5 * 60_000)
    })

    it('round-trips empty objects from bytes and from factories', async () => {
      const p = ns()
      await s.write(p + 'bytes', new Uint8Array(0))
      await s.write(p + 'factory', async function* () {})
      await s.write(p + 'zero-chunks', async function* () {
        yield new Uint8Array(0)
        yield new Uint8Array(0)
      })
      for (const k of ['bytes', 'factory', 'zero-chunks']) {
        expect((await readAll(s, p + k)).byteLength, k).toBe(0)
        expect((await s.stat(p + k))?.sizeBytes, k).toBe(0)
      }
    })

    it('round-trips a 12 MiB object from bytes and from a factory (multipart on S3 where above the limits)', async () => {
      const p = ns()
      const data = randomBytes(12 * MIB + 12345)
      await s.write(p + 'big-bytes', data)
      await s.write(p + 'big-factory', chunked(data, 64 * 1024 + 13))
      for (const k of ['big-bytes', 'big-factory']) {
        const back = await readAll(s, p + k)
        expect(back.byteLength, k).toBe(data.byteLength)
        expect(sha256(back), k).toBe(sha256(data))
        expect((await s.stat(p + k))?.sizeBytes, k).toBe(data.byteLength)
      }
      if (subject.requestLog !== undefined && subject.partSizeBytes !== undefined) {
        // Independent fact from the server's request log: the factory went up as a multipart upload, the bytes as
        // one too unless the subject's single PUT limit holds them.
        const log = await subject.requestLog()
        const singlePutMax = subject.singlePutMaxBytes ?? subject.partSizeBytes
        for (const k of ['big-bytes', 'big-factory']) {
          const puts = log.filter((r) => r.startsWith('PUT ') && (r.endsWith(`${p}${k}`) || r.includes(`${p}${k}?`)))
          const parts = puts.filter((r) => r.includes('uploadId='))
          const multipart = k === 'big-factory' || data.byteLength > singlePutMax
          expect(parts.length, k).toBe(multipart ? Math.ceil(data.byteLength / subject.partSizeBytes) : 0)
          expect(puts.length, k).toBe(multipart ? parts.length : 1)
        }
      }
    })

    it('writes a body of exactly one part and one byte more', async () => {
      const part = subject.partSizeBytes ?? 5 * MIB
      const p = ns()
      for (const size of [part, part + 1]) {
        const data = randomBytes(size)
        await s.write(p + `f${size}`, chunked(data, 1 * MIB))
        expect(sha256(await readAll(s, p + `f${size}`))).toBe(sha256(data))
      }
    })

    it('serves ranged reads: start, middle across chunk boundaries, end, past the end', async () => {
      const key = ns() + 'ranged'
      const data = randomBytes(3 * MIB + 777)
      await s.write(key, data)
      const size = data.byteLength
      const cases: [string, number | undefined, number | undefined, Buffer][] = [
        ['start', 0, 100, data.subarray(0, 100)],
        ['middle across 1 MiB', MIB - 10, 20, data.subarray(MIB - 10, MIB + 10)],
        ['middle long', 100, 2 * MIB + 5, data.subarray(100, 100 + 2 * MIB + 5)],
        ['end without length', size - 100, undefined, data.subarray(size - 100)],
        ['length past end', size - 5, 100, data.subarray(size - 5)],
        ['offset at end', size, undefined, Buffer.alloc(0)],
        ['offset past end', size + 10, 10, Buffer.alloc(0)],
        ['zero length', 10, 0, Buffer.alloc(0)],
        ['whole with offset 0', 0, undefined, data],
      ]
      for (const [name, offset, length, want] of cases) {
        const got = await readAll(s, key, { offset, length })
        expect(got.byteLength, name).toBe(want.byteLength)
        expect(got.equals(want), name).toBe(true)
      }
    })

    it('reports missing keys: stat undefined, read NotFoundError on the first next()', async () => {
      const key = ns() + 'missing'
      expect(await s.stat(key)).toBeUndefined()
      const it = s.read(key)[Symbol.asyncIterator]()
      await expectRejects(it.next(), (e) => expect(e).toBeInstanceOf(NotFoundError))
      for (const range of [{ offset: 5 }, { offset: 0, length: 0 }, { offset: 10, length: 10 }]) {
        await expectRejects(readAll(s, key, range), (e) => expect(e).toBeInstanceOf(NotFoundError))
      }
    })

    it('refuses ifAbsent over an existing key and keeps the first object', async () => {
      const key = ns() + 'once'
      const first = randomBytes(100)
      await s.write(key, first, { ifAbsent: true })
      await expectRejects(s.write(key, randomBytes(100), { ifAbsent: true }), (e) => {
        expect(e).toBeInstanceOf(AlreadyExistsError)
        expect((e as AlreadyExistsError).retryable).toBe(false)
      })
      await expectRejects(s.write(key, chunked(randomBytes(300), 100), { ifAbsent: true }), (e) => expect(e).toBeInstanceOf(AlreadyExistsError))
      expect((await readAll(s, key)).equals(first)).toBe(true)
    })

    it('lets exactly one of many concurrent ifAbsent writers win where ifAbsent is exclusive', async (ctx) => {
      if (!(subject.exclusiveIfAbsent ?? s.features.conditionalWrite)) {
        ctx.skip('features.conditionalWrite is false: ifAbsent is a best-effort check here')
        return
      }
      const key = ns() + 'race'
      const bodies = Array.from({ length: 8 }, () => randomBytes(64 * 1024))
      const results = await Promise.allSettled(bodies.map((b) => s.write(key, b, { ifAbsent: true })))
      const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []))
      expect(won.length).toBe(1)
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(AlreadyExistsError)
      expect(sha256(await readAll(s, key))).toBe(sha256(bodies[won[0] ?? -1] ?? new Uint8Array()))
    })

    it('overwrites without ifAbsent', async () => {
      const key = ns() + 'over'
      await s.write(key, randomBytes(5000))
      const second = randomBytes(10)
      await s.write(key, second)
      expect((await readAll(s, key)).equals(second)).toBe(true)
      expect((await s.stat(key))?.sizeBytes).toBe(10)
    })

    it('lists by prefix: nested keys, prefixes ending mid-name and with /, each key once', async () => {
      const p = ns()
      const keys = ['a/1', 'a/2', 'a/b/3', 'a/b/c/4', 'ab', 'abc/5', 'b/6', 'zz']
      await Promise.all(keys.map((k, i) => s.write(p + k, randomBytes(i + 1))))
      const keysOf = async (prefix: string): Promise<string[]> => (await listAll(s, p + prefix)).map((i) => i.key.slice(p.length)).sort()
      expect(await keysOf('')).toEqual([...keys].sort())
      expect(await keysOf('a/')).toEqual(['a/1', 'a/2', 'a/b/3', 'a/b/c/4'])
      expect(await keysOf('a')).toEqual(['a/1', 'a/2', 'a/b/3', 'a/b/c/4', 'ab', 'abc/5'])
      expect(await keysOf('ab')).toEqual(['ab', 'abc/5'])
      expect(await keysOf('a/b')).toEqual(['a/b/3', 'a/b/c/4'])
      expect(await keysOf('a/b/c/')).toEqual(['a/b/c/4'])
      expect(await keysOf('nothing/')).toEqual([])
      expect(await keysOf('q')).toEqual([])
      const infos = await listAll(s, p)
      for (const i of infos) {
        expect(i.sizeBytes).toBe(keys.indexOf(i.key.slice(p.length)) + 1)
        expect(i.modifiedAt).toBeInstanceOf(Date)
      }
    })

    it('lists more than 1000 objects (S3 pagination) exactly once each', async () => {
      const p = ns()
      const n = 1100
      const keys = Array.from({ length: n }, (_, i) => `${p}many/${String(i).padStart(5, '0')}`)
      // 16 writers at a time: fast enough, and exercises the concurrency limit of the decorated variants.
      let next = 0
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let i = next++; i < n; i = next++) await s.write(keys[i] as string, Buffer.from(String(i)))
        }),
      )
      const listed = (await listAll(s, p + 'many/')).map((i) => i.key)
      expect(listed.length).toBe(n)
      expect(new Set(listed).size).toBe(n)
      expect([...listed].sort()).toEqual(keys)
    })

    it('removes objects; removing a missing key is not an error', async () => {
      const p = ns()
      await s.write(p + 'x', randomBytes(10))
      await s.write(p + 'y', randomBytes(10))
      await s.remove(p + 'x')
      expect(await s.stat(p + 'x')).toBeUndefined()
      await expectRejects(readAll(s, p + 'x'), (e) => expect(e).toBeInstanceOf(NotFoundError))
      expect((await listAll(s, p)).map((i) => i.key)).toEqual([p + 'y'])
      await s.remove(p + 'x')
      await s.remove(p + 'never-was')
    })

    for (const [what, size] of [
      ['small', 256 * 1024],
      ['large (multipart on S3)', 14 * MIB],
    ] as const) {
      it(`leaves nothing visible when a ${what} write is aborted mid-stream`, async () => {
        const p = ns()
        const key = p + 'aborted'
        const data = randomBytes(size)
        const ac = new AbortController()
        const reason = new Error('test abort')
        const abortAt = Math.floor(size * 0.6)
        const body = chunked(data, 64 * 1024, async (sent) => {
          if (sent >= abortAt && !ac.signal.aborted) ac.abort(reason)
          await new Promise((r) => setImmediate(r))
        })
        await expectRejects(s.write(key, body, { signal: ac.signal }), (e) => expect(e).toBe(reason))
        expect(await s.stat(key)).toBeUndefined()
        expect(await listAll(s, p)).toEqual([])
      })

      it(`leaves nothing visible (and the previous object intact) when a ${what} factory body throws`, async () => {
        const p = ns()
        const previous = randomBytes(1000)
        await s.write(p + 'kept', previous)
        const boom = new Error('producer failed')
        const data = randomBytes(size)
        const failing = (): AsyncIterable<Uint8Array> =>
          (async function* () {
            let sent = 0
            for await (const c of chunked(data, 64 * 1024)()) {
              yield c
              sent += c.byteLength
              if (sent >= size * 0.6) throw boom
            }
          })()
        // The producer's error comes back unchanged, for a new key and for an existing one.
        await expectRejects(s.write(p + 'new', failing), (e) => expect(e).toBe(boom))
        await expectRejects(s.write(p + 'kept', failing), (e) => expect(e).toBe(boom))
        expect(await s.stat(p + 'new')).toBeUndefined()
        expect((await readAll(s, p + 'kept')).equals(previous)).toBe(true)
        expect((await listAll(s, p)).map((i) => i.key)).toEqual([p + 'kept'])
      })
    }

    it('rejects an already-aborted operation with the reason, before touching the store', async () => {
      const key = ns() + 'pre-aborted'
      const reason = new Error('already aborted')
      const signal = AbortSignal.abort(reason)
      await expectRejects(s.write(key, randomBytes(10), { signal }), (e) => expect(e).toBe(reason))
      await expectRejects(s.stat(key, { signal }), (e) => expect(e).toBe(reason))
      await expectRejects(readAll(s, key, {}), (e) => expect(e).toBeInstanceOf(NotFoundError))
      expect(await s.stat(key)).toBeUndefined()
    })

    it('aborts a read mid-stream with the reason', async () => {
      const key = ns() + 'read-abort'
      await s.write(key, randomBytes(4 * MIB))
      const ac = new AbortController()
      const reason = new Error('stop reading')
      let got = 0
      await expectRejects(
        (async () => {
          for await (const c of s.read(key, { signal: ac.signal })) {
            got += c.byteLength
            if (got > 0) ac.abort(reason)
          }
        })(),
        (e) => expect(e).toBe(reason),
      )
      expect(got).toBeLessThan(4 * MIB)
    })

    it('releases a read the consumer leaves early, and keeps working afterwards', async () => {
      const key = ns() + 'early'
      const data = randomBytes(3 * MIB)
      await s.write(key, data)
      for (let i = 0; i < 20; i++) {
        for await (const c of s.read(key)) {
          expect(c.byteLength).toBeGreaterThan(0)
          break
        }
      }
      expect(sha256(await readAll(s, key))).toBe(sha256(data))
    })

    it('rejects invalid keys and prefixes with a non-retryable StorageError', async () => {
      for (const bad of BAD_KEYS) {
        const checks: [string, () => Promise<unknown>][] = [
          ['stat', () => s.stat(bad)],
          ['read', () => readAll(s, bad)],
          ['write', () => s.write(bad, new Uint8Array(1))],
          ['remove', () => s.remove(bad)],
        ]
        for (const [op, run] of checks) {
          await expectRejects(run, (e) => {
            expect(e, `${op} ${JSON.stringify(bad)}`).toBeInstanceOf(StorageError)
            expect(isPgkeepError(e) && e.retryable, `${op} ${JSON.stringify(bad)}`).toBe(false)
            expect((e as Error).message).toMatch(/^invalid storage key/)
          })
        }
      }
      for (const bad of ['/x', 'a//', '../', 'a/../', '\0', '.tmp-']) {
        await expectRejects(listAll(s, bad), (e) => expect(e, JSON.stringify(bad)).toBeInstanceOf(StorageError))
      }
    })

    it('accepts a body that is a view into a larger buffer', async () => {
      const key = ns() + 'view'
      const backing = randomBytes(10_000)
      const view = new Uint8Array(backing.buffer, backing.byteOffset + 1234, 5000)
      await s.write(key, view as Body)
      expect((await readAll(s, key)).equals(Buffer.from(view))).toBe(true)
    })
  })
}

// ---- the variants ----------------------------------------------------------------------------------------------

async function tempDir(): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgkeep-storage-'))
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) }
}

storageConformance('fs', async () => {
  const t = await tempDir()
  const storage = await openFsStorage(path.join(t.dir, 'repo'))
  return {
    storage,
    async close() {
      await storage.close()
      await t.remove()
    },
  }
})

storageConformance('fs through openStorage (retry + limit)', async () => {
  const t = await tempDir()
  const storage = await openStorage(`file://${t.dir}/repo`, {}, { maxConcurrent: 3 })
  return {
    storage,
    async close() {
      await storage.close()
      await t.remove()
    },
  }
})

describe('s3 variants', () => {
  let server: S3TestServer
  beforeAll(async () => {
    server = await startS3Server({ conditionalWrites: 'server' })
  })
  afterAll(async () => {
    await server?.stop()
  })

  /**
   * The S3 driver on its own, under `server.prefix + label`, reaching the server through `endpoint`. Bodies in memory
   * larger than one part go up as multipart uploads here (openStorage's subjects keep the default single PUT limit),
   * so both paths of an in-memory body meet the contract.
   */
  const rawS3 = (endpoint: string, label: string, partSizeBytes: number, extra: Partial<S3StorageOptions> = {}): Promise<Storage> =>
    openS3Storage({
      bucket: server.bucket,
      prefix: `${server.prefix}${label}`,
      endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      partSizeBytes,
      singlePutMaxBytes: partSizeBytes,
      ...extra,
    })

  storageConformance('s3', async () => {
    const partSizeBytes = 5 * MIB
    const storage = await rawS3(server.endpoint, 'raw', partSizeBytes)
    return { storage, partSizeBytes, requestLog: server.requestLog, close: () => storage.close() }
  })

  storageConformance('s3 through openStorage (retry + limit)', async () => {
    const storage = await openStorage(
      `s3://${server.bucket}/${server.prefix}decorated`,
      {
        AWS_ACCESS_KEY_ID: server.accessKeyId,
        AWS_SECRET_ACCESS_KEY: server.secretAccessKey,
        AWS_REGION: server.region,
        AWS_ENDPOINT_URL: server.endpoint,
      },
      { maxConcurrent: 4 },
    )
    // openStorage's default part size is 8 MiB, its single PUT limit 32 MiB.
    return { storage, partSizeBytes: 8 * MIB, singlePutMaxBytes: 32 * MIB, requestLog: server.requestLog, close: () => storage.close() }
  })

  // A store that answers 501 to every conditional request (OpenStack Swift's S3 layer): pgkeep's fallback must
  // give the whole contract, exclusive ifAbsent included.
  describe('behind a store that refuses conditional writes', () => {
    let proxy: S3ConditionalProxy
    beforeAll(async () => {
      proxy = await startS3ConditionalProxy(server.endpoint, 'refuse')
    })
    afterAll(async () => {
      await proxy?.close()
    })

    storageConformance('s3 refusing conditional writes, with the check-and-read-back fallback', async () => {
      const partSizeBytes = 5 * MIB
      const storage = withCheckedIfAbsent(await rawS3(proxy.endpoint, 'refusing-raw', partSizeBytes))
      return { storage, partSizeBytes, requestLog: server.requestLog, exclusiveIfAbsent: true, close: () => storage.close() }
    })

    storageConformance('s3 refusing conditional writes, through openStorage with PGKEEP_S3_CONDITIONAL_WRITE=false', async () => {
      const storage = await openStorage(
        `s3://${server.bucket}/${server.prefix}refusing-decorated`,
        {
          AWS_ACCESS_KEY_ID: server.accessKeyId,
          AWS_SECRET_ACCESS_KEY: server.secretAccessKey,
          AWS_REGION: server.region,
          AWS_ENDPOINT_URL: proxy.endpoint,
          PGKEEP_S3_CONDITIONAL_WRITE: 'false',
        },
        { maxConcurrent: 4 },
      )
      return {
        storage,
        partSizeBytes: 8 * MIB,
        singlePutMaxBytes: 32 * MIB,
        requestLog: server.requestLog,
        exclusiveIfAbsent: true,
        close: () => storage.close(),
      }
    })
  })

  // A store that enforces If-None-Match (as AWS S3 does): the driver relies on it alone.
  describe('behind a store that enforces conditional writes', () => {
    let proxy: S3ConditionalProxy
    beforeAll(async () => {
      proxy = await startS3ConditionalProxy(server.endpoint, 'enforce')
    })
    afterAll(async () => {
      await proxy?.close()
    })

    storageConformance('s3 enforcing conditional writes', async () => {
      const partSizeBytes = 5 * MIB
      const storage = await rawS3(proxy.endpoint, 'enforcing', partSizeBytes, { conditionalWrite: true })
      return { storage, partSizeBytes, requestLog: server.requestLog, close: () => storage.close() }
    })
  })
})
