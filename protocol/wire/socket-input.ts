// The bytes of a plain (unencrypted) socket, read into memory pgkeep hands to the kernel itself (net.Socket's
// `onread` option), one region of a 256 KiB slab after the other. Consecutive reads land side by side, so a message
// that arrives in two reads is still one run of bytes, and FrameReader hands it out as a view: no copy and no
// allocation. Node's own reading allocates a 64 KiB buffer per read, and a message across two of them must be
// copied into a new one: half of BASE_BACKUP's 32 KiB messages, about 1 GB of copies for a 2 GB database, and as
// many allocations, each counted by V8 towards its next garbage collection.
//
// Ownership: a region of a slab is given to one read only; the chunks handed out (and views of them) stay valid for
// as long as anyone holds them, which keeps their slab alive, unless the reader says otherwise: `release` declares
// every byte taken so far, but the last `stillPending`, no longer used by anyone, and the slabs that held only such
// bytes are read into again. A base backup's consumer that copies what it keeps (BaseBackupOptions.transientData)
// releases before each message; without it, each slab of 2 GB received was a fresh 256 KiB buffer for V8 to count
// and collect (a young-generation collection every 16 MiB, and a backup's peak RSS 10-30 MB higher).
// Backpressure: reading stops while more than PAUSE_AT_BYTES wait to be taken, and starts again when they are.

import type { Socket } from 'node:net'

/** Bytes of one slab: reads fill it region by region. */
export const SLAB_BYTES = 1 << 18
/** A read is offered at least this much room (Node's own read size); a slab with less left is replaced. */
const MIN_READ_BYTES = 64 << 10
/** Bytes received but not taken above which the socket stops reading. */
const PAUSE_AT_BYTES = 256 << 10
/** Released slabs kept to read into again; with more, the oldest are left to the garbage collector. */
const SPARE_SLABS = 4
/** Slabs filled and not yet released that are remembered for reuse (a reader that never releases keeps none). */
const RETIRED_SLABS = 16

/** A source of the bytes the server sent, in order: `undefined` once the server closed the connection. */
export interface ByteSource {
  next(): Promise<Buffer | undefined>
}

export class SocketInput implements ByteSource {
  /**
   * For tests (test/harness/poison-released.ts sets it): a released slab is filled with 0xA5 at once, so a view kept
   * after its release shows other bytes every time, not only when the slab happens to be read into again.
   */
  static poisonReleased = false
  #slab: Buffer = Buffer.allocUnsafe(SLAB_BYTES)
  /** Bytes of the slab given to reads that completed. */
  #used = 0
  /** Bytes read from the socket so far: positions in the stream. */
  #readBytes = 0
  /** Set by the first `release`: filled slabs are remembered, with the stream position where each ends. */
  #recycling = false
  readonly #retired: { slab: Buffer; end: number }[] = []
  /** Released slabs, read into before new ones are allocated. */
  readonly #spare: Buffer[] = []
  readonly #received: Buffer[] = []
  #receivedBytes = 0
  #socket: Socket | undefined
  #paused = false
  #ended = false
  #failure: Error | undefined
  #wake: (() => void) | undefined

  /** The `onread` option for the socket (net.connect); then `attach` the socket. */
  readonly onread = {
    buffer: (): Buffer => this.#nextRegion(),
    callback: (n: number, region: Buffer): boolean => this.#onRead(n, region),
  }

  /** Follows the socket's end and errors; call it right after creating the socket with `onread`. */
  attach(socket: Socket): void {
    this.#socket = socket
    const end = () => {
      this.#ended = true
      this.#notify()
    }
    socket.on('end', end)
    socket.on('close', end)
    socket.on('error', (err) => {
      this.#failure ??= err
      this.#notify()
    })
  }

  /** Bytes received and not taken yet. */
  get pendingBytes(): number {
    return this.#receivedBytes
  }

  /**
   * The bytes of the oldest read not taken yet (FrameReader joins those that lie side by side); waits for one.
   * @returns undefined once the server closed the connection and everything was taken
   * @throws the socket's error
   */
  async next(): Promise<Buffer | undefined> {
    for (;;) {
      const chunk = this.#received.shift()
      if (chunk) {
        this.#receivedBytes -= chunk.length
        return chunk
      }
      if (this.#failure) throw this.#failure
      if (this.#ended) return undefined
      this.#resume()
      await new Promise<void>((resolve) => {
        this.#wake = resolve
      })
    }
  }

  /** Stops reading (until the next `next()`): the socket is about to be handed to TLS, which reads it itself. */
  pause(): void {
    if (this.#paused || !this.#socket) return
    this.#paused = true
    this.#socket.pause()
  }

  /**
   * Declares that nobody uses the bytes taken so far any more, but the last `stillPending` of them (what the caller
   * buffers still, such as the frame reader's incomplete message): slabs holding only released bytes are read into
   * again. A view of them kept after this sees other bytes later.
   */
  release(stillPending: number): void {
    this.#recycling = true
    const releasedTo = this.#readBytes - this.#receivedBytes - stillPending
    while (this.#retired.length > 0 && this.#retired[0]!.end <= releasedTo) {
      const { slab } = this.#retired.shift()!
      if (SocketInput.poisonReleased) slab.fill(0xa5)
      if (this.#spare.length < SPARE_SLABS) this.#spare.push(slab)
    }
  }

  #nextRegion(): Buffer {
    if (SLAB_BYTES - this.#used < MIN_READ_BYTES) {
      if (this.#recycling) {
        this.#retired.push({ slab: this.#slab, end: this.#readBytes })
        if (this.#retired.length > RETIRED_SLABS) this.#retired.shift()
      }
      this.#slab = this.#spare.pop() ?? Buffer.allocUnsafe(SLAB_BYTES)
      this.#used = 0
    }
    return this.#slab.subarray(this.#used)
  }

  #onRead(n: number, region: Buffer): boolean {
    // `region` is what #nextRegion returned for this read (Node asks for the next one only after this call): the
    // slab's bytes from #used on.
    this.#used += n
    this.#readBytes += n
    this.#received.push(region.subarray(0, n))
    this.#receivedBytes += n
    this.#notify()
    if (this.#receivedBytes < PAUSE_AT_BYTES) return true
    // Returning false makes Node stop reading; #resume starts it again.
    this.#paused = true
    return false
  }

  #resume(): void {
    if (!this.#paused || !this.#socket || this.#socket.destroyed) return
    this.#paused = false
    this.#socket.resume()
  }

  #notify(): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }
}

/** The bytes of a stream Node reads itself (a TLS socket): its chunks as they come. */
export function streamSource(stream: AsyncIterable<Buffer>): ByteSource {
  const it = stream[Symbol.asyncIterator]()
  return {
    async next() {
      const r = await it.next()
      return r.done ? undefined : r.value
    },
  }
}
