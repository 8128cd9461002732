// Records (`records/<kind>/<key>`): small immutable JSON documents for the layers above (backup manifests, WAL
// catalog). Each carries its own kind and key, the blob ids it references, and a checksum or AEAD tag, so a record
// read back is verified and cannot be swapped with another (docs/repository-format.md §7 is normative).

import zstdBinding from 'zstd-napi/binding.js'
import { IntegrityError, UsageError } from '../errors.js'
import { seal, sha256, unseal, type RepoKeys } from './crypto.js'

const RECORD_MAGIC = Buffer.from('PKRC', 'latin1')
const RECORD_VERSION = 1
const FLAG_ZSTD = 0x01
const FLAG_SEALED = 0x02
/** `magic [4] | version u8 | flags u8 | reserved [2]` */
const RECORD_PREFIX_BYTES = 8
/** Records larger than this (JSON bytes) are refused: large data belongs in blobs the record references. */
export const MAX_RECORD_BYTES = 16 * 1024 * 1024
/** Records above this size are zstd-compressed when that shrinks them. */
const COMPRESS_ABOVE_BYTES = 512

/** A record as read back. */
export interface RepoRecord<T = unknown> {
  readonly kind: string
  readonly key: string
  readonly createdAt: string
  /** Blob ids this record references; `verify` checks each is indexed, and GC keeps them. */
  readonly blobRefs: readonly string[]
  readonly value: T
}

/** Encodes a record stored under `storageKey`. */
export function encodeRecord(record: RepoRecord, storageKey: string, keys: RepoKeys | undefined, zstdLevel: number | undefined): Buffer {
  const json = Buffer.from(JSON.stringify(record), 'utf8')
  if (json.length > MAX_RECORD_BYTES) {
    throw new UsageError(`record '${storageKey}' is ${json.length} bytes, more than the limit of ${MAX_RECORD_BYTES}`, {
      hint: 'store large data in blobs and reference their ids from the record (this is a bug in the caller)',
    })
  }
  let payload: Buffer = json
  let flags = 0
  if (zstdLevel !== undefined && json.length > COMPRESS_ABOVE_BYTES) {
    const dst = Buffer.allocUnsafe(json.length - 1)
    try {
      const n = new zstdBinding.CCtx().compress(dst, json, zstdLevel)
      payload = Buffer.from(dst.subarray(0, n))
      flags |= FLAG_ZSTD
    } catch {
      // does not shrink: keep it plain
    }
  }
  const head = Buffer.alloc(RECORD_PREFIX_BYTES)
  RECORD_MAGIC.copy(head, 0)
  head[4] = RECORD_VERSION
  if (keys) {
    head[5] = flags | FLAG_SEALED
    return Buffer.concat([head, seal(keys.dataKey, payload, recordAad(head, storageKey))])
  }
  head[5] = flags
  return Buffer.concat([head, payload, sha256(payload)])
}

/** The AAD of a sealed record: its 8-byte prefix and its storage key, so it cannot be moved or re-flagged. */
function recordAad(head: Buffer, storageKey: string): Buffer {
  return Buffer.concat([head, Buffer.from(storageKey, 'utf8')])
}

/** Decodes and verifies a record read from `storageKey`. Any damage is an IntegrityError naming the object. */
export function decodeRecord<T>(bytes: Buffer, storageKey: string, kind: string, key: string, keys: RepoKeys | undefined): RepoRecord<T> {
  const fail = (why: string) => new IntegrityError(`record '${storageKey}' is damaged: ${why}`)
  if (bytes.length < RECORD_PREFIX_BYTES || !bytes.subarray(0, 4).equals(RECORD_MAGIC)) throw fail('bad magic')
  if (bytes[4] !== RECORD_VERSION) throw fail(`unknown version ${bytes[4]}`)
  const flags = bytes[5]!
  if ((flags & ~(FLAG_ZSTD | FLAG_SEALED)) !== 0) throw fail(`unknown flags 0x${flags.toString(16)}`)
  if (Boolean(flags & FLAG_SEALED) !== Boolean(keys)) {
    throw fail(keys ? 'it is not encrypted in an encrypted repository' : 'it is encrypted in a plain repository')
  }
  const head = bytes.subarray(0, RECORD_PREFIX_BYTES)
  const body = bytes.subarray(RECORD_PREFIX_BYTES)
  let payload: Buffer
  if (keys) {
    const opened = unseal(keys.dataKey, body, recordAad(head, storageKey))
    if (!opened) throw fail('it fails authentication')
    payload = opened
  } else {
    if (body.length < 32) throw fail('it is truncated')
    payload = body.subarray(0, body.length - 32)
    if (!sha256(payload).equals(body.subarray(body.length - 32))) throw fail('its checksum does not match')
  }
  if (flags & FLAG_ZSTD) {
    try {
      payload = decompressBounded(payload)
    } catch (cause) {
      throw fail(`it does not decompress: ${(cause as Error).message}`)
    }
  }
  let record: RepoRecord<T>
  try {
    record = JSON.parse(payload.toString('utf8')) as RepoRecord<T>
  } catch {
    throw fail('it is not valid JSON')
  }
  if (record?.kind !== kind || record.key !== key) {
    throw fail(`it holds record '${String(record?.kind)}/${String(record?.key)}'`)
  }
  if (!Array.isArray(record.blobRefs) || typeof record.createdAt !== 'string') throw fail('it lacks blobRefs or createdAt')
  return record
}

function decompressBounded(payload: Buffer): Buffer {
  const size = zstdBinding.getFrameContentSize(payload)
  if (size === null || size > MAX_RECORD_BYTES) throw new Error(`frame content size ${String(size)} is out of bounds`)
  const out = Buffer.allocUnsafe(size)
  const n = new zstdBinding.DCtx().decompress(out, payload)
  if (n !== size) throw new Error(`decompressed ${n} bytes instead of ${size}`)
  return out
}
