// Cuts the backend byte stream into messages: Byte1 type | Int32 length (including itself) | payload.
//
// Ownership: every payload handed out is owned by the caller and never written to again. A payload that lies
// inside one chunk is a view of that chunk (chunks are never written to again: Node allocates a fresh buffer for
// every read of a TLS socket, and SocketInput gives each region of its slabs to one read only); chunks that lie side
// by side in one buffer are joined as they come, so a payload across them is a view too; any other payload spanning
// chunks is assembled into a fresh buffer, unless the caller releases what it was handed (`release`, as a base
// backup's consumer that copies what it keeps does before each message): then into one buffer used again. Without
// that, a 2 GB backup assembled a 32 KiB message at every 256 KiB slab's end, 9,000 buffers and 300 MB that V8
// counts towards its next collection. pg-protocol's Parser, by contrast, hands out views into a buffer it later
// overwrites, without being told it may, which has corrupted backups (machine-notes §3.4).
// Bounds: declared lengths are capped by protocol state (FRAME_LIMITS), so memory stays small whatever a server says.

import { ProtocolError } from '../errors.js'

export interface Frame {
  /** Message type byte, e.g. 0x64 'd' for CopyData. */
  readonly type: number
  readonly payload: Buffer
}

/**
 * How long a message the server may declare, by protocol state (the length word counts itself, as on the wire). A
 * declared length over the cap is refused as soon as its 5-byte header is in, before the reader waits for (and so
 * buffers) the payload: a hostile or broken server cannot make pgkeep hold what it announces.
 */
export const FRAME_LIMITS = {
  /**
   * Before AuthenticationOk, as libpq (fe-connect.c): an authentication request or NegotiateProtocolVersion of at
   * most 2000 bytes, an error of at most 30000; nothing else is expected then, so the same 2000 bytes apply.
   */
  startup: { errors: 30_000, other: 2_000 },
  /**
   * After it: libpq's bound for the message types it calls short (fe-protocol3.c, VALID_LONG_MESSAGE_TYPE), and
   * for the long ones (DataRow, RowDescription, ErrorResponse, NoticeResponse, NotificationResponse) a cap far above
   * anything a replication command returns (a TIMELINE_HISTORY row holds at most MAX_TIMELINE_HISTORY_BYTES).
   */
  session: { short: 30_000, long: 2 << 20 },
  /**
   * CopyData. The server's largest chunks: BASE_BACKUP sends at most SINK_BUFFER_LENGTH = Max(32768, BLCKSZ)
   * (basebackup.c, 15+) or TAR_SEND_SIZE = 32768 (13/14, whose backup_label and tablespace_map go out whole: about
   * 1 KB per tablespace); the walsender at most MAX_SEND_SIZE = 16 × XLOG_BLCKSZ, 1 MiB with the largest WAL block
   * size a build allows. 8 MiB leaves a wide margin over all of them.
   */
  copyData: 8 << 20,
} as const

/** Payloads up to this size are assembled in the buffer used again after `release`; larger ones in their own. */
const REUSED_ASSEMBLY_MAX_BYTES = 1 << 20

const LONG_TYPES = new Set([0x44 /* D */, 0x54 /* T */, 0x45 /* E */, 0x4e /* N */, 0x41 /* A */])
const ERROR_TYPES = new Set([0x45 /* E */, 0x4e /* N */])
const COPY_DATA = 0x64 // 'd'
const AUTHENTICATION = 0x52 // 'R'

/** A printable name for a message type byte in errors ('D', or 0x07 for a control byte). */
const typeName = (type: number) => (type >= 0x21 && type <= 0x7e ? `'${String.fromCharCode(type)}'` : `0x${type.toString(16).padStart(2, '0')}`)

export interface FrameReaderOptions {
  /**
   * Start in the authenticated state (for bytes recorded after startup). Default false: the reader starts with the
   * startup caps and moves to the session caps when it hands out AuthenticationOk.
   */
  authenticated?: boolean
}

