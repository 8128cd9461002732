// S3 driver faults, through a real TCP proxy between the driver and the S3 server: the server disappearing
// mid-upload, a connection cut mid-download, a stalled server, an unreachable endpoint; plus wrong credentials and
// a missing bucket. Facts are checked on the server side too (its request log, a direct client).

import { createHash, randomBytes } from 'node:crypto'
import net from 'node:net'

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'

import { NotFoundError, StorageError } from '../../src/errors.js'
import { withRetry, type RetryEvent } from '../../src/storage/retry.js'
import { openS3Storage, type S3StorageOptions } from '../../src/storage/s3.js'
import type { Storage } from '../../src/storage/storage.js'
import { startS3Server, type S3TestServer } from '../harness/s3-server.js'
import { startTcpProxy, type TcpProxy } from '../harness/tcp-proxy.js'

const MIB = 1 << 20
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

let server: S3TestServer
let proxy: TcpProxy
let direct: Storage
const opened: Storage[] = []
let counter = 0
const ns = (): string => `f${++counter}-${randomBytes(3).toString('hex')}/`

beforeAll(async () => {
  server = await startS3Server()
  const target = new URL(server.endpoint)
  proxy = await startTcpProxy(target.hostname, Number(target.port || 80))
  direct = await open({})
})

afterEach(() => {
  proxy.resume()
  proxy.refuseNew = false
  proxy.delayMs = 0
})

afterAll(async () => {
  for (const s of opened) await s.close()
  await proxy?.close()
  await server?.stop()
})

const proxyEndpoint = (): string => `http://127.0.0.1:${proxy.port}`

/** A driver on the test server; `viaProxy` routes it through the fault proxy. */
async function open(o: Partial<S3StorageOptions> & { viaProxy?: boolean }): Promise<Storage> {
  const { viaProxy, ...rest } = o
  const s = await openS3Storage({
    bucket: server.bucket,
    prefix: `${server.prefix}faults`,
    endpoint: viaProxy === true ? proxyEndpoint() : server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    partSizeBytes: 5 * MIB,
    // Bodies in memory above one part take the multipart path here, as streamed ones do.
    singlePutMaxBytes: 5 * MIB,
    queueSize: 2,
    connectTimeoutMs: 2_000,
    idleTimeoutMs: 2_000,
    ...rest,
  })
  opened.push(s)
  return s
}

function chunked(data: Uint8Array, chunkBytes: number): () => AsyncIterable<Uint8Array> {
  return async function* () {
    for (let off = 0; off < data.byteLength; off += chunkBytes) {
      yield Buffer.from(data.subarray(off, Math.min(data.byteLength, off + chunkBytes)))
    }
  }
}

async function readAll(s: Storage, key: string): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const c of s.read(key)) parts.push(c)
  return Buffer.concat(parts)
}

async function listKeys(s: Storage, prefix: string): Promise<string[]> {
  const out: string[] = []
  for await (const i of s.list(prefix)) out.push(i.key)
  return out
}

async function failure(p: Promise<unknown>): Promise<StorageError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  )
  expect(e, 'expected a StorageError').toBeInstanceOf(StorageError)
  return e as StorageError
}

/** Server-side facts about one key's multipart uploads, from the request log (local s3rver only). */
async function multipartRequests(key: string): Promise<{ parts: number; completes: number; aborts: number } | undefined> {
  const log = await server.requestLog?.()
  if (log === undefined) return undefined
  const mine = log.filter((r) => r.includes(`/faults/${key}?`))
  return {
    parts: mine.filter((r) => r.startsWith('PUT ') && r.includes('uploadId=')).length,
    completes: mine.filter((r) => r.startsWith('POST ') && r.includes('uploadId=')).length,
    aborts: mine.filter((r) => r.startsWith('DELETE ') && r.includes('uploadId=')).length,
  }
}

