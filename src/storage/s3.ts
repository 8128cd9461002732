// The S3 Storage driver (AWS S3 and S3-compatible stores: MinIO, Ceph RGW, …) on @aws-sdk/client-s3 and
// @aws-sdk/lib-storage. Small bodies go up in one PutObject, large ones as a multipart upload that only becomes
// visible at CompleteMultipartUpload, so every write is atomic. Errors are mapped in s3-errors.ts.
// Longer than 400 lines on purpose: it is the whole Storage contract mapped to S3 requests (single and multipart
// writes, ranged reads with resumption, paginated listing, conditional-write probing); each operation is short.

import { Readable } from 'node:stream'

import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type GetObjectCommandOutput,
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'

import { AlreadyExistsError, NotFoundError, StorageError } from '../errors.js'
import { pullBody, type BodyPuller } from './body.js'
import { holdsBody } from './if-absent.js'
import { assertValidKey, assertValidPrefix, assertValidRange } from './keys.js'
import { errorNameOf, httpStatusOf, isMissingKey, isNotImplemented, isPreconditionFailed, mapS3Error, sdkAttemptsOf } from './s3-errors.js'
import type { Body, ConditionalWriteSupport, LeftoversRemoved, ObjectInfo, OpOptions, ReadOptions, Storage, StorageFeatures, WriteOptions } from './storage.js'

/** Static credentials; when absent the SDK's default provider chain (environment, profile, instance role) applies. */
export interface S3Credentials {
  readonly accessKeyId: string
  readonly secretAccessKey: string
  readonly sessionToken?: string
}

/** Options of {@link openS3Storage}. */
export interface S3StorageOptions {
  readonly bucket: string
  /** Key prefix inside the bucket ('' for the whole bucket); leading and trailing '/' are ignored. */
  readonly prefix: string
  /** Default 'us-east-1'. */
  readonly region?: string
  /** Endpoint URL of an S3-compatible store (MinIO, Ceph RGW, …); absent for AWS S3 itself. */
  readonly endpoint?: string
  /** Address buckets as `endpoint/bucket` instead of `bucket.endpoint` (most self-hosted stores need this). */
  readonly forcePathStyle?: boolean
  readonly credentials?: S3Credentials
  /**
   * Parts of a multipart upload are this large; a streamed body (a factory) up to this size goes up in one
   * PutObject. At least 5 MiB (S3's minimum for every part but the last). Default 8 MiB.
   */
  readonly partSizeBytes?: number
  /**
   * A body already in memory (a Uint8Array) up to this size goes up in one PutObject, larger ones as a multipart
   * upload; at least `partSizeBytes`, at most 5 GiB (S3's limit of PutObject). Default 32 MiB: a pack of the
   * default 8 MiB plus the blob that crossed it, or a 16 MiB pack, is one request instead of four (create, two
   * parts, complete), and holding it whole costs nothing more since it is in memory already.
   */
  readonly singlePutMaxBytes?: number
  /** Parts of one multipart upload in flight at once (default 4). Memory per write is about (queueSize + 1) × part size. */
  readonly queueSize?: number
  /**
   * Whether the store is known to enforce `If-None-Match: *` on PutObject and CompleteMultipartUpload. Default:
   * true for AWS S3 (no `endpoint`; enforced since August 2024), false for other endpoints, where `ifAbsent` sends
   * a HeadObject check before the conditional request, in case the store ignores the condition. Either way the
   * condition is sent: a store that refuses it (501) fails such writes with a clear error. For stores that do not
   * enforce it, wrap this driver in `withCheckedIfAbsent` (if-absent.ts): openStorage does when
   * PGKEEP_S3_CONDITIONAL_WRITE=false, openRepository when the repository's config says so.
   */
  readonly conditionalWrite?: boolean
  /** Attempts per request inside the SDK (default 2). See the comment in openS3Storage for why it is small. */
  readonly sdkMaxAttempts?: number
  /** Time allowed to open a TCP connection (default 10 s). */
  readonly connectTimeoutMs?: number
  /** Time a socket may stay idle in the middle of a request before it is dropped (default 60 s). */
  readonly idleTimeoutMs?: number
}

