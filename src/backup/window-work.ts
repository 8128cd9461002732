// The per-byte work of ingest on one window (up to 1 MiB) of a file: page hashes, the blob id, CRC-32C and the
// all-zero test, as pure functions over a BlobCodec, and the messages that carry windows to the worker threads of a
// WindowPool (window-worker.ts) and back. The ingest uses hashPages on the main thread when no pool is used.

import { hash } from 'node:crypto'
import { crc32c } from '../pg/crc32c.js'
import { isAllZero } from '../pg/page.js'
import type { BlobCodec, BlobId } from '../repo/blob.js'
import { PAGE_BYTES, PAGE_HASH_BYTES } from '../repo/file-map.js'

const ZERO_HASH = Buffer.alloc(PAGE_HASH_BYTES)

/** First PAGE_HASH_BYTES of SHA-256 of each page of `bytes`, or zeros for an all-zero page. */
export function hashPages(bytes: Buffer, out: Buffer, outOffset: number): void {
  for (let p = 0; p * PAGE_BYTES < bytes.length; p++) {
    const page = bytes.subarray(p * PAGE_BYTES, (p + 1) * PAGE_BYTES)
    const at = outOffset + p * PAGE_HASH_BYTES
    if (isAllZero(page)) ZERO_HASH.copy(out, at)
    else hash('sha256', page, 'buffer').copy(out, at, 0, PAGE_HASH_BYTES)
  }
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

/** What the main thread needs to place a window. */
export interface WindowAnalysis {
  readonly allZero: boolean
  /** CRC-32C of the window; undefined when not asked for. */
  readonly crc32c: number | undefined
  /** The blob id of the window; undefined for an all-zero window. */
  readonly id: BlobId | undefined
  /** PAGE_HASH_BYTES per page (of whole or partial pages); undefined when not asked for, skipped, or all zeros. */
  readonly pageHashes: Buffer | undefined
}

/** Analyzes one window with the repository's codec (its id is SHA-256, or HMAC-SHA-256 when encrypted). */
export function analyzeWindow(bytes: Buffer, codec: BlobCodec, r: AnalyzeRequest): WindowAnalysis {
  const crc = r.crc ? crc32c(bytes) : undefined
  if (isAllZero(bytes)) return { allZero: true, crc32c: crc, id: undefined, pageHashes: undefined }
  const id = codec.idOf(bytes).toString('hex')
  let pageHashes: Buffer | undefined
  if (r.pageHashes && id !== r.unchangedIf) {
    // alloc, not allocUnsafe: a buffer of its own (never a slice of the shared pool), so it can be transferred.
    pageHashes = Buffer.alloc(Math.ceil(bytes.length / PAGE_BYTES) * PAGE_HASH_BYTES)
    hashPages(bytes, pageHashes, 0)
  }
  return { allZero: false, crc32c: crc, id, pageHashes }
}

/** What a worker is started with: the codec's parameters (the keys are secret: never logged, never sent back). */
export interface WindowWorkerData {
  readonly keys: { readonly dataKey: Uint8Array; readonly idKey: Uint8Array } | undefined
  readonly compressionLevel: number | undefined
}

/** A job sent to a worker; the window travels as `buffer` (transferred) with the window at `offset`, `length`. */
export type WindowJob =
  | { op: 'analyze'; job: number; buffer: ArrayBuffer; offset: number; length: number; request: AnalyzeRequest }
  | { op: 'encode'; job: number; buffer: ArrayBuffer; offset: number; length: number }

/** A worker's answer; `buffer` is the job's buffer, transferred back. */
export type WindowJobResult =
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
  | { op: 'error'; job: number; buffer: ArrayBuffer; message: string }
