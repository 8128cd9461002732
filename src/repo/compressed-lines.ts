// Lines of text kept zstd-compressed in memory, in blocks, and read back in the order they were added. A backup
// must remember something of every file until its very end (the file list, sorted only then; what arrived, for the
// check against the server's manifest): as objects on the JS heap that was several hundred bytes a file, 60-110 MB
// of peak RSS for a cluster of 40,000 tables; compressed, file list lines cost about 20-40 bytes each.

import { compress, decompress } from 'zstd-napi'
import { GrowingBytes } from './growing-bytes.js'

/** Uncompressed bytes of a block: one decompressed block at a time is what reading costs. */
const BLOCK_BYTES = 64 << 10
const ZSTD_LEVEL = 1
const NEWLINE = 0x0a
/** The open block's buffer: a block and room for the line that fills it (more for a longer line). */
const OPEN_BYTES = BLOCK_BYTES + (4 << 10)

export class CompressedLines {
  readonly #blocks: Buffer[] = []
  /**
   * The open block's lines as UTF-8, written as they come: a line held as a string until its block is sealed
   * outlived young-generation collections when lines come one per file (the files received, ~1,000 to a block),
   * and was promoted to the old generation, 13 MB over a backup of 120,000 files. Freed by seal().
   */
  readonly #open = new GrowingBytes(OPEN_BYTES)
  #count = 0
  #heldBytes = 0

  /** Adds a line; it must not contain '\n'. */
  push(line: string): void {
    this.#open.appendUtf8(line)
    this.#open.appendByte(NEWLINE)
    this.#count++
    if (this.#open.length >= BLOCK_BYTES) this.#sealBlock()
  }

  /** Lines added. */
  get count(): number {
    return this.#count
  }

  /** Bytes held: the compressed blocks (the open block's lines aside). */
  get heldBytes(): number {
    return this.#heldBytes
  }

  /** The lines in the order they were added; decompresses one block at a time. Adding while reading is an error. */
  *lines(): Generator<string> {
    this.seal()
    const blocks = this.#blocks.length
    for (const block of this.#blocks) {
      const text = decompress(block).toString('utf8')
      let at = 0
      while (at < text.length) {
        const end = text.indexOf('\n', at)
        yield text.slice(at, end)
        at = end + 1
      }
      if (this.#blocks.length !== blocks || this.#open.length > 0) throw new Error('CompressedLines: lines added while reading')
    }
  }

  /** Compresses the open block now and frees its buffer (for lines that will not grow any more for a while). */
  seal(): void {
    this.#sealBlock()
    this.#open.free()
  }

  #sealBlock(): void {
    if (this.#open.length === 0) return
    // compress() copies what it takes: the open block's buffer is written again.
    const block = compress(this.#open.view(), { compressionLevel: ZSTD_LEVEL })
    this.#blocks.push(block)
    this.#heldBytes += block.length
    this.#open.clear()
  }
}