const MIB = 1 << 20
/** S3's minimum size of every part of a multipart upload but the last; s3rver does not enforce it, S3 does. */
const MIN_PART_SIZE_BYTES = 5 * MIB
const DEFAULT_PART_SIZE_BYTES = 8 * MIB
const DEFAULT_SINGLE_PUT_MAX_BYTES = 32 * MIB
/** S3's largest PutObject. */
const MAX_SINGLE_PUT_BYTES = 5 * 1024 * MIB
const DEFAULT_QUEUE_SIZE = 4
const SILENT_LOGGER = { debug() {}, info() {}, warn() {}, error() {} }
/** Bound on the clean-up AbortMultipartUpload, so a dead endpoint does not delay reporting the real error. */
const ABORT_UPLOAD_TIMEOUT_MS = 5_000

/**
 * Opens a Storage over `s3://bucket/prefix`. No request is sent until the first operation.
 *
 * Semantics, on top of the contract in storage.ts:
 * - `write`: a Uint8Array of at most `singlePutMaxBytes`, or a factory body that ends within `partSizeBytes`, is one
 *   PutObject; a larger one is a multipart upload (parts of `partSizeBytes`, `queueSize` in flight), visible only
 *   once CompleteMultipartUpload succeeds. A factory body is streamed: at most about (queueSize + 1) parts are
 *   buffered, never the whole object. On failure the upload is aborted (best effort: s3rver has no
 *   AbortMultipartUpload; the original error is reported either way). An abort that lands while
 *   CompleteMultipartUpload is already in flight may still leave the whole object in place (never a partial one).
 *   Configure a lifecycle rule that aborts incomplete multipart uploads after a day or so.
 * - An error thrown by a factory body is rethrown unchanged (it is the caller's); the upload is aborted.
 * - `ifAbsent` sends `If-None-Match: *` (412 → AlreadyExistsError). Unless `features.conditionalWrite` is true
 *   a HeadObject check runs first, because stores that ignore the header would silently overwrite. A 412 that
 *   answers the SDK's own retry of the request is checked by reading the object back: if it holds this body, the
 *   first attempt landed and the write succeeds. A 501 (the store does not implement conditional writes) is a
 *   non-retryable StorageError with a hint.
 * - `probeConditionalWrite` sends a plain PutObject, then a conditional PutObject and a conditional one-part
 *   multipart upload to the same key, and removes it: 412 → enforced, success → ignored, 501 → unsupported.
 * - `read` is one GetObject (ranged when asked); the body streams in the socket's chunks.
 * - `stat` on a missing key checks once that the bucket exists, because HeadObject answers a bare 404 for both.
 * - `list` pages through ListObjectsV2 (1000 keys per request); keys ending in '/' (folder markers) are skipped.
 * - Network failures, 5xx, throttling are retryable StorageErrors naming the endpoint; 403s and missing buckets are
 *   not retryable and carry a hint. Needs s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket (without
 *   ListBucket, S3 answers 403 instead of 404 for missing keys).
 * - `removeLeftovers` aborts the incomplete multipart uploads under the prefix that were initiated before the
 *   given time (needs s3:ListBucketMultipartUploads and s3:AbortMultipartUpload); a store without
 *   ListMultipartUploads (s3rver answers 501 or 404) has nothing removed. Part sizes are not counted in `bytes`.
 * - `name` is `s3://bucket/prefix` plus the endpoint when one is set, never credentials.
 */
