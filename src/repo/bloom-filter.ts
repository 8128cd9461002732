// A Bloom filter over blob ids for garbage collection's live set: a few bits per blob instead of the ~60 bytes of
// the in-memory index, so that marking a repository of ten million blobs takes about 12 MB. A false positive only
// makes a dead blob look live (its bytes are kept one more run); a live blob is never reported absent.

import { randomBytes } from 'node:crypto'

/**
 * A Bloom filter of 32-byte ids (SHA-256 or HMAC output, so uniformly distributed). `k` probes per id by double
 * hashing of two 32-bit words of the id mixed with a random salt drawn per filter: the dead blobs that happen to
 * collide with live ones differ from one gc run to the next, so no garbage is kept forever by bad luck.
 */
export class BloomFilter {
  readonly bits: number
  readonly hashes: number
  readonly #words: Uint32Array
  readonly #salt1: number
  readonly #salt2: number
  #count = 0

  /**
   * @param expectedItems how many ids will be added (more is allowed; the false-positive rate then rises)
   * @param falsePositiveRate wanted rate at `expectedItems` (e.g. 0.01)
   */
  constructor(expectedItems: number, falsePositiveRate: number) {
    const n = Math.max(1, Math.ceil(expectedItems))
    const p = Math.min(0.5, Math.max(1e-9, falsePositiveRate))
    // m = -n ln p / (ln 2)^2 bits, k = (m / n) ln 2 probes: the textbook optimum.
    const m = Math.max(1024, Math.ceil((-n * Math.log(p)) / (Math.LN2 * Math.LN2)))
    this.bits = Math.min(m, 2 ** 32 - 32)
    this.hashes = Math.max(1, Math.min(20, Math.round((this.bits / n) * Math.LN2)))
    this.#words = new Uint32Array(Math.ceil(this.bits / 32))
    const salt = randomBytes(8)
    this.#salt1 = salt.readUInt32LE(0)
    this.#salt2 = salt.readUInt32LE(4)
  }

  /** Bytes held by the bit array. */
  get sizeBytes(): number {
    return this.#words.byteLength
  }

  /** Ids added (with repetitions). */
  get count(): number {
    return this.#count
  }

  /** The false-positive rate expected with `items` distinct ids added: (1 - e^(-k n / m))^k. */
  expectedFalsePositiveRate(items = this.#count): number {
    return (1 - Math.exp((-this.hashes * items) / this.bits)) ** this.hashes
  }

  add(id: Uint8Array): void {
    this.#count++
    let h = this.#h1(id)
    const step = this.#h2(id)
    for (let i = 0; i < this.hashes; i++) {
      const bit = this.#reduce(h)
      this.#words[bit >>> 5]! |= 1 << (bit & 31)
      h = (h + step) >>> 0
    }
  }

  /** False when `id` was certainly never added; true when it was, or (rarely) by chance. */
  has(id: Uint8Array): boolean {
    let h = this.#h1(id)
    const step = this.#h2(id)
    for (let i = 0; i < this.hashes; i++) {
      const bit = this.#reduce(h)
      if ((this.#words[bit >>> 5]! & (1 << (bit & 31))) === 0) return false
      h = (h + step) >>> 0
    }
    return true
  }

  /** Maps a 32-bit value onto [0, bits) without a modulo's bias (Lemire's multiply-shift). */
  #reduce(h: number): number {
    return Math.floor((h * this.bits) / 4294967296)
  }

  #h1(id: Uint8Array): number {
    return mix((id[0]! | (id[1]! << 8) | (id[2]! << 16) | (id[3]! << 24)) ^ this.#salt1)
  }

  /** Odd, so that the probe sequence never repeats a position early. */
  #h2(id: Uint8Array): number {
    return (mix((id[4]! | (id[5]! << 8) | (id[6]! << 16) | (id[7]! << 24)) ^ this.#salt2) | 1) >>> 0
  }
}

/** A 32-bit finaliser (MurmurHash3's fmix32): spreads the salt over every bit. */
function mix(x: number): number {
  x ^= x >>> 16
  x = Math.imul(x, 0x85ebca6b)
  x ^= x >>> 13
  x = Math.imul(x, 0xc2b2ae35)
  x ^= x >>> 16
  return x >>> 0
}
