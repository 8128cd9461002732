// Lines of text kept zstd-compressed in memory, in blocks, and read back in the order they were added. A backup
// must remember something of every file until its very end (the file list, sorted only then; what arrived, for the
// check against the server's manifest): as objects on the JS heap that was several hundred bytes a file, 60-110 MB
// of peak RSS for a cluster of 40,000 tables; compressed, file list lines cost about 20-40 bytes each.

import { compress, decompress } from 'zstd-napi'

/** Uncompressed bytes of a block: one decompressed block at a time is what reading costs. */
const BLOCK_BYTES = 64 << 10
const ZSTD_LEVEL = 1

export class CompressedLines {
  readonly #blocks: Buffer[] = []
  #open: string[] = []
  #openBytes = 0
  #count = 0
  #heldBytes = 0

  /** Adds a line; it must not contain '\n'. */
  push(line: string): void {
    this.#open.push(line)
    this.#openBytes += line.length + 1
    this.#count++
    if (this.#openBytes >= BLOCK_BYTES) this.#seal()
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
    this.#seal()
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

  #seal(): void {
    if (this.#open.length === 0) return
    const block = compress(Buffer.from(this.#open.join('\n') + '\n'), { compressionLevel: ZSTD_LEVEL })
    this.#blocks.push(block)
    this.#heldBytes += block.length
    this.#open = []
    this.#openBytes = 0
  }
}
