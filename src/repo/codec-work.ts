// The per-byte work on blobs, as pure functions over a BlobCodec, and the messages that carry it to the worker
// threads of a CodecPool (codec-worker.ts) and back: analysing a window of file content (page hashes, blob id,
// the all-zero test), encoding a blob as the repository stores it, decoding and verifying stored bytes,
// and hashing the pages of a file on disk (delta restore). The same functions run on the calling thread when no
// pool is used, so both paths give the same bytes.

import { isAllZero } from '../pg/page.js'
import type { BlobCodec, BlobId } from './blob.js'
import { PAGE_BYTES, PAGE_HASH_BYTES, type PageHashAlgorithm, WINDOW_BYTES } from './file-map.js'
import { hashPagesInto, pageCrcsOf } from './page-hash.js'

/**
 * The page hashes of `bytes` in `algorithm` (page-hash.ts), in a buffer of their own, and whether every page was
 * all zeros.
 */
export function pageHashesOf(bytes: Uint8Array, algorithm: PageHashAlgorithm): Buffer {
  return hashedPages(bytes, algorithm).hashes
}

function hashedPages(bytes: Uint8Array, algorithm: PageHashAlgorithm): { hashes: Buffer; allZero: boolean } {
  // alloc, not allocUnsafe: a buffer of its own (never a slice of Node's shared pool), so it can be transferred.
  const hashes = Buffer.alloc(Math.ceil(bytes.length / PAGE_BYTES) * PAGE_HASH_BYTES)
  const zeros = hashPagesInto(bytes, hashes, 0, algorithm)
  return { hashes, allZero: zeros * PAGE_BYTES === bytes.length }
}

/** What to compute for a window. */
export interface AnalyzeRequest {
  /** Compute the window's blob id (unless it is all zeros). */
  readonly id: boolean
  /** Compute the page hashes in this algorithm (unless the window is all zeros). */
  readonly pageHashes?: PageHashAlgorithm
  /**
   * A version 1 parent's hash of this window (its blob id): compute the id, and unless it equals this, the pages'
   * `sha256-64` hashes too, to compare with the parent's.
   */
  readonly legacyUnlessId?: BlobId | null
  /** Compute each page's CRC-32C (unless the window is all zeros). */
  readonly pageCrcs?: boolean
}

/** What placing a window needs. */
export interface WindowAnalysis {
  readonly allZero: boolean
  /** The blob id of the window; undefined when not asked for, or for an all-zero window. */
  readonly id: BlobId | undefined
  /** PAGE_HASH_BYTES per page; undefined when not asked for, or for an all-zero window. */
  readonly pageHashes: Buffer | undefined
  /** `sha256-64` page hashes for a version 1 parent (see AnalyzeRequest.legacyUnlessId); else undefined. */
  readonly legacyPageHashes: Buffer | undefined
  /** PAGE_CRC_BYTES per page; undefined when not asked for, or for an all-zero window. */
  readonly pageCrcs: Buffer | undefined
}

