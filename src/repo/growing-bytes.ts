// Bytes appended one after another into a buffer that grows by doubling: what a backup keeps per file until it can
// use it (lines of the file list, the parent's file maps), held outside the JS heap instead of as objects and strings
// that outlive young-generation collections and are promoted to the old generation.

export class GrowingBytes {
  #buf: Buffer
  #length = 0
  readonly #initialBytes: number

  /** `initialBytes`: allocated by the first append (and again after free()). */
  constructor(initialBytes: number) {
    this.#initialBytes = initialBytes
    this.#buf = NO_BYTES
  }

  /** Bytes appended since the last clear(). */
  get length(): number {
    return this.#length
  }

  /** Appends `text` as UTF-8. */
  appendUtf8(text: string): void {
    // At most 3 bytes of UTF-8 per UTF-16 code unit.
    this.#room(3 * text.length)
    this.#length += this.#buf.write(text, this.#length, 'utf8')
  }

  /** Appends the bytes that `hex` spells. */
  appendHex(hex: string): void {
    this.#room(hex.length >> 1)
    this.#length += this.#buf.write(hex, this.#length, 'hex')
  }

  appendByte(byte: number): void {
    this.#room(1)
    this.#buf[this.#length++] = byte
  }

  append(bytes: Uint8Array): void {
    this.#room(bytes.length)
    this.#buf.set(bytes, this.#length)
    this.#length += bytes.length
  }

  /** A view of bytes `start` to `end` (valid until the next append, clear() or free()). */
  view(start = 0, end = this.#length): Buffer {
    return this.#buf.subarray(start, end)
  }

  /** Bytes `start` to `end` decoded as UTF-8. */
  utf8(start: number, end: number): string {
    return this.#buf.toString('utf8', start, end)
  }

  /** Empties it; the buffer is kept for what comes next. */
  clear(): void {
    this.#length = 0
  }

  /** Empties it and lets its buffer go. */
  free(): void {
    this.#length = 0
    this.#buf = NO_BYTES
  }

  #room(more: number): void {
    const need = this.#length + more
    if (need <= this.#buf.length) return
    const grown = Buffer.allocUnsafe(Math.max(need, this.#initialBytes, 2 * this.#buf.length))
    this.#buf.copy(grown, 0, 0, this.#length)
    this.#buf = grown
  }
}

const NO_BYTES = Buffer.alloc(0)