export class FrameReader {
  /** For tests, as SocketInput.poisonReleased: the assembly buffer is filled with 0xA5 when released. */
  static poisonReleased = false
  private chunks: Buffer[] = []
  private buffered = 0
  /** Offset of the first unread byte within chunks[0]. */
  private head = 0
  private authenticated: boolean
  /** Bytes of the frames handed out so far, headers included. */
  private handedOut = 0
  /** Set by the first `release`: payloads across chunks are assembled in `assembly`, used again after each release. */
  private releasing = false
  private assembly: Buffer | undefined
  /** A payload handed out lies in `assembly` and has not been released. */
  private assemblyLent = false

  constructor(o: FrameReaderOptions = {}) {
    this.authenticated = o.authenticated ?? false
  }

  /** Whether AuthenticationOk has been handed out (or the reader started authenticated). */
  get isAuthenticated(): boolean {
    return this.authenticated
  }

  /** Bytes of all frames handed out so far, headers included: a response's size is the difference of two readings. */
  get framedBytes(): number {
    return this.handedOut
  }

  /** Bytes received but not yet returned as frames. */
  get pendingBytes(): number {
    return this.buffered
  }

  /**
   * Declares every payload handed out so far no longer used by anyone: the memory one assembled from several chunks
   * lies in is written again by a later one. A view of it kept after this sees other bytes later.
   */
  release(): void {
    this.releasing = true
    if (this.assemblyLent && FrameReader.poisonReleased) this.assembly!.fill(0xa5)
    this.assemblyLent = false
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return
    this.buffered += chunk.length
    const last = this.chunks.length - 1
    const prev = this.chunks[last]
    if (prev && prev.buffer === chunk.buffer && prev.byteOffset + prev.length === chunk.byteOffset) {
      // The bytes right after the last chunk's (one read after the other into a slab): one view of both.
      this.chunks[last] = Buffer.from(prev.buffer, prev.byteOffset, prev.length + chunk.length)
    } else {
      this.chunks.push(chunk)
    }
  }

  /**
   * The next complete frame, or undefined when more bytes are needed.
   * @throws ProtocolError when the next message declares a length that is impossible or over the cap of the
   *   current state ({@link FRAME_LIMITS}); the stream cannot be resynchronised after that, so drop the connection
   */
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
    if (length < 4) throw new ProtocolError(`invalid message length ${length} for message type ${typeName(type)}`)
    const cap = this.capFor(type)
    if (length > cap) {
      throw new ProtocolError(
        `the server sent a message of type ${typeName(type)} declaring ${length} bytes; at most ${cap} are allowed ${this.authenticated ? 'for it' : 'before authentication'}`,
        { hint: 'PostgreSQL sends nothing that large here: check that the connection leads to a genuine PostgreSQL server' },
      )
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
    this.handedOut += total
    if (type === AUTHENTICATION && !this.authenticated && payload.length >= 4 && payload.readInt32BE(0) === 0) this.authenticated = true
    return { type, payload }
  }

  private capFor(type: number): number {
    if (!this.authenticated) return ERROR_TYPES.has(type) ? FRAME_LIMITS.startup.errors : FRAME_LIMITS.startup.other
    if (type === COPY_DATA) return FRAME_LIMITS.copyData
    return LONG_TYPES.has(type) ? FRAME_LIMITS.session.long : FRAME_LIMITS.session.short
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

  /** Removes and returns n bytes: a view where they lie in one chunk, else assembled (assemblyBuffer). */
  private take(n: number): Buffer {
    const first = this.chunks[0]
    if (first.length - this.head >= n) {
      const view = first.subarray(this.head, this.head + n)
      this.consume(n)
      return view
    }
    const out = this.assemblyBuffer(n)
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

  /** Where a payload of n bytes across chunks is assembled: the buffer used again when it is free, else a new one. */
  private assemblyBuffer(n: number): Buffer {
    if (!this.releasing || this.assemblyLent || n > REUSED_ASSEMBLY_MAX_BYTES) return Buffer.allocUnsafe(n)
    if (!this.assembly || this.assembly.length < n) this.assembly = Buffer.allocUnsafe(Math.max(n, 64 << 10))
    this.assemblyLent = true
    return this.assembly.subarray(0, n)
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
