// Reads one tar archive of a BASE_BACKUP as it streams: the engine writes chunks in, and every entry (header and
// content) is checked against what a server may send (server-input.ts: names, types, links, modes) and then handed
// to a callback in archive order. The format is the ustar subset PostgreSQL writes (protocol.md §5.1): 512-byte
// headers with octal (or, from 8 GiB, base-256) numbers and a checksum, content padded to 512 bytes, and tar's two
// blocks of zeros at the end (PostgreSQL 14 sends them too). An archive that ends between entries without them is
// read all the same: the server's manifest proves afterwards that every file arrived whole. Anything else (a bad
// checksum, an archive cut inside a header or a file, bytes after the end blocks) is refused, never skipped.
//
// The content reaches the callback as views of the chunks written (iterated, or piped into a sink:
// tar-entry-content.ts), and a header costs a few objects (a tablespace of small files is mostly headers:
// tar-stream, with a stream and several strings per entry, made a backup of 20,000 tables take 7.1-7.4 user CPU-s
// against 5.4-5.6 now). Backpressure: a write() resolves once the callback has taken the last piece of the chunk
// that is content (or stopped reading: the rest of its file is skipped), and a header is read only after the
// previous entry's callback finished.

import { ProtocolError } from '../errors.js'
import { isAllZero } from '../pg/page.js'
import { ArchiveEntryCheck, type ArchiveScope } from './server-input.js'
import { EntryContent, type TarEntryContent } from './tar-entry-content.js'

export type { TarEntryContent }

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
  /** The file's bytes; must be consumed (or abandoned) before the next entry arrives. */
  content: TarEntryContent
}

const BLOCK = 512
const HINT = 'PostgreSQL never sends this: check that the connection leads to a genuine PostgreSQL server; nothing was recorded'

/** Type names by typeflag, as server-input.ts names them in its refusals. */
const TYPES: Record<string, string> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file', // contiguous file: a regular file to every tar since
  '1': 'link',
  '2': 'symlink',
  '3': 'character-device',
  '4': 'block-device',
  '5': 'directory',
  '6': 'fifo',
  x: 'pax-header',
  g: 'pax-global-header',
  L: 'gnu-long-path',
  K: 'gnu-long-link-path',
}

/** The entry being read: its name (for messages), its content, and its callback's outcome (never a rejection). */
interface CurrentEntry {
  readonly name: string
  readonly content: EntryContent
  readonly done: Promise<void>
}

/** The header fields pgkeep uses (offsets of protocol.md §5.1). */
interface Header {
  name: string
  mode: number
  sizeBytes: number
  mtime: number
  type: string
  linkTarget: string
}

export class TarArchiveReader {
  /** The check of this archive's entries (a tablespace archive's version directory is known after the first). */
  readonly check: ArchiveEntryCheck
  readonly #scope: ArchiveScope
  readonly #onEntry: (e: TarEntry) => Promise<void>
  readonly #header = Buffer.alloc(BLOCK)
  #headerFilled = 0
  /** The entry whose content is arriving, and its callback (settled before the next header is read). */
  #entry: CurrentEntry | undefined
  /** Padding after the last entry's content still to pass over. */
  #padding = 0
  /** A block of zeros was read: the archive is over, only zeros may follow. */
  #ended = false
  #failure: { error: unknown } | undefined

  /**
   * @param scope the archive: its name, tablespace, and what its entries may be
   * @param onEntry called with each entry that passed the check, in archive order
   */
  constructor(scope: ArchiveScope, onEntry: (e: TarEntry) => Promise<void>) {
    this.#scope = scope
    this.check = new ArchiveEntryCheck(scope)
    this.#onEntry = onEntry
  }