/** Analyses one window with the repository's codec (its id is SHA-256, or HMAC-SHA-256 when encrypted). */
export function analyzeWindow(bytes: Buffer, codec: BlobCodec, r: AnalyzeRequest): WindowAnalysis {
  let pageHashes: Buffer | undefined
  let allZero: boolean
  if (r.pageHashes) {
    // The page hashes bring the all-zero test along (in the same pass over the bytes).
    const h = hashedPages(bytes, r.pageHashes)
    pageHashes = h.hashes
    allZero = h.allZero
  } else {
    allZero = isAllZero(bytes)
  }
  if (allZero) return { allZero: true, id: undefined, pageHashes: undefined, legacyPageHashes: undefined, pageCrcs: undefined }
  const id = r.id || r.legacyUnlessId !== undefined ? codec.idOf(bytes).toString('hex') : undefined
  const legacyPageHashes = r.legacyUnlessId !== undefined && id !== r.legacyUnlessId ? pageHashesOf(bytes, 'sha256-64') : undefined
  const pageCrcs = r.pageCrcs ? pageCrcsOf(bytes) : undefined
  return { allZero: false, id, pageHashes, legacyPageHashes, pageCrcs }
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
  | { op: 'hash'; job: number; buffer: ArrayBuffer; offset: number; length: number; algorithm: PageHashAlgorithm }

/** A worker's answer; `buffer` is the job's buffer, transferred back. */
export type CodecJobResult =
  | {
      op: 'analyze'
      job: number
      buffer: ArrayBuffer
      allZero: boolean
      id: BlobId | undefined
      pageHashes: ArrayBuffer | undefined
      legacyPageHashes: ArrayBuffer | undefined
      pageCrcs: ArrayBuffer | undefined
    }
  /** `stored` undefined: the stored bytes are in `buffer`, `storedLength` of them from `storedOffset`. */
  | { op: 'encode'; job: number; buffer: ArrayBuffer; stored: ArrayBuffer | undefined; storedOffset: number; storedLength: number; flags: number }
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

/**
 * Puts the stored form of an encoded window into the window's own memory, whose plain bytes are not needed any more,
 * so that it waits for its pack without a buffer of its own: a new buffer per blob was memory held until the next
 * full collection (peaks 15-20 MB higher per blob waiting). Returns the view over the stored bytes, or undefined when
 * they do not fit (an encrypted window of incompressible bytes, 28 bytes longer, beyond the window's buffer). Stored
 * bytes that are the window itself (a blob kept as it is) stay where they are. Only a window buffer (WINDOW_BYTES,
 * its owner's alone) is written beyond the window's own bytes.
 */
export function storedInWindow(stored: Uint8Array, window: Buffer): Buffer | undefined {
  if (stored.buffer === window.buffer && stored.byteOffset === window.byteOffset) return window.subarray(0, stored.length)
  const room = window.buffer.byteLength === WINDOW_BYTES ? Buffer.from(window.buffer, window.byteOffset) : window
  if (stored.length > room.length) return undefined
  room.set(stored)
  return room.subarray(0, stored.length)
}

/** Runs one job with `codec`; what a worker does, and what the calling thread does without one. */
export function runCodecJob(m: CodecJob, codec: BlobCodec): { result: CodecJobResult; transfer: ArrayBuffer[] } {
  switch (m.op) {
    case 'analyze': {
      const a = analyzeWindow(Buffer.from(m.buffer, m.offset, m.length), codec, m.request)
      const pageHashes = a.pageHashes ? ownArrayBuffer(a.pageHashes) : undefined
      const legacyPageHashes = a.legacyPageHashes ? ownArrayBuffer(a.legacyPageHashes) : undefined
      const pageCrcs = a.pageCrcs ? ownArrayBuffer(a.pageCrcs) : undefined
      const transfer = [m.buffer]
      for (const b of [pageHashes, legacyPageHashes, pageCrcs]) if (b) transfer.push(b)
      return {
        result: { op: 'analyze', job: m.job, buffer: m.buffer, allZero: a.allZero, id: a.id, pageHashes, legacyPageHashes, pageCrcs },
        transfer,
      }
    }
    case 'encode': {
      const window = Buffer.from(m.buffer, m.offset, m.length)
      const e = codec.encode(window)
      const base = { op: 'encode', job: m.job, buffer: m.buffer, storedLength: e.stored.length, flags: e.flags } as const
      // The window's buffer carries the stored bytes back when they fit (see storedInWindow).
      const kept = storedInWindow(e.stored, window)
      if (kept) return { result: { ...base, stored: undefined, storedOffset: kept.byteOffset }, transfer: [m.buffer] }
      const stored = new Uint8Array(e.stored).buffer
      return { result: { ...base, stored, storedOffset: 0 }, transfer: [m.buffer, stored] }
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
      const hashes = ownArrayBuffer(pageHashesOf(Buffer.from(m.buffer, m.offset, m.length), m.algorithm))
      return { result: { op: 'hash', job: m.job, buffer: m.buffer, hashes }, transfer: [m.buffer, hashes] }
    }
  }
}
