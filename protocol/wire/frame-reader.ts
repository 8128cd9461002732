// Cuts the backend byte stream into messages: Byte1 type | Int32 length (including itself) | payload.
//
// Ownership: every payload handed out is owned by the caller and never written to again. A payload that lies
// inside one socket chunk is a view of that chunk (Node allocates a fresh buffer for every socket read and never
// reuses it); a payload spanning chunks is assembled into a fresh buffer. pg-protocol's Parser, by contrast,
// hands out views into a buffer it later overwrites, which has corrupted backups (machine-notes §3.4).

import { ProtocolError } from '../errors.js'

export interface Frame {
  /** Message type byte, e.g. 0x64 'd' for CopyData. */
  readonly type: number
  readonly payload: Buffer
}

/** Refuse absurd lengths rather than allocating them: the largest legitimate message is a 1 GB DataRow field. */
const MAX_MESSAGE_BYTES = 1 << 30

export class FrameReader {
  private chunks: Buffer[] = []
  private buffered = 0
  /** Offset of the first unread byte within chunks[0]. */
  private head = 0

  /** Bytes received but not yet returned as frames. */
  get pendingBytes(): number {
    return this.buffered
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return
    this.chunks.push(chunk)
    this.buffered += chunk.length
  }

  /** The next complete frame, or undefined when more bytes are needed. */
  next(): Frame | undefined {
    if (this.buffered < 5) return undefined
    const first = this.chunks[0]
    let type: number
    let length: number
    if (first.length - this.head >= 5) {
      type = first[this.head]
      length = first.readInt32BE(this.head + 1)
    } else {
      const header = this.peek(5)
      type = header[0]
      length = header.readInt32BE(1)
    }
    if (length < 4 || length > MAX_MESSAGE_BYTES) {
      throw new ProtocolError(`invalid message length ${length} for message type 0x${type.toString(16)}`)
    }
    const total = 1 + length
    if (this.buffered < total) return undefined
    let payload: Buffer
    if (first.length - this.head >= total) {
      payload = first.subarray(this.head + 5, this.head + total)
      this.consume(total)
    } else {
      this.consume(5)
      payload = this.take(length - 4)
    }
    return { type, payload }
  }

  /** Copies the first n buffered bytes without consuming them. */
  private peek(n: number): Buffer {
    const out = Buffer.allocUnsafe(n)
    let filled = 0
    let off = this.head
    for (const c of this.chunks) {
      const k = Math.min(n - filled, c.length - off)
      c.copy(out, filled, off, off + k)
      filled += k
      off = 0
      if (filled === n) break
    }
    return out
  }

  /** Removes and returns n bytes as one fresh buffer. */
  private take(n: number): Buffer {
    const first = this.chunks[0]
    if (first.length - this.head >= n) {
      const view = first.subarray(this.head, this.head + n)
      this.consume(n)
      return view
    }
    const out = Buffer.allocUnsafe(n)
    let filled = 0
    while (filled < n) {
      const c = this.chunks[0]
      const k = Math.min(n - filled, c.length - this.head)
      c.copy(out, filled, this.head, this.head + k)
      filled += k
      this.consume(k)
    }
    return out
  }

  private consume(n: number): void {
    this.buffered -= n
    while (n > 0) {
      const c = this.chunks[0]
      const left = c.length - this.head
      if (n < left) {
        this.head += n
        return
      }
      n -= left
      this.chunks.shift()
      this.head = 0
    }
  }
}
