// Blobs, the unit of content: types, ids, and the codec that turns plain bytes into stored bytes (zstd when it
// shrinks them, then AES-256-GCM when the repository is encrypted) and back, verifying everything on the way back.

import zstdBinding from 'zstd-napi/binding.js'
import { IntegrityError, UsageError } from '../errors.js'
import { blobIdOf, seal, unseal, type RepoKeys } from './crypto.js'
import { isHexId } from './layout.js'

/** A blob id: 64 lowercase hex characters (SHA-256, or HMAC-SHA-256 in an encrypted repository). */
export type BlobId = string

/**
 * What a blob holds. `data` is file and WAL content; `meta` is structure (page maps, file lists, records too large
 * to inline). They go to separate packs so metadata can be read without touching data packs.
 */
export type BlobType = 'data' | 'meta'

/** Type byte of a blob in pack headers and index objects. */
export const BLOB_TYPE_CODE: Readonly<Record<BlobType, number>> = { data: 0, meta: 1 }
const BLOB_TYPE_BY_CODE: readonly BlobType[] = ['data', 'meta']

/** Flag bits of a blob entry; every other bit must be zero. */
export const BlobFlags = {
  /** The stored bytes (after decryption) are one zstd frame. */
  ZSTD: 0x01,
} as const
export const KNOWN_BLOB_FLAGS = BlobFlags.ZSTD

/** The largest blob, in plain bytes. Engines cut content into blobs of about 1 MiB. */
export const MAX_BLOB_BYTES = 64 * 1024 * 1024

export function blobTypeOfCode(code: number): BlobType | undefined {
  return BLOB_TYPE_BY_CODE[code]
}

/** Throws UsageError unless `type` is a blob type. */
export function assertBlobType(type: string): asserts type is BlobType {
  if (type !== 'data' && type !== 'meta') {
    throw new UsageError(`invalid blob type '${String(type)}'`, { hint: "use 'data' or 'meta' (this is a bug in the caller)" })
  }
}

/** Throws UsageError unless `id` looks like a blob id. */
export function assertBlobId(id: string): void {
  if (typeof id !== 'string' || !isHexId(id)) {
    throw new UsageError(`invalid blob id '${String(id)}'`, { hint: 'a blob id is 64 lowercase hex characters (this is a bug in the caller)' })
  }
}

/** Blob bytes as stored in a pack. */
export interface EncodedBlob {
  readonly stored: Buffer
  readonly flags: number
}

/**
 * Data that compresses little (pages of random or already compressed values) costs zstd's normal levels the most
 * time per byte: on the bench data's random table, level 1 ran at 1.6 ms per MiB to 88.8% of the size, its fast
 * mode at level -7 at 0.44 ms to 90.5%; on pgbench's table (2.3% at level 1) and index (15%) the fast mode gives up
 * far more size. So a blob of at least PROBE_MIN_BYTES (a window) first compresses its first PROBE_BYTES at the
 * repository's level; when those stay above HARD_DATA_RATIO of their size, the blob is compressed at
 * HARD_DATA_LEVEL. The probe costs about 1/16 of a window's compression; the choice depends only on the bytes.
 */
const PROBE_MIN_BYTES = 256 * 1024
const PROBE_BYTES = 64 * 1024
const HARD_DATA_RATIO = 0.8
const HARD_DATA_LEVEL = -7

/**
 * Encodes and decodes blobs for one repository. Holds a zstd context and a scratch buffer, so one codec serves one
 * thread (the repository makes one). The work is synchronous: about 1 ms per MiB.
 */
export class BlobCodec {
  readonly #keys: RepoKeys | undefined
  readonly #level: number | undefined
  readonly #cctx = new zstdBinding.CCtx()
  readonly #dctx = new zstdBinding.DCtx()
  #scratch = Buffer.alloc(0)

  /** `level` undefined means blobs are never compressed. */
  constructor(keys: RepoKeys | undefined, level: number | undefined) {
    this.#keys = keys
    this.#level = level
  }