export async function openS3Storage(o: S3StorageOptions): Promise<Storage> {
  if (!isValidBucketName(o.bucket)) {
    throw new StorageError(`invalid S3 bucket name '${o.bucket}'`, {
      hint: 'bucket names are 3 to 63 lowercase letters, digits, dots and hyphens (s3://bucket/prefix)',
    })
  }
  const partSizeBytes = o.partSizeBytes ?? DEFAULT_PART_SIZE_BYTES
  if (!(Number.isSafeInteger(partSizeBytes) && partSizeBytes >= MIN_PART_SIZE_BYTES)) {
    throw new StorageError(`invalid S3 part size '${String(partSizeBytes)}': must be at least ${MIN_PART_SIZE_BYTES} bytes`, {
      hint: `leave partSizeBytes out for the default (${DEFAULT_PART_SIZE_BYTES} bytes), or give a whole number of bytes of S3's minimum part size (5 MiB) or more`,
    })
  }
  const singlePutMaxBytes = o.singlePutMaxBytes ?? Math.max(DEFAULT_SINGLE_PUT_MAX_BYTES, partSizeBytes)
  if (!(Number.isSafeInteger(singlePutMaxBytes) && singlePutMaxBytes >= partSizeBytes && singlePutMaxBytes <= MAX_SINGLE_PUT_BYTES)) {
    throw new StorageError(
      `invalid S3 single PUT limit '${String(singlePutMaxBytes)}': must be at least the part size (${partSizeBytes} bytes) and at most 5 GiB`,
      {
        hint: `leave singlePutMaxBytes out for the default (${DEFAULT_SINGLE_PUT_MAX_BYTES} bytes, or the part size when larger), or give a whole number of bytes in that range`,
      },
    )
  }
  const queueSize = o.queueSize ?? DEFAULT_QUEUE_SIZE
  if (!(Number.isSafeInteger(queueSize) && queueSize >= 1)) {
    throw new StorageError(`invalid S3 queue size '${String(queueSize)}': must be a positive integer`, {
      hint: `leave queueSize out for the default (${DEFAULT_QUEUE_SIZE} parts uploaded at once), or give a whole number of 1 or more`,
    })
  }
  const region = o.region ?? 'us-east-1'
  const endpointLabel = o.endpoint === undefined ? `https://s3.${region}.amazonaws.com` : redactUrl(o.endpoint)
  const client = new S3Client({
    region,
    endpoint: o.endpoint,
    forcePathStyle: o.forcePathStyle ?? false,
    credentials: o.credentials,
    // The retry decorator (retry.ts) owns retries, with backoff, abort and whole-body replay. SDK retries multiply
    // with it (attempts × attempts) and would hide a dead endpoint for minutes, so keep them small. One SDK retry
    // stays because it is the only retry that can redo a single multipart part or a single list page instead of
    // the whole object or listing.
    maxAttempts: o.sdkMaxAttempts ?? 2,
    // Since 3.729 the SDK adds CRC32 checksums (and aws-chunked trailers for streams) to every upload by default;
    // many S3-compatible stores (older MinIO, Ceph RGW, Backblaze, R2, GCS interop) reject or mishandle them.
    // pgkeep checks every byte it reads against its content address (invariant 3), so checksums are only sent
    // where the S3 API requires them.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      connectionTimeout: o.connectTimeoutMs ?? 10_000,
      socketTimeout: o.idleTimeoutMs ?? 60_000,
      // The concurrency limit (limit.ts, 16 by default) times queueSize parts can exceed the SDK's default of 50
      // sockets; queueing there is harmless but the handler would print a warning.
      httpAgent: { maxSockets: 128 },
      httpsAgent: { maxSockets: 128 },
      // The handler logs such warnings to console by default; nothing below src/cli/ may print.
      logger: SILENT_LOGGER,
    },
    // Without a logger of its own the SDK's retry middleware warns on the console about streaming requests.
    logger: SILENT_LOGGER,
  })
  return new S3Storage(client, {
    bucket: o.bucket,
    keyPrefix: normalizePrefix(o.prefix),
    endpointLabel,
    showEndpoint: o.endpoint !== undefined,
    partSizeBytes,
    singlePutMaxBytes,
    queueSize,
    conditionalWrite: o.conditionalWrite ?? o.endpoint === undefined,
  })
}

interface S3Settings {
  readonly bucket: string
  /** '' or 'some/prefix/' (always ends with '/'). */
  readonly keyPrefix: string
  readonly endpointLabel: string
  readonly showEndpoint: boolean
  readonly partSizeBytes: number
  readonly singlePutMaxBytes: number
  readonly queueSize: number
  readonly conditionalWrite: boolean
}

class S3Storage implements Storage {
  readonly name: string
  readonly features: StorageFeatures
  private bucketChecked = false

  constructor(
    private readonly client: S3Client,
    private readonly s: S3Settings,
  ) {
    const base = `s3://${s.bucket}/${s.keyPrefix}`
    this.name = s.showEndpoint ? `${base} (${s.endpointLabel})` : base
    this.features = { fsync: true, conditionalWrite: s.conditionalWrite, remote: true }
  }