describe('s3 faults through a TCP proxy', () => {
  it('the server disappearing mid-upload gives a clear, retryable error and no half-visible object', async () => {
    const s = await open({ viaProxy: true })
    const key = ns() + 'big'
    const data = randomBytes(40 * MIB)
    // After 12 MiB of request bytes (two parts and some), every connection dies and new ones are refused.
    const cut = proxy.cutAfterBytes(12 * MIB, { direction: 'up', refuseAfter: true })
    const err = await failure(s.write(key, chunked(data, 256 * 1024)))
    await cut
    expect(err.retryable).toBe(true)
    expect(err.message).toContain(proxyEndpoint())
    expect(err.hint).toContain(proxyEndpoint())
    // The failed clean-up abort (refused here; s3rver would answer MethodNotAllowed) must not replace the cause.
    expect(err.message).not.toMatch(/MethodNotAllowed|AbortMultipartUpload/)

    // Through the retry decorator the outcome is the same, after the configured attempts.
    const retries: RetryEvent[] = []
    const retried = withRetry(s, { attempts: 3, baseDelayMs: 10, maxDelayMs: 50, onRetry: (e) => retries.push(e) })
    const err2 = await failure(retried.write(key, chunked(data, 256 * 1024)))
    expect(err2.retryable).toBe(true)
    expect(retries.map((r) => r.attempt)).toEqual([1, 2])

    proxy.refuseNew = false
    expect(await s.stat(key)).toBeUndefined()
    expect(await direct.stat(key)).toBeUndefined()
    expect(await listKeys(direct, key)).toEqual([])
    const facts = await multipartRequests(key)
    if (facts !== undefined) {
      expect(facts.parts, 'parts reached the server before the cut').toBeGreaterThanOrEqual(1)
      expect(facts.completes, 'no CompleteMultipartUpload was sent').toBe(0)
    }
  })

  it('a connection cut once mid-upload is survived (SDK part retry or the retry decorator)', async () => {
    const s = withRetry(await open({ viaProxy: true }), { attempts: 4, baseDelayMs: 10, maxDelayMs: 100 })
    const key = ns() + 'survivor'
    const data = randomBytes(20 * MIB)
    const cut = proxy.cutAfterBytes(7 * MIB, { direction: 'up' })
    await s.write(key, chunked(data, 256 * 1024))
    await cut
    expect(sha256(await readAll(direct, key))).toBe(sha256(data))
  })

  it('a download cut mid-body fails retryable raw, and resumes by range through the retry decorator', async () => {
    const key = ns() + 'download'
    const data = randomBytes(8 * MIB)
    await direct.write(key, data)
    const raw = await open({ viaProxy: true })

    const cut1 = proxy.cutAfterBytes(2 * MIB, { direction: 'down' })
    let received = 0
    const err = await failure(
      (async () => {
        for await (const c of raw.read(key)) received += c.byteLength
      })(),
    )
    await cut1
    expect(err.retryable).toBe(true)
    expect(err.message).toContain(proxyEndpoint())
    expect(received).toBeGreaterThan(0)
    expect(received).toBeLessThan(data.byteLength)

    const retries: RetryEvent[] = []
    const retried = withRetry(raw, { attempts: 3, baseDelayMs: 10, maxDelayMs: 50, onRetry: (e) => retries.push(e) })
    const cut2 = proxy.cutAfterBytes(3 * MIB, { direction: 'down' })
    const back = await readAll(retried, key)
    await cut2
    expect(back.byteLength).toBe(data.byteLength)
    expect(sha256(back)).toBe(sha256(data))
    expect(retries.length).toBe(1)
    expect(retries[0]?.op).toBe('read')
  })

  it('a stalled server times out as a retryable error', async () => {
    const s = await open({ viaProxy: true, idleTimeoutMs: 300, sdkMaxAttempts: 1 })
    const key = ns() + 'stalled'
    await direct.write(key, randomBytes(10))
    proxy.pause()
    const started = Date.now()
    const err = await failure(s.stat(key))
    expect(err.retryable).toBe(true)
    expect(err.message).toContain(proxyEndpoint())
    expect(Date.now() - started).toBeLessThan(10_000)
    proxy.resume()
  })

  it('an unreachable endpoint is a retryable error naming it, for every operation', async () => {
    const s = await open({ viaProxy: true, sdkMaxAttempts: 1 })
    proxy.refuseNew = true
    proxy.cutAll() // pooled keep-alive connections from earlier tests
    const key = ns() + 'x'
    for (const [op, run] of [
      ['stat', () => s.stat(key)],
      ['write', () => s.write(key, randomBytes(10))],
      ['read', () => readAll(s, key)],
      ['list', () => listKeys(s, key)],
      ['remove', () => s.remove(key)],
    ] as const) {
      const err = await failure(run())
      expect(err.retryable, op).toBe(true)
      expect(err.message, op).toContain(proxyEndpoint())
    }
    // A port where nothing listens at all.
    const port = await freePort()
    const nowhere = await open({ endpoint: `http://127.0.0.1:${port}`, sdkMaxAttempts: 1 })
    const err = await failure(nowhere.stat(key))
    expect(err.retryable).toBe(true)
    expect(err.message).toContain(`http://127.0.0.1:${port}`)
  })

  for (const [what, sizeBytes] of [
    ['multipart', 12 * MIB],
    ['single PUT', 4 * MIB],
  ] as const) {
    it(`an abort during a slow ${what} upload rejects with the reason and leaves nothing`, async () => {
      const s = await open({ viaProxy: true })
      const key = ns() + 'slow'
      proxy.delayMs = 20
      const ac = new AbortController()
      const reason = new Error('user abort')
      setTimeout(() => ac.abort(reason), 200)
      const e = await s.write(key, randomBytes(sizeBytes), { signal: ac.signal }).catch((err: unknown) => err)
      expect(e).toBe(reason)
      proxy.delayMs = 0
      if (what === 'single PUT' && !server.external) {
        // s3rver stores whatever part of a PUT body arrived before the client went away (it checks neither
        // Content-Length nor Content-MD5); S3, MinIO and Ceph discard an incomplete body.
        console.info('skip invisibility check of an aborted single PUT: s3rver keeps truncated PUT bodies')
        return
      }
      expect(await direct.stat(key)).toBeUndefined()
    })
  }

  it('a failing producer aborts the multipart upload and its own error comes back (not the abort failure)', async () => {
    const s = await open({})
    const key = ns() + 'producer'
    const boom = new Error('producer failed')
    const e = await s
      .write(key, async function* () {
        for (let i = 0; i < 48; i++) yield randomBytes(256 * 1024)
        throw boom
      })
      .catch((err: unknown) => err)
    expect(e).toBe(boom)
    expect(await direct.stat(key)).toBeUndefined()
    const facts = await multipartRequests(key)
    if (facts !== undefined) {
      expect(facts.parts).toBeGreaterThanOrEqual(2)
      expect(facts.completes).toBe(0)
      // s3rver answers 405 to AbortMultipartUpload; the driver sent it anyway and kept the producer's error.
      expect(facts.aborts).toBe(1)
    }
  })
})

