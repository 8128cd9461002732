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
  /** Rejects with the first failure; write() and end() race it, so a failure can never leave them waiting. */
  private readonly failed: Promise<never>
  private fail!: (err: unknown) => void

  constructor(
    readonly archiveName: string,
    onEntry: (e: TarEntry) => Promise<void>,
  ) {
    this.failed = new Promise<never>((_, reject) => {
      this.fail = (err) => {
        if (this.failure !== undefined) return
        this.failure = err
        reject(err)
        this.extract.destroy()
      }
    })
    this.failed.catch(() => {}) // observed by write() and end()
    this.consumer = (async () => {
      for await (const entry of this.extract as AsyncIterable<Entry>) {
        const h = entry.header
        const type = h.type === 'file' || h.type === 'contiguous-file' ? 'file' : h.type === 'directory' ? 'directory' : h.type === 'symlink' ? 'symlink' : undefined
        try {
          if (!type) throw new FormatError(`archive '${archiveName}' has entry '${h.name}' of unsupported type '${h.type}'`)
          await onEntry({
            name: h.name.replace(/^\.\//, '').replace(/\/+$/, ''),
            type,
            mode: (h.mode ?? 0) & 0o7777,
            mtime: Math.floor((h.mtime?.getTime() ?? 0) / 1000),
            sizeBytes: type === 'file' ? (h.size ?? 0) : 0,
            linkTarget: type === 'symlink' ? (h.linkname ?? '') : undefined,
            content: entry,
          })
        } catch (err) {
          // Record the failure before leaving the loop: leaving it runs the iterator's return(), which can wait
          // on the half-read entry forever.
          this.fail(err)
          return
        }
        // Whatever the callback left unread is skipped, so the archive can go on.
        entry.resume()
      }
    })().catch((err) => this.fail(err))
  }

  /** Feeds archive bytes; resolves when tar-stream can take more. Rejects once entry processing failed. */
  async write(chunk: Buffer): Promise<void> {
    if (this.failure !== undefined) throw this.failure
    if (this.extract.write(chunk)) return
    await Promise.race([new Promise<void>((resolve) => this.extract.once('drain', () => resolve())), this.failed])
  }

  /** Ends the archive and waits until every entry has been processed. */
  async end(): Promise<void> {
    if (this.failure !== undefined) throw this.failure
    // streamx's end() takes no callback; the typings (for Node's Writable) want one.
    ;(this.extract as unknown as { end(): void }).end()
    await Promise.race([this.consumer, this.failed])
    if (this.failure !== undefined) throw this.failure
  }

  /** Stops reading; pending writes reject. */
  destroy(reason: unknown): void {
    this.fail(reason)
  }
}
