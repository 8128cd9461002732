// CRC-32C (Castagnoli), as PostgreSQL uses it for backup_manifest file checksums, pg_control and WAL records
// (src/include/port/pg_crc32c.h): reflected polynomial 0x82F63B78, initial value 0xFFFFFFFF, final XOR 0xFFFFFFFF.
// The bytes go through @node-rs/crc32 (SSE 4.2 / ARMv8 CRC instructions, several GB/s): it is on the hot path of
// every backup, restore and WAL segment. Its `crc32c(data, previous)` continues a finished CRC value; the running
// state of this module's API is that value's complement (PostgreSQL's INIT/COMP/FIN split).

import { crc32c as nativeCrc32c } from '@node-rs/crc32'

const POLY = 0x82f63b78

/** The running state before any byte: pass it to {@link crc32cUpdate}. */
export function crc32cInit(): number {
  return 0xffff_ffff
}

/**
 * Feeds `data` into a running CRC state (from {@link crc32cInit} or a previous update) and returns the new state.
 * The state is not the CRC: finish with {@link crc32cFinal}.
 */
export function crc32cUpdate(state: number, data: Uint8Array): number {
  if (data.byteLength === 0) return state >>> 0
  return ~nativeCrc32c(data, ~state >>> 0) >>> 0
}

/** Turns a running state into the CRC value (an unsigned 32-bit number). */
export function crc32cFinal(state: number): number {
  return (state ^ 0xffff_ffff) >>> 0
}

// Combining CRCs (the GF(2) matrix method of zlib's crc32_combine, for the Castagnoli polynomial). Appending n zero
// bytes to a message is a linear map of its CRC register over GF(2): a 32×32 bit matrix, kept as 32 column words
// (column i is the image of bit i). ZERO_BYTES_OPS[k] appends 2^k zero bytes; CRC(A ‖ B) is
// CRC(A) moved past len(B) zero bytes, XOR CRC(B). The pre- and post-conditioning with 0xFFFFFFFF cancel out
// because both CRCs carry them.

/** The image of the 32-bit vector `v` under the matrix `m` (32 column words). */
function gf2Times(m: Uint32Array, v: number): number {
  let sum = 0
  for (let i = 0; v !== 0; i++, v >>>= 1) if (v & 1) sum ^= m[i]!
  return sum >>> 0
}

/** m × m: the operator applied twice. */
function gf2Square(m: Uint32Array): Uint32Array {
  const out = new Uint32Array(32)
  for (let i = 0; i < 32; i++) out[i] = gf2Times(m, m[i]!)
  return out
}

const ZERO_BYTES_OPS: readonly Uint32Array[] = (() => {
  // One zero bit: the register shifts right by one, XOR the polynomial when bit 0 falls out (reflected CRC).
  let op: Uint32Array = new Uint32Array(32)
  op[0] = POLY
  for (let i = 1; i < 32; i++) op[i] = (1 << (i - 1)) >>> 0
  for (let k = 0; k < 3; k++) op = gf2Square(op) // 2, 4, 8 zero bits: one zero byte
  const ops: Uint32Array[] = [op]
  // 2^0 … 2^52 zero bytes cover every safe integer length.
  for (let k = 1; k < 53; k++) ops.push(gf2Square(ops[k - 1]!))
  return ops
})()

/**
 * CRC-32C of the concatenation A ‖ B from `crcA` = CRC-32C(A), `crcB` = CRC-32C(B) and the length of B in bytes,
 * without the bytes. Lets pieces of a file be checksummed apart (on worker threads) and joined in order.
 */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
  if (!Number.isSafeInteger(lengthB) || lengthB < 0) throw new RangeError(`invalid length ${lengthB}`)
  let crc = crcA >>> 0
  let n = lengthB
  for (let k = 0; n > 0; k++) {
    // n % 2 and Math.floor(n / 2) rather than bit operators: lengths above 2^31 must work too.
    if (n % 2 === 1) crc = gf2Times(ZERO_BYTES_OPS[k]!, crc)
    n = Math.floor(n / 2)
  }
  return (crc ^ crcB) >>> 0
}

/**
 * `crc32cCombine` for pieces of one fixed length, a few table look-ups per call: returns `join(crcA, crcB)` =
 * CRC-32C(A ‖ B) for any A and a B of `lengthB` bytes. The operator that moves a CRC past `lengthB` zero bytes is
 * linear, so it is tabulated for each byte of the CRC (4 × 256 entries). A file's CRC is joined from its pages' this
 * way, page after page, starting from 0 (the CRC-32C of nothing).
 */
export function crc32cJoiner(lengthB: number): (crcA: number, crcB: number) => number {
  const tables = Array.from({ length: 4 }, (_, byte) => {
    const t = new Uint32Array(256)
    for (let v = 0; v < 256; v++) t[v] = crc32cCombine((v << (8 * byte)) >>> 0, 0, lengthB)
    return t
  })
  const [t0, t1, t2, t3] = tables as [Uint32Array, Uint32Array, Uint32Array, Uint32Array]
  return (crcA, crcB) => (t0[crcA & 0xff]! ^ t1[(crcA >>> 8) & 0xff]! ^ t2[(crcA >>> 16) & 0xff]! ^ t3[crcA >>> 24]! ^ crcB) >>> 0
}

/** CRC-32C of one buffer. `crc32c(utf8('123456789'))` is 0xE3069283. */
export function crc32c(data: Uint8Array): number {
  return nativeCrc32c(data) >>> 0
}

/** An incremental CRC-32C, for data that arrives in chunks. */
export class Crc32c {
  #state = crc32cInit()

  /** Adds bytes; returns this for chaining. */
  update(data: Uint8Array): this {
    this.#state = crc32cUpdate(this.#state, data)
    return this
  }

  /** The CRC of everything added so far (the object stays usable). */
  digest(): number {
    return crc32cFinal(this.#state)
  }
}

/**
 * A CRC value as backup_manifest writes it: the 4 bytes in little-endian (x86/arm native) order, as lowercase hex.
 * CRC 0x87208743 is written `43872087`.
 */
export function crc32cHexLE(crc: number): string {
  const b = crc >>> 0
  return [b & 0xff, (b >>> 8) & 0xff, (b >>> 16) & 0xff, b >>> 24].map((x) => x.toString(16).padStart(2, '0')).join('')
}
