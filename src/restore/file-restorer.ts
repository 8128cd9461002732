// Writes one backed-up file (or one piece of a large one) into the target directory: every byte comes from a
// verified blob, holes stay sparse, modes and times are set when the last piece is done, and the CRC-32C of what
// is on disk is computed as it is written (pieces apart, then combined) and compared with the one the backup
// recorded. In delta mode it first compares what is there: relation files page by page against the backup's page
// hashes (rewriting only differing pages), other files by CRC-32C when the backup knows it. Files are reached
// only through the target tree: never through a link.

import { lstat, rm, type FileHandle } from 'node:fs/promises'
import { IntegrityError } from '../errors.js'
import { crc32cCombine, crc32cFinal, crc32cHexLE, crc32cInit, crc32cUpdate } from '../pg/crc32c.js'
import { restoredMode } from '../pg/data-dir-entry.js'
import {
  type BlobId,
  type BlobReader,
  decodeFileMap,
  type Extent,
  extentsIn,
  type FileEntry,
  type FileMap,
  PAGE_BYTES,
  PAGE_HASH_BYTES,
  type Repository,
  WINDOW_BYTES,
} from '../repo/index.js'
import type { BlobCache } from './blob-cache.js'
import { readNamingFile } from './file-content.js'
import { crcOfHandle, readFully, writeAll, WriteQueue } from './file-io.js'
import { openNoFollow, type TargetTree } from './target-tree.js'
import type { Spawn } from './task-pool.js'

/** Files larger than this are cut into pieces that several workers write at once. */
export const SPLIT_BYTES = 32 << 20
/** Size of one piece (a multiple of the 1 MiB window, so delta pieces align with pages). */
export const PIECE_BYTES = 16 << 20
/** A write gathers up to this many bytes of consecutive extents into one writev. */
const GATHER_BYTES = 1 << 20
const GATHER_BUFFERS = 32
/** Extents whose blobs are fetched ahead of the one being written (about 1 MiB each). */
export const READ_AHEAD_EXTENTS = 16
/** Gathered writes of one file in flight at once. */
const WRITES_IN_FLIGHT = 4
const ZEROS = Buffer.alloc(WINDOW_BYTES)

/** A file of the backup, or a byte range of one that was split. */
export type FileTask = { kind: 'file'; entry: FileEntry } | { kind: 'piece'; file: SplitFile; index: number; offset: number; lengthBytes: number }

/** What a finished file reports (once per file, after its last piece). */
export interface FileDone {
  entry: FileEntry
  /** CRC-32C of the content on disk, computed while writing or comparing (equal to the backup's when it has one). */
  crc32c: string
  /** Bytes written into this file (a delta restore writes only what differed). */
  bytesWritten: number
  /** False when a delta restore found the content already right. */
  changed: boolean
}

export interface FileRestorerContext {
  repo: Repository
  backupId: string
  cache: BlobCache
  delta: boolean
  sync: boolean
  /** Delta: fsync files found already right too (the target holds an interrupted restore). */
  syncUnchanged: boolean
  /** Hashes pages of files on disk (delta), on its workers when it has them. */
  reader: BlobReader
  signal?: AbortSignal
  /** Where the backup's files go. */
  target: TargetTree
  /** Called once per file when it is complete on disk. */
  onDone(done: FileDone): Promise<void> | void
  /** Bytes of the backup covered so far, and bytes written, as they happen. */
  onBytes(coveredBytes: number, writtenBytes: number): void
}

/** A file cut into pieces: shared by its piece tasks; the last one to finish completes the file. */
export interface SplitFile {
  entry: FileEntry
  path: string
  extents: Extent[]
  /** Delta mode: the page hashes to compare with. */
  map: FileMap | undefined
  remaining: number
  bytesWritten: number
  changed: boolean
  /** CRC-32C of each piece, combined in order when the last one is done. */
  pieceCrcs: number[]
}

type CrcState = { value: number }

/** Restores files; one instance serves every worker of a restore. */
export class FileRestorer {
  constructor(private readonly ctx: FileRestorerContext) {}

  /** Runs one task of the pool. */
  async run(task: FileTask, spawn: Spawn<FileTask>): Promise<void> {
    if (task.kind === 'piece') return this.#piece(task.file, task.index, task.offset, task.lengthBytes)
    return this.#file(task.entry, spawn)
  }