  async stat(key: string, o: OpOptions = {}): Promise<ObjectInfo | undefined> {
    assertValidKey(key)
    o.signal?.throwIfAborted()
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.s.bucket, Key: this.fullKey(key) }), {
        abortSignal: o.signal,
      })
      this.bucketChecked = true
      return { key, sizeBytes: r.ContentLength ?? 0, modifiedAt: r.LastModified ?? new Date(0) }
    } catch (err) {
      if (isMissingKey(err)) {
        await this.checkBucket(o.signal)
        return undefined
      }
      throw this.mapError(err, 'stat', key, o.signal)
    }
  }

  async *read(key: string, o: ReadOptions = {}): AsyncGenerator<Uint8Array> {
    assertValidKey(key)
    assertValidRange(o.offset, o.length)
    const { signal } = o
    signal?.throwIfAborted()
    const offset = o.offset ?? 0
    if (o.length === 0) {
      // Nothing to fetch, but a missing key must still be reported.
      if ((await this.stat(key, o)) === undefined) throw this.notFound(key)
      return
    }
    let res: GetObjectCommandOutput
    try {
      res = await this.get(key, rangeHeader(offset, o.length), signal)
    } catch (err) {
      if (errorNameOf(err) !== 'InvalidRange' && httpStatusOf(err) !== 416) throw this.mapError(err, 'read', key, signal)
      // 416: the range starts at or past the end, or (s3rver, unlike S3) ends past it. Ask the size and either
      // yield nothing or fetch the range clamped to the object.
      const info = await this.stat(key, o)
      if (info === undefined) throw this.notFound(key)
      if (offset >= info.sizeBytes) return
      const end = o.length === undefined ? info.sizeBytes : Math.min(info.sizeBytes, offset + o.length)
      try {
        res = await this.get(key, `bytes=${offset}-${end - 1}`, signal)
      } catch (err2) {
        throw this.mapError(err2, 'read', key, signal)
      }
    }
    yield* this.streamBody(key, res, offset, o.length, signal)
  }

  async write(key: string, body: Body, o: WriteOptions = {}): Promise<void> {
    assertValidKey(key)
    o.signal?.throwIfAborted()
    try {
      await this.writeOnce(key, body, o)
    } catch (err) {
      // The SDK retries a failed request once itself (sdkMaxAttempts): a 412 on that retry may answer our own first
      // attempt, which landed although its answer was lost. Equal bytes under the key mean exactly that.
      if (o.ifAbsent === true && err instanceof AlreadyExistsError && sdkAttemptsOf(err.cause) > 1) {
        if (o.collisionFree === true || (await holdsBody(this, key, body, o.signal))) return
      }
      throw err
    }
  }

  async probeConditionalWrite(key: string, o: OpOptions = {}): Promise<ConditionalWriteSupport> {
    assertValidKey(key)
    const { signal } = o
    signal?.throwIfAborted()
    const Key = this.fullKey(key)
    const bytes = (n: number): Buffer => Buffer.from(`pgkeep conditional write probe ${n}\n`)
    // What a conditional request to the existing key did: refused (412), ignored (success), not implemented (501).
    const outcome = async (send: () => Promise<unknown>): Promise<ConditionalWriteSupport> => {
      try {
        await send()
        return 'ignored'
      } catch (err) {
        if (isPreconditionFailed(err)) return 'enforced'
        if (isNotImplemented(err)) return 'unsupported'
        throw this.mapError(err, 'probe conditional writes at', key, signal)
      }
    }
    await this.put(key, bytes(1), {}, signal)
    try {
      const single = await outcome(() =>
        this.client.send(new PutObjectCommand({ Bucket: this.s.bucket, Key, Body: bytes(2), IfNoneMatch: '*' }), { abortSignal: signal }),
      )
      // CompleteMultipartUpload is the request that makes a large object visible; stores may treat it differently.
      const created = await this.client
        .send(new CreateMultipartUploadCommand({ Bucket: this.s.bucket, Key }), { abortSignal: signal })
        .catch((err: unknown) => {
          throw this.mapError(err, 'probe conditional writes at', key, signal)
        })
      const UploadId = created.UploadId
      let multi: ConditionalWriteSupport | undefined
      try {
        multi = await outcome(async () => {
          const part = await this.client.send(new UploadPartCommand({ Bucket: this.s.bucket, Key, UploadId, PartNumber: 1, Body: bytes(3) }), {
            abortSignal: signal,
          })
          await this.client.send(
            new CompleteMultipartUploadCommand({
              Bucket: this.s.bucket,
              Key,
              UploadId,
              MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] },
              IfNoneMatch: '*',
            }),
            { abortSignal: signal },
          )
        })
      } finally {
        // Completed only when the store ignored the condition; otherwise the upload is left open: abort it.
        if (multi !== 'ignored') {
          await this.client
            .send(new AbortMultipartUploadCommand({ Bucket: this.s.bucket, Key, UploadId }), {
              abortSignal: AbortSignal.timeout(ABORT_UPLOAD_TIMEOUT_MS),
            })
            .catch(() => {})
        }
      }
      if (single === 'unsupported' || multi === 'unsupported') return 'unsupported'
      return single === 'enforced' && multi === 'enforced' ? 'enforced' : 'ignored'
    } finally {
      await this.remove(key, { signal })
    }
  }

  private async writeOnce(key: string, body: Body, o: WriteOptions): Promise<void> {
    const { signal } = o
    if (o.ifAbsent === true && !this.s.conditionalWrite) {
      // The store may ignore If-None-Match: check first (a concurrent writer can still race this).
      if ((await this.stat(key, { signal })) !== undefined) {
        throw new AlreadyExistsError(`object '${this.location(key)}' already exists`)
      }
    }
    const condition = o.ifAbsent === true ? { IfNoneMatch: '*' } : {}
    if (body instanceof Uint8Array) {
      if (body.byteLength <= this.s.singlePutMaxBytes) return await this.put(key, body, condition, signal)
      return await this.multipart(key, body, condition, undefined, signal)
    }
    // A factory body: read up to one part ahead to choose between one PutObject and a multipart upload.
    const puller = pullBody(body, signal)
    try {
      const head: Uint8Array[] = []
      let headBytes = 0
      let ended = false
      while (headBytes <= this.s.partSizeBytes) {
        const chunk = await puller.next()
        if (chunk === undefined) {
          ended = true
          break
        }
        head.push(chunk)
        headBytes += chunk.byteLength
      }
      if (ended) return await this.put(key, Buffer.concat(head), condition, signal)
      const stream = Readable.from(chain(head, puller), { objectMode: false })
      try {
        await this.multipart(key, stream, condition, puller, signal)
      } finally {
        // Stops the pump when the upload gave up early.
        stream.destroy()
      }
    } catch (err) {
      // The producer's own failure is the caller's error: hand it back unchanged.
      if (puller.isProducerError(err)) throw err
      throw this.mapError(err, 'write', key, signal)
    } finally {
      puller.release()
    }
  }

  async *list(prefix: string, o: OpOptions = {}): AsyncGenerator<ObjectInfo> {
    assertValidPrefix(prefix)
    const { signal } = o
    let token: string | undefined
    do {
      signal?.throwIfAborted()
      let page
      try {
        page = await this.client.send(new ListObjectsV2Command({ Bucket: this.s.bucket, Prefix: this.fullKey(prefix), ContinuationToken: token }), {
          abortSignal: signal,
        })
      } catch (err) {
        throw this.mapError(err, 'list', prefix, signal)
      }
      for (const c of page.Contents ?? []) {
        if (c.Key === undefined || c.Key.endsWith('/') || !c.Key.startsWith(this.s.keyPrefix)) continue
        yield { key: c.Key.slice(this.s.keyPrefix.length), sizeBytes: c.Size ?? 0, modifiedAt: c.LastModified ?? new Date(0) }
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined
    } while (token !== undefined)
  }

  async removeLeftovers(olderThan: Date, o: OpOptions = {}): Promise<LeftoversRemoved> {
    const { signal } = o
    let removed = 0
    let keyMarker: string | undefined
    let uploadIdMarker: string | undefined
    for (;;) {
      signal?.throwIfAborted()
      let page
      try {
        page = await this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.s.bucket, Prefix: this.s.keyPrefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
          { abortSignal: signal },
        )
      } catch (err) {
        // Stores without the call (s3rver) have no uploads to list; the lifecycle rule of the bucket is the remedy.
        if (isNotImplemented(err) || httpStatusOf(err) === 404 || httpStatusOf(err) === 405) return { removed, bytes: 0 }
        throw this.mapError(err, 'list', '', signal)
      }
      for (const u of page.Uploads ?? []) {
        if (u.Key === undefined || u.UploadId === undefined || !u.Key.startsWith(this.s.keyPrefix)) continue
        if (u.Initiated === undefined || u.Initiated >= olderThan) continue
        try {
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.s.bucket, Key: u.Key, UploadId: u.UploadId }), { abortSignal: signal })
          removed++
        } catch (err) {
          if (!isMissingKey(err) && errorNameOf(err) !== 'NoSuchUpload') throw this.mapError(err, 'remove', u.Key.slice(this.s.keyPrefix.length), signal)
        }
      }
      if (page.IsTruncated !== true) return { removed, bytes: 0 }
      keyMarker = page.NextKeyMarker
      uploadIdMarker = page.NextUploadIdMarker
    }
  }

  async remove(key: string, o: OpOptions = {}): Promise<void> {
    assertValidKey(key)
    o.signal?.throwIfAborted()
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.s.bucket, Key: this.fullKey(key) }), {
        abortSignal: o.signal,
      })
    } catch (err) {
      if (isMissingKey(err)) return // S3 answers 204 anyway; some compatible stores say 404
      throw this.mapError(err, 'remove', key, o.signal)
    }
  }

  async close(): Promise<void> {
    this.client.destroy()
  }

  private fullKey(key: string): string {
    return this.s.keyPrefix + key
  }

  private location(key: string): string {
    return `s3://${this.s.bucket}/${this.fullKey(key)}`
  }

  private notFound(key: string): NotFoundError {
    return new NotFoundError(`object '${this.location(key)}' not found`)
  }

  private mapError(err: unknown, action: string, key: string, signal: AbortSignal | undefined, conditional = false): unknown {
    return mapS3Error(err, {
      action,
      location: this.location(key),
      bucket: this.s.bucket,
      endpoint: this.s.endpointLabel,
      signal,
      conditional,
    })
  }

  private get(key: string, range: string | undefined, signal: AbortSignal | undefined): Promise<GetObjectCommandOutput> {
    return this.client.send(new GetObjectCommand({ Bucket: this.s.bucket, Key: this.fullKey(key), Range: range }), {
      abortSignal: signal,
    })
  }

  /**
   * Yields the response body, at most `length` bytes (and never more than the object holds past `offset`: some
   * stores answer odd ranges generously), and fails as retryable when the connection ends early.
   */
  private async *streamBody(
    key: string,
    res: GetObjectCommandOutput,
    offset: number,
    length: number | undefined,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<Uint8Array> {
    const body = res.Body as Readable | undefined
    if (body === undefined) return
    let limit = res.ContentLength ?? Infinity
    if (length !== undefined) limit = Math.min(limit, length)
    const total = totalFromContentRange(res.ContentRange)
    if (total !== undefined) limit = Math.min(limit, Math.max(0, total - offset))
    const onAbort = (): void => {
      body.destroy(signal?.reason instanceof Error ? signal.reason : new Error('aborted'))
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    let received = 0
    try {
      if (limit > 0) {
        for await (const chunk of body as AsyncIterable<Uint8Array>) {
          const rest = limit - received
          const piece = chunk.byteLength > rest ? chunk.subarray(0, rest) : chunk
          received += piece.byteLength
          if (piece.byteLength > 0) yield piece
          if (received >= limit) break
        }
      }
      if (received < limit && limit !== Infinity) {
        throw new StorageError(
          `unable to read '${this.location(key)}': connection to S3 endpoint '${this.s.endpointLabel}' ended after ${received} of ${limit} bytes`,
          { retryable: true, hint: `check that S3 endpoint '${this.s.endpointLabel}' is up and reachable` },
        )
      }
    } catch (err) {
      throw this.mapError(err, 'read', key, signal)
    } finally {
      signal?.removeEventListener('abort', onAbort)
      // Early return or failure: drop the connection instead of draining an unwanted body.
      if (!body.readableEnded) body.destroy()
    }
  }

  private async put(key: string, bytes: Uint8Array, condition: object, signal: AbortSignal | undefined): Promise<void> {
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.s.bucket, Key: this.fullKey(key), Body: bytes, ...condition }), { abortSignal: signal })
    } catch (err) {
      throw this.mapError(err, 'write', key, signal, 'IfNoneMatch' in condition)
    }
  }

  private async multipart(
    key: string,
    body: Uint8Array | Readable,
    condition: object,
    puller: BodyPuller | undefined,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const Key = this.fullKey(key)
    const controller = new AbortController()
    const onAbort = (): void => controller.abort()
    signal?.addEventListener('abort', onAbort, { once: true })
    const upload = new Upload({
      client: this.client,
      // IfNoneMatch reaches CompleteMultipartUpload, the only request that can make the key visible.
      params: { Bucket: this.s.bucket, Key, Body: body, ...condition },
      partSize: this.s.partSizeBytes,
      queueSize: this.s.queueSize,
      // lib-storage's own abort-on-error lets a failing AbortMultipartUpload replace the original error (s3rver
      // answers MethodNotAllowed to every abort), so abort here instead and ignore the outcome.
      leavePartsOnError: true,
      abortController: controller,
    })
    try {
      await upload.done()
    } catch (err) {
      const uploadId = upload.uploadId
      if (uploadId !== undefined) {
        await this.client
          .send(new AbortMultipartUploadCommand({ Bucket: this.s.bucket, Key, UploadId: uploadId }), {
            abortSignal: AbortSignal.timeout(ABORT_UPLOAD_TIMEOUT_MS),
          })
          .catch(() => {})
      }
      if (puller?.isProducerError(err) === true) throw err
      throw this.mapError(err, 'write', key, signal, 'IfNoneMatch' in condition)
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /** HeadObject says 404 for a missing bucket too; tell the two apart once per storage. */
  private async checkBucket(signal: AbortSignal | undefined): Promise<void> {
    if (this.bucketChecked) return
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.s.bucket }), { abortSignal: signal })
    } catch (err) {
      if (httpStatusOf(err) === 404 || errorNameOf(err) === 'NoSuchBucket' || errorNameOf(err) === 'NotFound') {
        throw this.mapError(Object.assign(new Error('bucket does not exist'), { name: 'NoSuchBucket' }), 'stat', '', signal)
      }
      // 403: the credentials may lack s3:ListBucket; the key lookup itself worked, so do not fail on this.
      if (httpStatusOf(err) !== 403) throw this.mapError(err, 'stat', '', signal)
    }
    this.bucketChecked = true
  }
}

