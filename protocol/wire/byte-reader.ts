// Sequential big-endian reads over one owned message payload (the wire is network order, protocol.md §0).

import { ProtocolError } from '../errors.js'

export class ByteReader {
  private pos = 0

  constructor(private readonly buf: Buffer) {}

  get remaining(): number {
    return this.buf.length - this.pos
  }

  private need(n: number): void {
    if (this.pos + n > this.buf.length) {
      throw new ProtocolError(`message too short: need ${n} bytes at offset ${this.pos}, have ${this.remaining}`)
    }
  }

  u8(): number {
    this.need(1)
    return this.buf[this.pos++]
  }

  i16(): number {
    this.need(2)
    const v = this.buf.readInt16BE(this.pos)
    this.pos += 2
    return v
  }

  i32(): number {
    this.need(4)
    const v = this.buf.readInt32BE(this.pos)
    this.pos += 4
    return v
  }

  u32(): number {
    this.need(4)
    const v = this.buf.readUInt32BE(this.pos)
    this.pos += 4
    return v
  }

  /** Unsigned 64-bit (LSNs, positions). */
  u64(): bigint {
    this.need(8)
    const v = this.buf.readBigUInt64BE(this.pos)
    this.pos += 8
    return v
  }

  /** Signed 64-bit (timestamps, byte counts). */
  i64(): bigint {
    this.need(8)
    const v = this.buf.readBigInt64BE(this.pos)
    this.pos += 8
    return v
  }

  /** A NUL-terminated UTF-8 string. */
  cstring(): string {
    const end = this.buf.indexOf(0, this.pos)
    if (end < 0) throw new ProtocolError(`unterminated string at offset ${this.pos}`)
    const s = this.buf.toString('utf8', this.pos, end)
    this.pos = end + 1
    return s
  }

  bytes(n: number): Buffer {
    this.need(n)
    const b = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return b
  }

  /** Everything not read yet. */
  rest(): Buffer {
    const b = this.buf.subarray(this.pos)
    this.pos = this.buf.length
    return b
  }
}
