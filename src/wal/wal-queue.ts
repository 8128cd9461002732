// A bounded queue of received WAL between the socket loop and the storing loop of `wal stream`: the socket keeps
// being read while a segment is stored, and a slow repository slows the socket only once the queue is full.

import type { Lsn } from '../../protocol/index.js'

/** WAL received in one XLogData message: its first byte's LSN and the (owned) bytes. */
export interface WalChunk {
  readonly walStart: Lsn
  readonly data: Buffer
}

/** A single-producer, single-consumer queue of WAL chunks holding at most `maxBytes` (plus one chunk). */
export class WalQueue {
  private items: WalChunk[] = []
  private bytes = 0
  private closed = false
  private flushWanted = false
  private wakeConsumer: (() => void) | undefined
  private wakeProducer: (() => void) | undefined

  constructor(private readonly maxBytes: number) {}

  /** Bytes waiting to be stored. */
  get sizeBytes(): number {
    return this.bytes
  }

  /** Adds a chunk; waits while the queue is full. Resolves false when the queue was closed meanwhile. */
  async push(chunk: WalChunk): Promise<boolean> {
    while (!this.closed && this.bytes > 0 && this.bytes + chunk.data.length > this.maxBytes) {
      await new Promise<void>((resolve) => (this.wakeProducer = resolve))
    }
    if (this.closed) return false
    this.items.push(chunk)
    this.bytes += chunk.data.length
    this.wake('consumer')
    return true
  }

  /**
   * Asks the consumer to make everything received so far durable (the server asked for a reply: it may be shutting
   * down and waiting for our flush position to reach what it sent). Wakes the consumer even when nothing is queued.
   */
  requestFlush(): void {
    this.flushWanted = true
    this.wake('consumer')
  }

  /**
   * Everything queued and whether a flush was requested since the last call; waits until there is either.
   * Undefined once the queue is closed and empty.
   */
  async takeAll(): Promise<{ chunks: WalChunk[]; flushRequested: boolean } | undefined> {
    while (this.items.length === 0 && !this.flushWanted) {
      if (this.closed) return undefined
      await new Promise<void>((resolve) => (this.wakeConsumer = resolve))
    }
    const chunks = this.items
    const flushRequested = this.flushWanted
    this.items = []
    this.bytes = 0
    this.flushWanted = false
    this.wake('producer')
    return { chunks, flushRequested }
  }

  /** No more chunks will be pushed; the consumer still gets what is queued. A waiting producer is released. */
  close(): void {
    this.closed = true
    this.wake('consumer')
    this.wake('producer')
  }

  private wake(who: 'consumer' | 'producer'): void {
    const f = who === 'consumer' ? this.wakeConsumer : this.wakeProducer
    if (who === 'consumer') this.wakeConsumer = undefined
    else this.wakeProducer = undefined
    f?.()
  }
}