  /** The id of `plain` in this repository. */
  idOf(plain: Uint8Array): Buffer {
    return blobIdOf(plain, this.#keys)
  }

  /**
   * Returns the stored form of `plain`: zstd-compressed when compression is on and the frame is smaller than the
   * input, then sealed when the repository is encrypted.
   *
   * `stored` is a view that may lie in this codec's scratch buffer or be `plain` itself: it is valid until the next
   * `encode` and while `plain` is unchanged. Callers copy it where it goes (a pack buffer) before they yield; not
   * copying every blob into memory of its own saved an allocation and a copy per blob.
   */
  encode(plain: Uint8Array, compress = true): EncodedBlob {
    let body: Uint8Array = plain
    let flags = 0
    if (compress && this.#level !== undefined && plain.length > 16) {
      // A destination one byte shorter than the input makes zstd fail on anything that would not shrink.
      if (this.#scratch.length < plain.length) this.#scratch = Buffer.allocUnsafe(plain.length)
      const dst = this.#scratch.subarray(0, plain.length - 1)
      let n = -1
      try {
        n = this.#cctx.compress(dst, plain, this.#levelFor(plain, dst))
      } catch {
        // "Destination buffer is too small": incompressible, store as is.
      }
      if (n >= 0) {
        body = dst.subarray(0, n)
        flags |= BlobFlags.ZSTD
      }
    }
    const stored = this.#keys ? seal(this.#keys.dataKey, body) : Buffer.from(body.buffer, body.byteOffset, body.length)
    return { stored, flags }
  }

  /**
   * The level for `plain`: the repository's, or HARD_DATA_LEVEL for a large blob whose first PROBE_BYTES compress
   * to more than HARD_DATA_RATIO of their size at the repository's level (`scratch` takes the probe's frame).
   */
  #levelFor(plain: Uint8Array, scratch: Buffer): number {
    const level = this.#level!
    if (plain.length < PROBE_MIN_BYTES || level <= HARD_DATA_LEVEL) return level
    let n: number
    try {
      n = this.#cctx.compress(scratch.subarray(0, PROBE_BYTES), plain.subarray(0, PROBE_BYTES), level)
    } catch {
      return HARD_DATA_LEVEL // the sample did not shrink at all
    }
    return n > PROBE_BYTES * HARD_DATA_RATIO ? HARD_DATA_LEVEL : level
  }

  /**
   * Returns the verified plain bytes of a stored blob: decrypts, decompresses into exactly `plainLength` bytes,
   * re-computes the id and compares. Any failure is an IntegrityError whose message starts with `where`.
   *
   * With `into` (at least `plainLength` bytes), the plain bytes are written there and the result is a view over it
   * (a reader's pooled buffer: no fresh allocation, no page faults). Without it, an uncompressed blob comes back as
   * a view over `stored`.
   */
  decode(stored: Uint8Array, flags: number, plainLength: number, expectedId: Uint8Array, where: string, into?: Buffer): Buffer {
    let body: Uint8Array = stored
    if (this.#keys) {
      const opened = unseal(this.#keys.dataKey, stored)
      if (!opened) throw new IntegrityError(`${where} failed authentication (damaged or forged bytes)`)
      body = opened
    }
    let plain: Buffer
    if (flags & BlobFlags.ZSTD) {
      if (plainLength > MAX_BLOB_BYTES) throw new IntegrityError(`${where} declares an impossible length ${plainLength}`)
      plain = into && into.length >= plainLength ? into.subarray(0, plainLength) : Buffer.allocUnsafe(plainLength)
      let n: number
      try {
        n = this.#dctx.decompress(plain, body)
      } catch (cause) {
        throw new IntegrityError(`${where} does not decompress: ${(cause as Error).message}`, { cause })
      }
      if (n !== plainLength) throw new IntegrityError(`${where} decompresses to ${n} bytes instead of ${plainLength}`)
    } else {
      if (body.length !== plainLength) {
        throw new IntegrityError(`${where} holds ${body.length} bytes instead of ${plainLength}`)
      }
      plain = Buffer.from(body.buffer, body.byteOffset, body.length)
      if (into && into.length >= plainLength) {
        plain.copy(into)
        plain = into.subarray(0, plainLength)
      }
    }
    // Hashed where it will be used from: what the caller gets is exactly what was verified.
    const id = this.idOf(plain)
    if (!id.equals(expectedId)) {
      throw new IntegrityError(`${where} does not match its id (content hash is '${id.toString('hex')}')`)
    }
    return plain
  }
}
