// The per-byte work on blobs, as pure functions over a BlobCodec, and the messages that carry it to the worker
// threads of a CodecPool (codec-worker.ts) and back: analysing a window of file content (page hashes, blob id,
// CRC-32C, the all-zero test), encoding a blob as the repository stores it, decoding and verifying stored bytes,
// and hashing the pages of a file on disk (delta restore). The same functions run on the calling thread when no
// pool is used, so both paths give the same bytes.

import { hash } from 'node:crypto'
import { crc32c } from '../pg/crc32c.js'
import { isAllZero } from '../pg/page.js'
import type { BlobCodec, BlobId } from './blob.js'
import { PAGE_BYTES, PAGE_HASH_BYTES } from './file-map.js'

const ZERO_HASH = Buffer.alloc(PAGE_HASH_BYTES)

/**
 * The page hashes of a file map for `bytes`, written into `out` at `outOffset`: the first PAGE_HASH_BYTES of the
 * SHA-256 of each 8 KB page (the last may be short), zeros for an all-zero page.
 */
export function hashPages(bytes: Uint8Array, out: Buffer, outOffset = 0): void {
  for (let p = 0; p * PAGE_BYTES < bytes.length; p++) {
    const page = bytes.subarray(p * PAGE_BYTES, (p + 1) * PAGE_BYTES)
    const at = outOffset + p * PAGE_HASH_BYTES
    if (isAllZero(page)) ZERO_HASH.copy(out, at)
    else hash('sha256', page, 'buffer').copy(out, at, 0, PAGE_HASH_BYTES)
  }
}

/** The page hashes of `bytes` in a buffer of their own. */
export function pageHashesOf(bytes: Uint8Array): Buffer {
  // alloc, not allocUnsafe: a buffer of its own (never a slice of Node's shared pool), so it can be transferred.
  const out = Buffer.alloc(Math.ceil(bytes.length / PAGE_BYTES) * PAGE_HASH_BYTES)
  hashPages(bytes, out)
  return out
}

/** What to compute for a window. */
export interface AnalyzeRequest {
  /** Compute the window's CRC-32C. */
  readonly crc: boolean
  /** Compute the page hashes (unless the window is all zeros, or its id equals `unchangedIf`). */
  readonly pageHashes: boolean
  /** The parent backup's hash of this window: when the id equals it, the page hashes are not needed. */
  readonly unchangedIf?: BlobId
}

/** What placing a window needs. */
export interface WindowAnalysis {
  readonly allZero: boolean
  /** CRC-32C of the window; undefined when not asked for. */
  readonly crc32c: number | undefined
  /** The blob id of the window; undefined for an all-zero window. */
  readonly id: BlobId | undefined
  /** PAGE_HASH_BYTES per page; undefined when not asked for, skipped (unchanged), or all zeros. */
  readonly pageHashes: Buffer | undefined
}

/** Analyses one window with the repository's codec (its id is SHA-256, or HMAC-SHA-256 when encrypted). */
export function analyzeWindow(bytes: Buffer, codec: BlobCodec, r: AnalyzeRequest): WindowAnalysis {
  const crc = r.crc ? crc32c(bytes) : undefined
  if (isAllZero(bytes)) return { allZero: true, crc32c: crc, id: undefined, pageHashes: undefined }
  const id = codec.idOf(bytes).toString('hex')
  const pageHashes = r.pageHashes && id !== r.unchangedIf ? pageHashesOf(bytes) : undefined
  return { allZero: false, crc32c: crc, id, pageHashes }
}

/** What a worker is started with: the codec's parameters (the keys are secret: never logged, never sent back). */
export interface CodecWorkerData {
  readonly keys: { readonly dataKey: Uint8Array; readonly idKey: Uint8Array } | undefined
  readonly compressionLevel: number | undefined
}