describe('s3 configuration errors', () => {
  it('wrong access key id: non-retryable, with a hint about credentials, no secret in the error', async () => {
    const secret = 'very-secret-value-123'
    const s = await open({ credentials: { accessKeyId: 'WRONG-KEY-ID', secretAccessKey: secret } })
    const key = ns() + 'k'
    for (const run of [() => s.write(key, randomBytes(10)), () => s.stat(key), () => readAll(s, key), () => listKeys(s, '')]) {
      const err = await failure(run())
      expect(err.retryable).toBe(false)
      expect(err.message).toMatch(/access denied/)
      expect(err.hint).toMatch(/AWS_ACCESS_KEY_ID/)
      const everything = `${err.message} ${err.hint ?? ''} ${String((err.cause as Error | undefined)?.message)} ${JSON.stringify(err.cause)}`
      expect(everything).not.toContain(secret)
    }
    expect(s.name).not.toContain(secret)
  })

  it('wrong secret key: non-retryable with a hint', async (ctx) => {
    if (!server.external) {
      // s3rver checks that the access key id exists but does not verify SigV4 signatures.
      console.info('skip wrong-secret assertion: s3rver does not verify SigV4 signatures (run with PGKEEP_TEST_S3_ENDPOINT)')
      ctx.skip()
      return
    }
    const s = await open({ credentials: { accessKeyId: server.accessKeyId, secretAccessKey: 'wrong-secret' } })
    const err = await failure(s.write(ns() + 'k', randomBytes(10)))
    expect(err.retryable).toBe(false)
    expect(err.hint).toMatch(/AWS_SECRET_ACCESS_KEY/)
  })

  it('a missing bucket is a clear non-retryable StorageError for every operation (not NotFound)', async () => {
    const s = await open({ bucket: 'pgkeep-no-such-bucket' })
    for (const [op, run] of [
      ['stat', () => s.stat('k')],
      ['write', () => s.write('k', randomBytes(10))],
      ['read', () => readAll(s, 'k')],
      ['list', () => listKeys(s, '')],
    ] as const) {
      const err = await failure(run())
      expect(err, op).not.toBeInstanceOf(NotFoundError)
      expect(err.retryable, op).toBe(false)
      expect(err.message, op).toContain("bucket 'pgkeep-no-such-bucket' does not exist")
      expect(err.hint, op).toMatch(/create the bucket/)
    }
  })

  it('names the storage by bucket, prefix and endpoint only', async () => {
    const s = await open({ credentials: { accessKeyId: server.accessKeyId, secretAccessKey: 'not-in-name' } })
    expect(s.name).toBe(`s3://${server.bucket}/${server.prefix}faults/ (${server.endpoint})`)
    await expect(openS3Storage({ bucket: 'Bad_Bucket', prefix: '' })).rejects.toBeInstanceOf(StorageError)
    // Options out of range: refused with a hint that says what to give instead.
    await expect(openS3Storage({ bucket: 'ok-bucket', prefix: '', partSizeBytes: MIB })).rejects.toBeInstanceOf(StorageError)
    await expect(openS3Storage({ bucket: 'ok-bucket', prefix: '', partSizeBytes: MIB })).rejects.toMatchObject({
      hint: expect.stringMatching(/leave partSizeBytes out/),
    })
    await expect(openS3Storage({ bucket: 'ok-bucket', prefix: '', queueSize: 0 })).rejects.toMatchObject({ hint: expect.stringMatching(/leave queueSize out/) })
    for (const singlePutMaxBytes of [4 * MIB, 6 * 1024 * MIB, 8.5]) {
      const opening = openS3Storage({ bucket: 'ok-bucket', prefix: '', partSizeBytes: 5 * MIB, singlePutMaxBytes })
      await expect(opening, String(singlePutMaxBytes)).rejects.toThrow(/single PUT limit .* at least the part size/)
      await expect(openS3Storage({ bucket: 'ok-bucket', prefix: '', partSizeBytes: 5 * MIB, singlePutMaxBytes })).rejects.toMatchObject({
        hint: expect.stringMatching(/leave singlePutMaxBytes out/),
      })
    }
  })
})

async function freePort(): Promise<number> {
  const srv = net.createServer()
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()))
  const port = (srv.address() as net.AddressInfo).port
  await new Promise<void>((r) => srv.close(() => r()))
  return port
}
