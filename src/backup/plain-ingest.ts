// Ingests any file other than a relation file as blobs of up to 1 MiB (all-zero pieces become holes); its size
// need not be known ahead. Pieces are analysed by the repository's window store and placed in order.

import { crc32cFinal, crc32cInit, crc32cUpdate } from '../pg/crc32c.js'
import { type Extent, pushExtent, WINDOW_BYTES, type WindowFacts, type WindowStore } from '../repo/index.js'
import type { IngestStats } from './extent-builder.js'

export class PlainFileIngest {
  readonly stats: IngestStats = { storedBytes: 0, reusedBytes: 0 }
  readonly extents: Extent[] = []
  private piece: Buffer
  private filled = 0
  /** Bytes placed so far (pieces are placed in order). */
  private placed = 0
  /** CRC-32C state over the bytes pushed so far. */
  private crc = crc32cInit()
  private readonly ahead: Promise<WindowFacts>[] = []

  constructor(private readonly store: WindowStore) {
    this.piece = store.takeBuffer()
  }

  /** Takes the next bytes of the file; a promise only when a completed piece has to wait (RelationFileIngest.push). */
  push(chunk: Buffer): Promise<void> | undefined {
    this.crc = crc32cUpdate(this.crc, chunk)
    return this.fill(chunk)
  }

  private fill(chunk: Buffer): Promise<void> | undefined {
    let at = 0
    while (at < chunk.length) {
      const n = chunk.copy(this.piece, this.filled, at)
      this.filled += n
      at += n
      if (this.filled === WINDOW_BYTES) {
        const rest = at
        return this.flushPiece().then(() => (rest < chunk.length ? this.fill(chunk.subarray(rest)) : undefined))
      }
    }
    return undefined
  }

  /** Completes the file once all its blobs are stored. */
  async finish(): Promise<{ extents: Extent[]; sizeBytes: number; crc32c: number }> {
    if (this.filled > 0) await this.flushPiece()
    while (this.ahead.length > 0) await this.placeNext()
    await this.store.drain()
    this.store.recycle(this.piece)
    return { extents: this.extents, sizeBytes: this.placed, crc32c: crc32cFinal(this.crc) }
  }

  private async flushPiece(): Promise<void> {
    const bytes = this.piece.subarray(0, this.filled)
    this.filled = 0
    this.piece = this.store.takeBuffer()
    const facts = this.store.analyze(bytes, { id: true })
    facts.catch(() => {}) // observed when placed
    this.ahead.push(facts)
    while (this.ahead.length > this.store.maxAhead) await this.placeNext()
  }

  private async placeNext(): Promise<void> {
    const f = await this.ahead.shift()!
    const offset = this.placed
    const length = f.window.length
    this.placed += length
    if (f.allZero) {
      pushExtent(this.extents, { offset, length, blob: null, blobOffset: 0 })
      this.store.recycle(f.window)
      return
    }
    pushExtent(this.extents, { offset, length, blob: f.id!, blobOffset: 0 })
    await this.store.store(f.id!, f.window, (stored) => {
      if (stored) this.stats.storedBytes += length
    })
  }
}