  /**
   * Feeds archive bytes (not copied: the content handed to callbacks are views of them). Resolves once the chunk is
   * read and its content done with (see EntryContent), so the chunk's memory may be reused then. Rejects with the
   * first failure of the archive or of an entry's callback.
   */
  async write(chunk: Buffer): Promise<void> {
    this.#throwIfFailed()
    let at = 0
    while (at < chunk.length) {
      this.#throwIfFailed()
      const entry = this.#entry
      if (entry && entry.content.remaining > 0) {
        const n = Math.min(entry.content.remaining, chunk.length - at)
        const pending = entry.content.feed(chunk.subarray(at, at + n))
        if (pending) await pending
        at += n
        if (entry.content.remaining === 0) await this.#finishEntry(entry)
        continue
      }
      if (this.#padding > 0) {
        const n = Math.min(this.#padding, chunk.length - at)
        this.#padding -= n
        at += n
        continue
      }
      const n = Math.min(BLOCK - this.#headerFilled, chunk.length - at)
      chunk.copy(this.#header, this.#headerFilled, at, at + n)
      this.#headerFilled += n
      at += n
      if (this.#headerFilled === BLOCK) {
        this.#headerFilled = 0
        await this.#block()
      }
    }
  }

  /**
   * Ends the archive, which must end between entries (with or without the end blocks). The last entry's callback
   * is done: the write that completed its content waited for it.
   */
  async end(): Promise<void> {
    this.#throwIfFailed()
    if (this.#entry || this.#headerFilled > 0 || this.#padding > 0) {
      this.#fail(this.#refusal(this.#entry ? `it ends inside the content of '${this.#entry.name}'` : 'it ends inside a header'))
    }
    this.#throwIfFailed()
  }

  /** Stops reading: a waiting write and the current entry's callback get `reason`. */
  destroy(reason: unknown): void {
    this.#fail(reason)
  }

  /** A complete 512-byte block where a header belongs. */
  async #block(): Promise<void> {
    const h = this.#header
    if (isAllZero(h)) {
      this.#ended = true
      return
    }
    if (this.#ended) throw this.#fail(this.#refusal('it has bytes after its end'))
    const header = this.#parse(h)
    const name = header.name.replace(/^\.\//, '').replace(/\/+$/, '')
    const type = header.type
    const linkTarget = type === 'symlink' ? header.linkTarget : undefined
    let path: string
    try {
      // Hard links, devices, fifos, extension headers, bad names and modes stop here, before anything is stored.
      path = this.check.check({ name, type, mode: header.mode, linkTarget })
    } catch (err) {
      throw this.#fail(err)
    }
    if (type !== 'file' && header.sizeBytes !== 0) throw this.#fail(this.#refusal(`its ${type} '${name}' has ${header.sizeBytes} bytes of content`))
    const content = new EntryContent(header.sizeBytes)
    this.#padding = (BLOCK - (header.sizeBytes % BLOCK)) % BLOCK
    const entry: TarEntry = {
      name,
      path,
      type: type as TarEntry['type'],
      mode: header.mode,
      mtime: header.mtime,
      sizeBytes: type === 'file' ? header.sizeBytes : 0,
      linkTarget,
      content,
    }
    const done = this.#onEntry(entry).then(
      () => content.abandon(),
      (err: unknown) => {
        this.#fail(err)
      },
    )
    this.#entry = { name, content, done }
    if (content.remaining === 0) await this.#finishEntry(this.#entry)
  }

  async #finishEntry(entry: CurrentEntry): Promise<void> {
    await entry.done
    this.#entry = undefined
    this.#throwIfFailed()
  }

  /** The fields of a header block whose checksum holds. */
  #parse(h: Buffer): Header {
    const expected = this.#number(h, 148, 8, 'checksum')
    let sum = 8 * 0x20 // the checksum field counts as spaces
    for (let i = 0; i < BLOCK; i++) if (i < 148 || i >= 156) sum += h[i]!
    if (sum !== expected) throw this.#fail(this.#refusal(`a header's checksum is ${expected}, its bytes sum to ${sum}`))
    if (h.toString('latin1', 257, 262) !== 'ustar') throw this.#fail(this.#refusal('a header is not in ustar format'))
    const flag = String.fromCharCode(h[156]!)
    const prefix = text(h, 345, 155)
    const name = text(h, 0, 100)
    return {
      name: prefix ? `${prefix}/${name}` : name,
      mode: this.#number(h, 100, 8, 'mode'),
      sizeBytes: this.#number(h, 124, 12, 'size'),
      mtime: this.#number(h, 136, 12, 'modification time'),
      type: TYPES[flag] ?? `unknown (typeflag 0x${h[156]!.toString(16).padStart(2, '0')})`,
      linkTarget: text(h, 157, 100),
    }
  }

  /** A numeric field: octal digits (after optional spaces) ended by a space or NUL, or base-256 after 0x80. */
  #number(h: Buffer, offset: number, length: number, what: string): number {
    if (h[offset] === 0x80) {
      let v = 0
      for (let i = offset + 1; i < offset + length; i++) v = v * 256 + h[i]!
      if (!Number.isSafeInteger(v)) throw this.#fail(this.#refusal(`a header's ${what} is too large`))
      return v
    }
    let i = offset
    const end = offset + length
    while (i < end && h[i] === 0x20) i++
    let v = 0
    let digits = 0
    for (; i < end && h[i]! >= 0x30 && h[i]! <= 0x37; i++, digits++) v = v * 8 + (h[i]! - 0x30)
    if (digits === 0 || (i < end && h[i] !== 0x20 && h[i] !== 0)) {
      throw this.#fail(this.#refusal(`a header's ${what} is not a number: '${h.toString('latin1', offset, end).replace(/[^\x20-\x7e]/g, '?')}'`))
    }
    return v
  }

  #refusal(why: string): ProtocolError {
    return new ProtocolError(`archive '${this.#scope.name}' from the server is not a tar archive PostgreSQL writes: ${why}`, { hint: HINT })
  }

  /** Records the first failure and passes it to the current entry's content; returns the failure recorded. */
  #fail(error: unknown): unknown {
    this.#failure ??= { error }
    this.#entry?.content.fail(this.#failure.error)
    return this.#failure.error
  }

  #throwIfFailed(): void {
    if (this.#failure) throw this.#failure.error
  }
}

/** A NUL-terminated (or full-width) text field. */
function text(h: Buffer, offset: number, length: number): string {
  const nul = h.indexOf(0, offset)
  const end = nul < 0 || nul > offset + length ? offset + length : nul
  return h.toString('utf8', offset, end)
}