/** S3's bucket naming rules (3–63 lowercase letters, digits, dots, hyphens; alphanumeric at both ends). */
export function isValidBucketName(bucket: string): boolean {
  return /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)
}

/** Yields the already-read head chunks, then the rest of the body. */
async function* chain(head: Uint8Array[], puller: BodyPuller): AsyncGenerator<Uint8Array> {
  for (const c of head) yield c
  head.length = 0
  for (let chunk = await puller.next(); chunk !== undefined; chunk = await puller.next()) yield chunk
}

function rangeHeader(offset: number, length: number | undefined): string | undefined {
  if (length === undefined) return offset === 0 ? undefined : `bytes=${offset}-`
  return `bytes=${offset}-${offset + length - 1}`
}

/** The total size in `Content-Range: bytes a-b/total`, when given. */
function totalFromContentRange(contentRange: string | undefined): number | undefined {
  const m = contentRange === undefined ? null : /\/(\d+)\s*$/.exec(contentRange)
  return m === null ? undefined : Number(m[1])
}

/** 'a/b/' for 'a/b', '/a/b/' or 'a/b/'; '' for '' or '/'. */
function normalizePrefix(prefix: string): string {
  const trimmed = prefix.replace(/^\/+|\/+$/g, '')
  if (trimmed === '') return ''
  assertValidPrefix(trimmed + '/')
  return trimmed + '/'
}

/** The endpoint without user info, query or fragment: safe to print. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`
  } catch {
    throw new StorageError(`invalid S3 endpoint URL`, { hint: 'give the endpoint as http(s)://host[:port]' })
  }
}
