// Reads one tar archive of a BASE_BACKUP as it streams: the engine writes chunks in, and every entry (header and
// content stream) is handed to a callback in archive order. tar-stream does the parsing; backpressure runs from
// the callback (slow ingest) through tar-stream back to write(), and from there to the replication socket.

import tar from 'tar-stream'

/** What tar-stream's extract yields per entry (its typings do not export the type). */
type Entry = AsyncIterable<Buffer> & { header: tar.Header; resume(): void }
import { FormatError } from '../errors.js'

export interface TarEntry {
  /** Name as in the archive, without a leading './' and without the trailing '/' of directories and symlinks. */
  name: string
  type: 'file' | 'directory' | 'symlink'
  /** Permission bits (& 0o7777). */
  mode: number
  /** Unix seconds. */
  mtime: number
  sizeBytes: number
  linkTarget?: string
  /** The file's bytes; must be consumed (or drained) before the next entry arrives. */
  content: AsyncIterable<Buffer>
}

export class TarArchiveReader {
  private readonly extract = tar.extract()
  private readonly consumer: Promise<void>
  private failure: unknown

  constructor(
    readonly archiveName: string,
    onEntry: (e: TarEntry) => Promise<void>,
  ) {
    this.consumer = (async () => {
      for await (const entry of this.extract as AsyncIterable<Entry>) {
        const h = entry.header
        const type = h.type === 'file' || h.type === 'contiguous-file' ? 'file' : h.type === 'directory' ? 'directory' : h.type === 'symlink' ? 'symlink' : undefined
        if (!type) throw new FormatError(`archive '${archiveName}' has entry '${h.name}' of unsupported type '${h.type}'`)
        const name = h.name.replace(/^\.\//, '').replace(/\/+$/, '')
        await onEntry({
          name,
          type,
          mode: (h.mode ?? 0) & 0o7777,
          mtime: Math.floor((h.mtime?.getTime() ?? 0) / 1000),
          sizeBytes: type === 'file' ? (h.size ?? 0) : 0,
          linkTarget: type === 'symlink' ? (h.linkname ?? '') : undefined,
          content: entry,
        })
        // Whatever the callback left unread is skipped, so the archive can go on.
        entry.resume()
      }
    })().catch((err) => {
      this.failure ??= err
      this.extract.destroy()
      throw err
    })
    this.consumer.catch(() => {}) // observed in write() and end()
  }

  /** Feeds archive bytes; resolves when tar-stream can take more. Rejects once entry processing failed. */
  async write(chunk: Buffer): Promise<void> {
    if (this.failure) throw this.failure
    if (this.extract.write(chunk)) return
    await new Promise<void>((resolve, reject) => {
      const onDrain = () => {
        this.extract.off('close', onClose)
        resolve()
      }
      const onClose = () => {
        this.extract.off('drain', onDrain)
        reject(this.failure ?? new FormatError(`archive '${this.archiveName}' ended early`))
      }
      this.extract.once('drain', onDrain)
      this.extract.once('close', onClose)
    })
    if (this.failure) throw this.failure
  }

  /** Ends the archive and waits until every entry has been processed. */
  async end(): Promise<void> {
    if (this.failure) throw this.failure
    // streamx's end() takes no callback; the typings (for Node's Writable) want one.
    ;(this.extract as unknown as { end(): void }).end()
    await this.consumer
  }

  /** Stops reading; pending writes reject. */
  destroy(reason: unknown): void {
    this.failure ??= reason
    this.extract.destroy()
  }
}
