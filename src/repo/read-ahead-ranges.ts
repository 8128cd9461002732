// The ranges of packs a BlobReader read ahead (BlobReaderOptions.readAheadBytes), kept to serve later reads of
// blobs that lie in them without another storage read: a parent backup's file maps are read again in about the
// order they were written. A range is kept as the chunks the storage returned: joining them cost a copy of every
// byte read ahead (40 ms of an incremental's main thread for its parent's file maps).

/** A range of a pack read ahead: its chunks, side by side from `start`. */
interface KeptRange {
  readonly packId: string
  readonly start: number
  readonly end: number
  readonly chunks: readonly Uint8Array[]
}

export class ReadAheadRanges {
  readonly #ranges: KeptRange[] = []

  /** @param limit ranges kept at most; the oldest is dropped for a new one */
  constructor(private readonly limit: number) {}

  /** Keeps what one read of pack `packId` returned from `start` on (chunks in order, not copied). */
  add(packId: string, start: number, chunks: readonly Uint8Array[]): void {
    if (chunks.length === 0) return
    this.#ranges.push({ packId, start, end: start + chunks.reduce((n, c) => n + c.length, 0), chunks })
    if (this.#ranges.length > this.limit) this.#ranges.shift()
  }

  /**
   * The stored bytes of pack `packId` from `offset` on, if a kept range holds all `length` of them: a view where they
   * lie in one chunk, else a copy joined from several.
   */
  find(packId: string, offset: number, length: number): Uint8Array | undefined {
    const k = this.#ranges.find((r) => r.packId === packId && offset >= r.start && offset + length <= r.end)
    if (!k) return undefined
    const pieces: Uint8Array[] = []
    let at = k.start
    for (const chunk of k.chunks) {
      const from = Math.max(offset, at)
      const to = Math.min(offset + length, at + chunk.length)
      if (from < to) {
        const piece = chunk.subarray(from - at, to - at)
        if (piece.length === length) return piece
        pieces.push(piece)
      }
      at += chunk.length
    }
    return Buffer.concat(pieces)
  }
}