/**
 * A job sent to a worker. Windows travel as `buffer` (transferred) with the bytes at `offset`, `length`; stored
 * bytes to decode travel in `stored` (its first `storedLength` bytes, transferred), and the plain bytes are written
 * into `plain` when the caller lends a buffer (transferred; both come back with the answer).
 */
export type CodecJob =
  | { op: 'analyze'; job: number; buffer: ArrayBuffer; offset: number; length: number; request: AnalyzeRequest }
  | { op: 'encode'; job: number; buffer: ArrayBuffer; offset: number; length: number }
  | { op: 'decode'; job: number; stored: ArrayBuffer; storedLength: number; plain: ArrayBuffer | undefined; flags: number; plainLength: number; id: BlobId }
  | { op: 'hash'; job: number; buffer: ArrayBuffer; offset: number; length: number }

/** A worker's answer; `buffer` is the job's buffer, transferred back. */
export type CodecJobResult =
  | {
      op: 'analyze'
      job: number
      buffer: ArrayBuffer
      allZero: boolean
      crc32c: number | undefined
      id: BlobId | undefined
      pageHashes: ArrayBuffer | undefined
    }
  | { op: 'encode'; job: number; buffer: ArrayBuffer; stored: ArrayBuffer; flags: number }
  | { op: 'decode'; job: number; plain: ArrayBuffer; stored: ArrayBuffer | undefined }
  | { op: 'hash'; job: number; buffer: ArrayBuffer; hashes: ArrayBuffer }
  | { op: 'error'; job: number; buffer: ArrayBuffer | undefined; message: string }

/** `b` as an ArrayBuffer of its own, ready to transfer (a copy when it is a view into a larger one). */
export function ownArrayBuffer(b: Uint8Array): ArrayBuffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) return b.buffer
  const copy = new ArrayBuffer(b.byteLength)
  new Uint8Array(copy).set(b)
  return copy
}

/** Runs one job with `codec`; what a worker does, and what the calling thread does without one. */
export function runCodecJob(m: CodecJob, codec: BlobCodec): { result: CodecJobResult; transfer: ArrayBuffer[] } {
  switch (m.op) {
    case 'analyze': {
      const a = analyzeWindow(Buffer.from(m.buffer, m.offset, m.length), codec, m.request)
      const pageHashes = a.pageHashes ? ownArrayBuffer(a.pageHashes) : undefined
      return {
        result: { op: 'analyze', job: m.job, buffer: m.buffer, allZero: a.allZero, crc32c: a.crc32c, id: a.id, pageHashes },
        transfer: pageHashes ? [m.buffer, pageHashes] : [m.buffer],
      }
    }
    case 'encode': {
      const e = codec.encode(Buffer.from(m.buffer, m.offset, m.length))
      const stored = ownArrayBuffer(e.stored)
      return { result: { op: 'encode', job: m.job, buffer: m.buffer, stored, flags: e.flags }, transfer: [m.buffer, stored] }
    }
    case 'decode': {
      const lent = m.plain !== undefined && m.plain.byteLength >= m.plainLength ? m.plain : undefined
      const decoded = codec.decode(
        Buffer.from(m.stored, 0, m.storedLength),
        m.flags,
        m.plainLength,
        Buffer.from(m.id, 'hex'),
        `blob '${m.id}'`,
        lent && Buffer.from(lent),
      )
      // Without a lent buffer an uncompressed blob is a view over `stored`: then it goes back alone, as the plain bytes.
      const plain = lent ?? ownArrayBuffer(decoded)
      const stored = plain === m.stored ? undefined : m.stored
      return { result: { op: 'decode', job: m.job, plain, stored }, transfer: stored ? [plain, stored] : [plain] }
    }
    case 'hash': {
      const hashes = ownArrayBuffer(pageHashesOf(Buffer.from(m.buffer, m.offset, m.length)))
      return { result: { op: 'hash', job: m.job, buffer: m.buffer, hashes }, transfer: [m.buffer, hashes] }
    }
  }
}
