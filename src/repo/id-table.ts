// An exact set of fixed-length binary keys (pack ids, blob ids, record fingerprints) numbered in insertion order:
// open addressing over typed arrays, about keyBytes + 8 bytes per key and no object per key, for the tables garbage
// collection keeps per pack or per record (docs/repository-format.md §8 measures the same layout for the index).

const INITIAL_CAPACITY = 256

/**
 * Keys must be uniformly distributed in their first four bytes (hash outputs): those bytes are the hash. Each key
 * gets a number (0, 1, 2, … in insertion order) that callers use to index arrays of their own.
 */
export class IdTable {
  readonly keyBytes: number
  #count = 0
  #keys: Uint8Array
  /** slot → key number + 1 (0 = empty); a power of two, at most half full */
  #slots: Uint32Array

  constructor(keyBytes = 32) {
    if (!Number.isInteger(keyBytes) || keyBytes < 4) throw new RangeError(`key length ${keyBytes} is too short`)
    this.keyBytes = keyBytes
    this.#keys = new Uint8Array(INITIAL_CAPACITY * keyBytes)
    this.#slots = new Uint32Array(INITIAL_CAPACITY * 2)
  }

  get size(): number {
    return this.#count
  }

  /** Bytes held by the table's arrays. */
  get sizeBytes(): number {
    return this.#keys.byteLength + this.#slots.byteLength
  }

  /** The number of `key`, or -1. */
  find(key: Uint8Array): number {
    if (key.length !== this.keyBytes) return -1
    const slots = this.#slots
    const mask = slots.length - 1
    const kb = this.keyBytes
    const keys = this.#keys
    for (let s = this.#hash(key, 0) & mask; ; s = (s + 1) & mask) {
      const v = slots[s]!
      if (v === 0) return -1
      const base = (v - 1) * kb
      let i = 0
      while (i < kb && keys[base + i] === key[i]) i++
      if (i === kb) return v - 1
    }
  }

  has(key: Uint8Array): boolean {
    return this.find(key) >= 0
  }

  /** The number of `key`, adding it when new (check `size` before and after to tell). */
  add(key: Uint8Array): number {
    if (key.length !== this.keyBytes) throw new RangeError(`key of ${key.length} bytes in a table of ${this.keyBytes}-byte keys`)
    const found = this.find(key)
    if (found >= 0) return found
    const n = this.#count
    if ((n + 1) * this.keyBytes > this.#keys.length) {
      // Grow by half: a table of a million pack ids is ~40 MB and is copied on growth.
      const next = new Uint8Array(Math.ceil((this.#keys.length / this.keyBytes) * 1.5) * this.keyBytes)
      next.set(this.#keys)
      this.#keys = next
    }
    this.#keys.set(key, n * this.keyBytes)
    this.#count++
    if (this.#count * 2 > this.#slots.length) this.#rehash(this.#slots.length * 2)
    else this.#insert(n)
    return n
  }

  /** The key numbered `n` (a copy). */
  key(n: number): Buffer {
    if (!Number.isInteger(n) || n < 0 || n >= this.#count) throw new RangeError(`no key numbered ${n}`)
    return Buffer.from(this.#keys.subarray(n * this.keyBytes, (n + 1) * this.keyBytes))
  }

  /** The key numbered `n` as lowercase hex. */
  hex(n: number): string {
    return Buffer.from(this.#keys.buffer, this.#keys.byteOffset + n * this.keyBytes, this.keyBytes).toString('hex')
  }

  #hash(bytes: Uint8Array, at: number): number {
    return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0
  }

  #insert(n: number): void {
    const slots = this.#slots
    const mask = slots.length - 1
    let s = this.#hash(this.#keys, n * this.keyBytes) & mask
    while (slots[s] !== 0) s = (s + 1) & mask
    slots[s] = n + 1
  }

  #rehash(size: number): void {
    this.#slots = new Uint32Array(size)
    for (let n = 0; n < this.#count; n++) this.#insert(n)
  }
}

/** A growable array of numbers indexed by IdTable numbers: Uint32Array for counters, Float64Array for sums and times. */
export class Column {
  #a: Uint32Array | Float64Array
  readonly #make: (n: number) => Uint32Array | Float64Array

  constructor(kind: 'u32' | 'f64') {
    this.#make = kind === 'u32' ? (n) => new Uint32Array(n) : (n) => new Float64Array(n)
    this.#a = this.#make(INITIAL_CAPACITY)
  }

  get(n: number): number {
    return n < this.#a.length ? this.#a[n]! : 0
  }

  set(n: number, v: number): void {
    this.#ensure(n)
    this.#a[n] = v
  }

  add(n: number, v: number): void {
    this.#ensure(n)
    this.#a[n] = this.#a[n]! + v
  }

  get sizeBytes(): number {
    return this.#a.byteLength
  }

  #ensure(n: number): void {
    if (n < this.#a.length) return
    let len = this.#a.length
    while (len <= n) len = Math.ceil(len * 1.5)
    const next = this.#make(len)
    next.set(this.#a)
    this.#a = next
  }
}
