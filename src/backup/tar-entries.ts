// Reads one tar archive of a BASE_BACKUP as it streams: the engine writes chunks in, and every entry (header and
// content stream) is checked against what a server may send (server-input.ts: names, types, links, modes) and then
// handed to a callback in archive order. tar-stream does the parsing; backpressure runs from the callback (slow
// ingest) through tar-stream back to write(), and from there to the replication socket.

import tar from 'tar-stream'
import { ArchiveEntryCheck, type ArchiveScope } from './server-input.js'

/** What tar-stream's extract yields per entry (its typings do not export the type). */
type Entry = AsyncIterable<Buffer> & { header: tar.Header; resume(): void }

export interface TarEntry {
  /** Name as in the archive, without a leading './' and without the trailing '/' of directories and symlinks. */
  name: string
  /** Path in the data directory: the name, under `pg_tblspc/<oid>/` for a tablespace archive. Checked. */
  path: string
  type: 'file' | 'directory' | 'symlink'
  /** Permission bits as sent (at most 0o777: anything else was refused). */
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
  /** Rejects with the first failure; end() races it, so a failure can never leave it waiting. */
  private readonly failed: Promise<never>
  private fail!: (err: unknown) => void
  /**
   * What a write() waiting for 'drain' does on failure. Not a race with `failed`: every race would leave a reaction
   * on that promise until the archive ends, one per write that had to wait (thousands in a large archive).
   */
  private drainWaiter: ((err: unknown) => void) | undefined

  /** The check of this archive's entries (a tablespace archive's version directory is known after the first). */
  readonly check: ArchiveEntryCheck

  /**
   * @param scope the archive: its name, tablespace, and what its entries may be
   * @param onEntry called with each entry that passed the check, in archive order
   */
  constructor(scope: ArchiveScope, onEntry: (e: TarEntry) => Promise<void>) {
    const check = (this.check = new ArchiveEntryCheck(scope))
    this.failed = new Promise<never>((_, reject) => {
      this.fail = (err) => {
        if (this.failure !== undefined) return
        this.failure = err
        reject(err)
        this.drainWaiter?.(err)
        this.extract.destroy()
      }
    })
    this.failed.catch(() => {}) // observed by write() and end()
    this.consumer = (async () => {
      for await (const entry of this.extract as AsyncIterable<Entry>) {
        const h = entry.header
        const type = h.type === 'contiguous-file' ? 'file' : String(h.type)
        try {
          const name = h.name.replace(/^\.\//, '').replace(/\/+$/, '')
          const mode = h.mode ?? 0
          const linkTarget = type === 'symlink' ? (h.linkname ?? '') : undefined
          // Hard links, devices, fifos, bad names and modes stop here, before anything is stored.
          const path = check.check({ name, type, mode, linkTarget })
          await onEntry({
            name,
            path,
            type: type as TarEntry['type'],
            mode,
            mtime: Math.floor((h.mtime?.getTime() ?? 0) / 1000),
            sizeBytes: type === 'file' ? (h.size ?? 0) : 0,
            linkTarget,
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
    await new Promise<void>((resolve, reject) => {
      const onDrain = () => {
        this.drainWaiter = undefined
        resolve()
      }
      this.drainWaiter = (err) => {
        this.extract.off('drain', onDrain)
        this.drainWaiter = undefined
        reject(err)
      }
      this.extract.once('drain', onDrain)
    })
  }

  /** Ends the archive and waits until every entry has been processed. */
  async end(): Promise<void> {
    if (this.failure !== undefined)
      throw this.failure
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
