// Byte layout of a pack's trailing header and of the 46-byte blob entry that pack headers and index objects share
// (docs/repository-format.md §5 and §6 are normative). Pure encoders and decoders; no I/O.

import { IntegrityError } from '../errors.js'
import { BLOB_TYPE_CODE, blobTypeOfCode, KNOWN_BLOB_FLAGS, type BlobType } from './blob.js'
import { SEAL_OVERHEAD_BYTES, seal, sha256, unseal, type RepoKeys } from './crypto.js'

/** One blob in a pack: where its stored bytes are and how to turn them back into plain bytes. */
export interface PackEntry {
  /** 32 bytes. */
  readonly id: Buffer
  readonly type: BlobType
  readonly flags: number
  /** Offset of the stored bytes from the start of the pack. */
  readonly offset: number
  readonly storedLength: number
  readonly plainLength: number
}

/** `type u8 | flags u8 | id [32] | offset u32le | stored_length u32le | plain_length u32le` */
export const ENTRY_BYTES = 46
const PACK_HEADER_MAGIC = Buffer.from('PKPH', 'latin1')
const PACK_HEADER_VERSION = 1
/** `magic [4] | version u8 | reserved [3] | count u32le` */
const PACK_HEADER_PREFIX_BYTES = 12
/** Plain repositories follow the header with its SHA-256 so a header read on its own is still verified. */
const PLAIN_HEADER_CHECKSUM_BYTES = 32
/** The pack ends with the stored header's length as u32le. */
export const PACK_TRAILER_BYTES = 4

export function writeEntry(buf: Buffer, at: number, e: PackEntry): void {
  buf[at] = BLOB_TYPE_CODE[e.type]
  buf[at + 1] = e.flags
  e.id.copy(buf, at + 2, 0, 32)
  buf.writeUInt32LE(e.offset, at + 34)
  buf.writeUInt32LE(e.storedLength, at + 38)
  buf.writeUInt32LE(e.plainLength, at + 42)
}

/** Reads one entry; returns a string describing the problem instead when the bytes are not a valid entry. */
export function readEntry(buf: Buffer, at: number): PackEntry | string {
  const type = blobTypeOfCode(buf[at]!)
  if (type === undefined) return `unknown blob type ${buf[at]}`
  const flags = buf[at + 1]!
  if ((flags & ~KNOWN_BLOB_FLAGS) !== 0) return `unknown blob flags 0x${flags.toString(16)}`
  return {
    type,
    flags,
    id: Buffer.from(buf.subarray(at + 2, at + 34)),
    offset: buf.readUInt32LE(at + 34),
    storedLength: buf.readUInt32LE(at + 38),
    plainLength: buf.readUInt32LE(at + 42),
  }
}

/** The stored header of a pack holding `entries` (which must be in pack order), without the length trailer. */
export function encodePackHeader(entries: readonly PackEntry[], keys: RepoKeys | undefined): Buffer {
  const plain = Buffer.alloc(PACK_HEADER_PREFIX_BYTES + entries.length * ENTRY_BYTES)
  PACK_HEADER_MAGIC.copy(plain, 0)
  plain[4] = PACK_HEADER_VERSION
  plain.writeUInt32LE(entries.length, 8)
  for (const [i, e] of entries.entries()) writeEntry(plain, PACK_HEADER_PREFIX_BYTES + i * ENTRY_BYTES, e)
  return keys ? seal(keys.dataKey, plain) : Buffer.concat([plain, sha256(plain)])
}

/** Bytes of the header and trailer that seal a pack of `entries` blobs, at most (plain: SHA-256; encrypted: seal). */
export function packTailBytes(entries: number): number {
  return PACK_HEADER_PREFIX_BYTES + entries * ENTRY_BYTES + Math.max(32, SEAL_OVERHEAD_BYTES) + PACK_TRAILER_BYTES
}

/** The 4-byte trailer that ends every pack. */
export function encodePackTrailer(headerLength: number): Buffer {
  const b = Buffer.alloc(PACK_TRAILER_BYTES)
  b.writeUInt32LE(headerLength, 0)
  return b
}

/**
 * Decodes a stored pack header. `blobsEnd` is where the header starts in the pack: the entries must tile
 * `[0, blobsEnd)` exactly. Throws IntegrityError naming `packName` on any inconsistency.
 */
export function decodePackHeader(stored: Buffer, blobsEnd: number, keys: RepoKeys | undefined, packName: string): PackEntry[] {
  const fail = (why: string) =>
    new IntegrityError(`pack '${packName}' has a damaged header: ${why}`, {
      hint: "run 'pgkeep verify' to list every damaged object",
    })
  let plain: Buffer
  if (keys) {
    const opened = unseal(keys.dataKey, stored)
    if (!opened) throw fail('it fails authentication')
    plain = opened
  } else {
    if (stored.length < PLAIN_HEADER_CHECKSUM_BYTES) throw fail('it is too short')
    plain = stored.subarray(0, stored.length - PLAIN_HEADER_CHECKSUM_BYTES)
    if (!sha256(plain).equals(stored.subarray(plain.length))) throw fail('its checksum does not match')
  }
  if (plain.length < PACK_HEADER_PREFIX_BYTES || !plain.subarray(0, 4).equals(PACK_HEADER_MAGIC)) throw fail('bad magic')
  if (plain[4] !== PACK_HEADER_VERSION) throw fail(`unknown header version ${plain[4]}`)
  const count = plain.readUInt32LE(8)
  if (plain.length !== PACK_HEADER_PREFIX_BYTES + count * ENTRY_BYTES) throw fail(`length does not fit ${count} entries`)
  const entries: PackEntry[] = []
  let expectedOffset = 0
  for (let i = 0; i < count; i++) {
    const e = readEntry(plain, PACK_HEADER_PREFIX_BYTES + i * ENTRY_BYTES)
    if (typeof e === 'string') throw fail(`entry ${i}: ${e}`)
    if (e.offset !== expectedOffset) throw fail(`entry ${i} starts at ${e.offset} instead of ${expectedOffset}`)
    expectedOffset += e.storedLength
    entries.push(e)
  }
  if (expectedOffset !== blobsEnd) throw fail(`blobs end at ${expectedOffset} but the header starts at ${blobsEnd}`)
  return entries
}

/**
 * Splits a pack's tail into its stored header. `tail` is the last `tail.length` bytes of a pack of `packSize` bytes.
 * Returns the header and where it starts, or the number of tail bytes needed when `tail` is too short.
 */
export function locatePackHeader(tail: Buffer, packSize: number, packName: string): { header: Buffer; headerStart: number } | { needTailBytes: number } {
  if (packSize < PACK_TRAILER_BYTES || tail.length < PACK_TRAILER_BYTES) {
    throw new IntegrityError(`pack '${packName}' is truncated: ${packSize} bytes`)
  }
  const headerLength = tail.readUInt32LE(tail.length - PACK_TRAILER_BYTES)
  const total = headerLength + PACK_TRAILER_BYTES
  if (total > packSize) {
    throw new IntegrityError(`pack '${packName}' is truncated or damaged: header length ${headerLength} exceeds its size ${packSize}`)
  }
  if (total > tail.length) return { needTailBytes: total }
  return {
    header: tail.subarray(tail.length - total, tail.length - PACK_TRAILER_BYTES),
    headerStart: packSize - total,
  }
}