  async #file(entry: FileEntry, spawn: Spawn<FileTask>): Promise<void> {
    const path = await this.ctx.target.prepare(entry.path)
    if (this.ctx.delta) {
      const st = await lstat(path).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined
        throw err
      })
      if (st && !st.isFile()) await rm(path, { recursive: true, force: true })
      else if (st) return this.#deltaFile(entry, path, st.size, spawn)
    }
    const map = entry.fileMap ? await this.#fileMap(entry) : undefined
    const extents = map?.extents ?? entry.extents ?? []
    const fh = await openNoFollow(path, 'create', restoredMode('file', entry.mode))
    try {
      // The file gets its final size first: holes stay sparse, and pieces can be written in any order.
      await fh.truncate(entry.sizeBytes)
      if (entry.sizeBytes > SPLIT_BYTES) {
        await fh.close()
        this.#split(entry, path, extents, undefined, spawn)
        return
      }
      const crc: CrcState = { value: crc32cInit() }
      const written = await this.#writeRange(fh, entry, extents, 0, entry.sizeBytes, crc)
      await this.#complete(fh, entry, crc32cFinal(crc.value), written, true)
    } finally {
      await fh.close().catch(() => {})
    }
  }

  /** Cuts a file into piece tasks; with `map` the pieces compare before writing (delta). */
  #split(entry: FileEntry, path: string, extents: Extent[], map: FileMap | undefined, spawn: Spawn<FileTask>, changed = false): void {
    const file: SplitFile = { entry, path, extents, map, remaining: 0, bytesWritten: 0, changed, pieceCrcs: [] }
    const pieces: FileTask[] = []
    for (let off = 0; off < entry.sizeBytes; off += PIECE_BYTES) {
      pieces.push({ kind: 'piece', file, index: pieces.length, offset: off, lengthBytes: Math.min(PIECE_BYTES, entry.sizeBytes - off) })
    }
    file.remaining = pieces.length
    spawn(pieces)
  }

  async #piece(file: SplitFile, index: number, offset: number, lengthBytes: number): Promise<void> {
    const fh = await openNoFollow(file.path, 'update')
    try {
      try {
        const crc: CrcState = { value: crc32cInit() }
        // Read the result before adding: `x += await y` would read x before the other pieces added theirs.
        const n = file.map
          ? await this.#deltaRange(fh, file.entry, file.map, offset, lengthBytes, crc)
          : await this.#writeRange(fh, file.entry, file.extents, offset, lengthBytes, crc)
        file.bytesWritten += n
        file.pieceCrcs[index] = crc32cFinal(crc.value)
      } finally {
        file.remaining--
      }
      if (file.remaining === 0) {
        let whole = file.pieceCrcs[0]!
        for (let i = 1; i < file.pieceCrcs.length; i++)
          whole = crc32cCombine(whole, file.pieceCrcs[i]!, Math.min(PIECE_BYTES, file.entry.sizeBytes - i * PIECE_BYTES))
        await this.#complete(fh, file.entry, whole, file.bytesWritten, file.map ? file.bytesWritten > 0 || file.changed : true)
      }
    } finally {
      await fh.close().catch(() => {})
    }
  }

  /**
   * Checks the CRC-32C of what is on disk against the backup's, then sync, mode, times and the report. `fh` is any
   * open handle of the file (fsync covers the whole inode).
   */
  async #complete(fh: FileHandle, entry: FileEntry, crc: number, bytesWritten: number, changed: boolean): Promise<void> {
    const crc32c = crc32cHexLE(crc)
    if (entry.crc32c !== undefined && crc32c !== entry.crc32c) {
      throw new IntegrityError(`'${entry.path}' of backup ${this.ctx.backupId} was restored with CRC-32C ${crc32c}, the backup recorded ${entry.crc32c}`, {
        hint: "the backup's blobs and its file list disagree; run 'pgkeep verify --read-data' to find damaged objects, or restore another backup with --backup",
      })
    }
    // An unchanged file was made durable by whoever wrote it (a server checkpoint, a finished restore), except
    // after an interrupted restore, whose writes may still sit in the page cache.
    if (this.ctx.sync && (changed || this.ctx.syncUnchanged)) await fh.sync()
    await fh.chmod(restoredMode('file', entry.mode))
    await fh.utimes(entry.mtime, entry.mtime)
    await this.ctx.onDone({ entry, crc32c, bytesWritten, changed })
  }

  /** Writes [offset, offset + length) of the file from its extents; holes are skipped (already zeros). */
  async #writeRange(fh: FileHandle, entry: FileEntry, extents: Extent[], offset: number, lengthBytes: number, crc: CrcState): Promise<number> {
    let bufs: Buffer[] = []
    let at = 0
    let gathered = 0
    let written = 0
    // Writes go out without waiting for the previous one (positional, so order does not matter), at most
    // WRITES_IN_FLIGHT at once: decoding the next blobs overlaps the disk.
    const writes = new WriteQueue(WRITES_IN_FLIGHT)
    const flush = async () => {
      if (bufs.length === 0) return
      const n = gathered
      await writes.add(writeAll(fh, bufs, at).then(() => this.ctx.onBytes(0, n)))
      written += n
      bufs = []
      gathered = 0
    }
    const slice = extentsIn(extents, offset, lengthBytes)
    // Read ahead: blobs are requested in batches (read together when they lie close in a pack) while earlier ones
    // are written; a new batch goes out when half of the previous one is used.
    let ahead = 0
    const prefetch = (i: number) => {
      if (ahead - i > READ_AHEAD_EXTENTS / 2) return
      for (ahead = Math.max(ahead, i + 1); ahead < slice.length && ahead <= i + READ_AHEAD_EXTENTS; ahead++) {
        const b = slice[ahead]!.blob
        if (b !== null) this.ctx.cache.get(b).catch(() => {})
      }
    }
    for (let i = 0; i < slice.length; i++) {
      const x = slice[i]!
      this.ctx.signal?.throwIfAborted()
      prefetch(i)
      if (x.blob === null) {
        await flush()
        for (let left = x.length; left > 0; left -= ZEROS.length) crc.value = crc32cUpdate(crc.value, ZEROS.subarray(0, Math.min(left, ZEROS.length)))
        this.ctx.onBytes(x.length, 0)
        continue
      }
      const bytes = await this.#bytesOf(entry, x)
      crc.value = crc32cUpdate(crc.value, bytes)
      if (bufs.length > 0 && at + gathered !== x.offset) await flush()
      if (bufs.length === 0) at = x.offset
      bufs.push(bytes)
      gathered += bytes.length
      this.ctx.onBytes(bytes.length, 0)
      if (gathered >= GATHER_BYTES || bufs.length >= GATHER_BUFFERS) await flush()
    }
    await flush()
    await writes.drain()
    return written
  }

  // ---------------------------------------------------------------------------------------------------------
  // Delta

  async #deltaFile(entry: FileEntry, path: string, existingSize: number, spawn: Spawn<FileTask>): Promise<void> {
    if (entry.fileMap) {
      const map = await this.#fileMap(entry)
      const fh = await openNoFollow(path, 'update')
      try {
        const resized = existingSize !== entry.sizeBytes
        if (resized) await fh.truncate(entry.sizeBytes)
        if (entry.sizeBytes > SPLIT_BYTES) {
          await fh.close()
          this.#split(entry, path, map.extents, map, spawn, resized)
          return
        }
        const crc: CrcState = { value: crc32cInit() }
        const written = await this.#deltaRange(fh, entry, map, 0, entry.sizeBytes, crc)
        await this.#complete(fh, entry, crc32cFinal(crc.value), written, resized || written > 0)
      } finally {
        await fh.close().catch(() => {})
      }
      return
    }
    // An ordinary file: unchanged when size and CRC-32C match the backup's; else written again in full.
    if (entry.crc32c !== undefined && existingSize === entry.sizeBytes) {
      const fh = await openNoFollow(path, 'update')
      try {
        const crc = await crcOfHandle(fh, entry.sizeBytes, this.ctx.signal)
        if (crc32cHexLE(crc) === entry.crc32c) {
          this.ctx.onBytes(entry.sizeBytes, 0)
          await this.#complete(fh, entry, crc, 0, false)
          return
        }
      } finally {
        await fh.close().catch(() => {})
      }
    }
    const fh = await openNoFollow(path, 'create', restoredMode('file', entry.mode))
    try {
      await fh.truncate(entry.sizeBytes)
      const extents = entry.extents ?? []
      // Holes are not written by #writeRange; after the truncate to 0 above they read as zeros anyway.
      const crc: CrcState = { value: crc32cInit() }
      const written = await this.#writeRange(fh, entry, extents, 0, entry.sizeBytes, crc)
      await this.#complete(fh, entry, crc32cFinal(crc.value), written, true)
    } finally {
      await fh.close().catch(() => {})
    }
  }

  /**
   * Compares [offset, offset + length) of a relation file on disk with the backup's page hashes, window by window,
   * and writes the pages that differ. The window buffer ends up holding the restored content, which feeds `crc`.
   */
  async #deltaRange(fh: FileHandle, entry: FileEntry, map: FileMap, offset: number, lengthBytes: number, crc: CrcState): Promise<number> {
    // A window buffer of the reader's: it may travel to a hashing worker and back.
    let buf = this.ctx.reader.takeBuffer()
    let written = 0
    for (let w = offset; w < offset + lengthBytes; w += WINDOW_BYTES) {
      this.ctx.signal?.throwIfAborted()
      const n = Math.min(WINDOW_BYTES, offset + lengthBytes - w)
      await readFully(fh, buf, n, w)
      const r = await this.ctx.reader.hashPages(buf.subarray(0, n), map.pageHashAlgorithm)
      buf = Buffer.from(r.window.buffer as ArrayBuffer)
      const hashes = r.hashes
      let run = -1
      const writeRun = async (from: number, to: number) => {
        // Pages [from, to) of this window differ: fill them with the backup's bytes, then write them.
        for (const x of extentsIn(map.extents, w + from, to - from)) {
          const dst = x.offset - w
          if (x.blob === null) buf.fill(0, dst, dst + x.length)
          else (await this.#bytesOf(entry, x)).copy(buf, dst)
        }
        await writeAll(fh, [buf.subarray(from, to)], w + from)
        written += to - from
        this.ctx.onBytes(0, to - from)
      }
      for (let p = 0; p < n; p += PAGE_BYTES) {
        const at = ((w + p) / PAGE_BYTES) * PAGE_HASH_BYTES
        const h = (p / PAGE_BYTES) * PAGE_HASH_BYTES
        const same = hashes.compare(map.pageHashes, at, at + PAGE_HASH_BYTES, h, h + PAGE_HASH_BYTES) === 0
        if (!same && run < 0) run = p
        if (same && run >= 0) {
          await writeRun(run, p)
          run = -1
        }
      }
      if (run >= 0) await writeRun(run, n)
      crc.value = crc32cUpdate(crc.value, buf.subarray(0, n))
      this.ctx.onBytes(n, 0)
    }
    this.ctx.reader.recycle(buf)
    return written
  }

  // ---------------------------------------------------------------------------------------------------------
  // Reading from the repository

  async #fileMap(entry: FileEntry): Promise<FileMap> {
    // Through the cache: the task source asks for the maps of the files coming next, so they arrive in runs.
    const bytes = await this.#read(entry, entry.fileMap!, () => this.ctx.cache.get(entry.fileMap!))
    const map = decodeFileMap(bytes, `file map of '${entry.path}' in backup ${this.ctx.backupId}`)
    if (map.sizeBytes !== entry.sizeBytes) {
      throw new IntegrityError(`file map of '${entry.path}' in backup ${this.ctx.backupId} describes ${map.sizeBytes} bytes, the file has ${entry.sizeBytes}`)
    }
    return map
  }

  /** The bytes of one extent, from the shared cache. */
  async #bytesOf(entry: FileEntry, x: Extent): Promise<Buffer> {
    const blob = await this.#read(entry, x.blob!, () => this.ctx.cache.get(x.blob!))
    if (x.blobOffset + x.length > blob.length) {
      throw new IntegrityError(
        `'${entry.path}' of backup ${this.ctx.backupId} refers to bytes ${x.blobOffset}..${x.blobOffset + x.length} of blob '${x.blob}', which has ${blob.length}`,
      )
    }
    return blob.subarray(x.blobOffset, x.blobOffset + x.length)
  }

  /** A blob read whose failure names the file and the backup (a missing blob included). */
  #read(entry: FileEntry, id: BlobId, read: () => Promise<Buffer>): Promise<Buffer> {
    return readNamingFile(entry, id, this.ctx.backupId, read, this.ctx.signal)
  }
}
