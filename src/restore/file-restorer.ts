// Writes one backed-up file (or one piece of a large one) into the target directory: every byte comes from a
// verified blob, holes stay sparse, modes and times are set when the last piece is done, and the CRC-32C of what
// is on disk is computed as it is written (pieces apart, then combined) and compared with the one the backup
// recorded. In delta mode it first compares what is there: relation files page by page against the backup's page
// hashes (rewriting only differing pages), other files by CRC-32C when the backup knows it. Files are reached
// only through the target tree: never through a link. Nothing is fsynced here: the finish phase makes the whole
// target durable at once before pg_control is written (docs/restore.md, "Durability").
//
// Small files (most files of a cluster with many relations) are handed whole, once their blobs are in memory and
// their CRC-32C checked, to the small-file writer (small-file-writer.ts): synchronous system calls (open, one
// gathered write, mode, times, close) on a thread of its own, in batches, so that the kernel's work on each file
// overlaps reading and verifying the next ones. Larger files keep asynchronous writes, which overlap decoding the
// next blobs.
// Longer than 400 lines on purpose: the small-file and large-file paths and the delta comparison share the checks
// (CRC-32C, extents tiling the file, the target tree) that must stay the same on every path.

import { fchmodSync, ftruncateSync, futimesSync } from 'node:fs'
import { lstat, rm, type FileHandle } from 'node:fs/promises'
import { IntegrityError } from '../errors.js'
import { crc32cCombine, crc32cFinal, crc32cHexLE, crc32cInit, crc32cUpdate } from '../pg/crc32c.js'
import { restoredMode } from '../pg/data-dir-entry.js'
import {
  type BlobId,
  type BlobReader,
  decodeFileMap,
  inlineFileMapOf,
  type Extent,
  extentsIn,
  type FileEntry,
  type FileMap,
  PAGE_BYTES,
  PAGE_HASH_BYTES,
  type Repository,
  WINDOW_BYTES,
} from '../repo/index.js'
import type { BlobCache, BlobLease } from './blob-cache.js'
import { readNamingFile } from './file-content.js'
import { crcOfHandle, readFully, writeAll, WriteQueue } from './file-io.js'
import type { SmallFileWriter } from './small-file-writer.js'
import { openNoFollow, type TargetTree } from './target-tree.js'
import type { Spawn } from './task-pool.js'

/** Files up to this size are written in one go with synchronous calls, their blobs fetched ahead with the list. */
export const SMALL_FILE_BYTES = 256 << 10
/** Files larger than this are cut into pieces that several workers write at once. */
export const SPLIT_BYTES = 32 << 20
/** Size of one piece (a multiple of the 1 MiB window, so delta pieces align with pages). */
export const PIECE_BYTES = 16 << 20
/** A write gathers up to this many bytes of consecutive extents into one writev. */
const GATHER_BYTES = 1 << 20
const GATHER_BUFFERS = 32
/**
 * Extents whose blobs are fetched ahead of the one being written (about 1 MiB each), again each time half of them
 * are used. 12, not 8: with 8 (and the cache sized from it, under its eviction rule of the time) a restore from S3
 * needed 243 pack requests instead of 129 for the same 764 blobs (restore-s3.test.ts).
 */
export const READ_AHEAD_EXTENTS = 12
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
  /** Hashes pages of files on disk (delta), on its workers when it has them. */
  reader: BlobReader
  signal?: AbortSignal
  /** Where the backup's files go. */
  target: TargetTree
  /** Writes small files (on a thread of its own when it has one); flushed by the caller after the last task. */
  smallFiles: SmallFileWriter
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
    // A small relation file lists its extents beside its map: the map is read only when they are not there.
    const extents = entry.extents ?? (entry.fileMap ? (await this.#fileMap(entry)).extents : [])
    if (entry.sizeBytes <= SMALL_FILE_BYTES) return this.#smallFile(entry, path, extents)
    const fh = await openNoFollow(path, 'create', restoredMode('file', entry.mode))
    try {
      // The file gets its final size first: holes stay sparse, and pieces can be written in any order.
      ftruncateSync(fh.fd, entry.sizeBytes)
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
   * A small file in one go: every blob it needs (fetched ahead with the coming entries), the CRC-32C checked before
   * a byte is written, then given to the small-file writer (see the file header).
   */
  async #smallFile(entry: FileEntry, path: string, extents: readonly Extent[]): Promise<void> {
    const leases: BlobLease[] = []
    try {
      const parts: Buffer[] = []
      const offsets: number[] = []
      let crc = crc32cInit()
      for (const x of extents) {
        if (x.blob === null) {
          crc = crc32cZeros(crc, x.length)
          continue
        }
        const lease = await this.#lease(entry, x.blob)
        leases.push(lease)
        const bytes = this.#extentBytes(entry, x, lease.bytes)
        crc = crc32cUpdate(crc, bytes)
        parts.push(bytes)
        offsets.push(x.offset)
      }
      const crc32c = this.#checkCrc(entry, crc32cFinal(crc))
      this.ctx.signal?.throwIfAborted()
      // Written now or copied into the writer's next batch: the leases can go either way once this returns.
      await this.ctx.smallFiles.write(
        { path, mode: restoredMode('file', entry.mode), mtime: entry.mtime, sizeBytes: entry.sizeBytes, parts, offsets },
        (written) => {
          this.ctx.onBytes(entry.sizeBytes, written)
          return this.ctx.onDone({ entry, crc32c, bytesWritten: written, changed: true })
        },
      )
    } finally {
      for (const l of leases) l.release()
    }
  }

  /** The CRC-32C as the manifest writes it, after checking it against the backup's. */
  #checkCrc(entry: FileEntry, crc: number): string {
    const crc32c = crc32cHexLE(crc)
    if (entry.crc32c !== undefined && crc32c !== entry.crc32c) {
      throw new IntegrityError(`'${entry.path}' of backup ${this.ctx.backupId} was restored with CRC-32C ${crc32c}, the backup recorded ${entry.crc32c}`, {
        hint: "the backup's blobs and its file list disagree; run 'pgkeep verify --read-data' to find damaged objects, or restore another backup with --backup",
      })
    }
    return crc32c
  }

  /**
   * Checks the CRC-32C of what is on disk against the backup's, then mode, times and the report. `fh` is any open
   * handle of the file. Both are metadata-only calls, made synchronously (see the file header).
   */
  async #complete(fh: FileHandle, entry: FileEntry, crc: number, bytesWritten: number, changed: boolean): Promise<void> {
    const crc32c = this.#checkCrc(entry, crc)
    fchmodSync(fh.fd, restoredMode('file', entry.mode))
    futimesSync(fh.fd, entry.mtime, entry.mtime)
    await this.ctx.onDone({ entry, crc32c, bytesWritten, changed })
  }

  /** Writes [offset, offset + length) of the file from its extents; holes are skipped (already zeros). */
  async #writeRange(fh: FileHandle, entry: FileEntry, extents: Extent[], offset: number, lengthBytes: number, crc: CrcState): Promise<number> {
    let bufs: Buffer[] = []
    let leases: BlobLease[] = []
    let at = 0
    let gathered = 0
    let written = 0
    // Writes go out without waiting for the previous one (positional, so order does not matter), at most
    // WRITES_IN_FLIGHT at once: decoding the next blobs overlaps the disk. The blobs of a write are released
    // only once it completed: until then the kernel may still read from their buffers.
    const writes = new WriteQueue(WRITES_IN_FLIGHT)
    const flush = async () => {
      if (bufs.length === 0) return
      const n = gathered
      const held = leases
      const done = writeAll(fh, bufs, at).finally(() => {
        for (const l of held) l.release()
      })
      bufs = []
      leases = []
      gathered = 0
      await writes.add(done.then(() => this.ctx.onBytes(0, n)))
      written += n
    }
    const slice = extentsIn(extents, offset, lengthBytes)
    // Read ahead: blobs are requested in batches (read together when they lie close in a pack) while earlier ones
    // are written; a new batch goes out when half of the previous one is used.
    let ahead = 0
    const prefetch = (i: number) => {
      if (ahead - i > READ_AHEAD_EXTENTS / 2) return
      for (ahead = Math.max(ahead, i + 1); ahead < slice.length && ahead <= i + READ_AHEAD_EXTENTS; ahead++) {
        const b = slice[ahead]!.blob
        if (b !== null) this.ctx.cache.prefetch(b)
      }
    }
    try {
      for (let i = 0; i < slice.length; i++) {
        const x = slice[i]!
        this.ctx.signal?.throwIfAborted()
        prefetch(i)
        if (x.blob === null) {
          await flush()
          crc.value = crc32cZeros(crc.value, x.length)
          this.ctx.onBytes(x.length, 0)
          continue
        }
        const lease = await this.#lease(entry, x.blob)
        const bytes = this.#extentBytes(entry, x, lease.bytes)
        crc.value = crc32cUpdate(crc.value, bytes)
        if (bufs.length > 0 && at + gathered !== x.offset) await flush()
        if (bufs.length === 0) at = x.offset
        bufs.push(bytes)
        leases.push(lease)
        gathered += bytes.length
        this.ctx.onBytes(bytes.length, 0)
        if (gathered >= GATHER_BYTES || bufs.length >= GATHER_BUFFERS) await flush()
      }
      await flush()
    } finally {
      // A failure before a gathered write went out: its blobs were never handed to the kernel.
      for (const l of leases) l.release()
      await writes.drain().catch(() => {})
    }
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
          if (x.blob === null) {
            buf.fill(0, dst, dst + x.length)
            continue
          }
          const lease = await this.#lease(entry, x.blob)
          try {
            this.#extentBytes(entry, x, lease.bytes).copy(buf, dst)
          } finally {
            lease.release()
          }
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
    const ref = entry.fileMap!
    const what = `file map of '${entry.path}' in backup ${this.ctx.backupId}`
    let map: FileMap
    if (typeof ref !== 'string') map = inlineFileMapOf(entry, ref)
    else {
      // Through the cache: the task source asks for the maps of the files coming next, so they arrive in runs.
      const lease = await this.#lease(entry, ref)
      try {
        // The map is decoded into objects of its own (no views into the blob), so the blob can go at once.
        map = decodeFileMap(lease.bytes, what)
      } finally {
        lease.release()
      }
    }
    if (map.sizeBytes !== entry.sizeBytes) {
      throw new IntegrityError(`file map of '${entry.path}' in backup ${this.ctx.backupId} describes ${map.sizeBytes} bytes, the file has ${entry.sizeBytes}`)
    }
    return map
  }

  /** The bytes of one extent within its blob's bytes. */
  #extentBytes(entry: FileEntry, x: Extent, blob: Buffer): Buffer {
    if (x.blobOffset + x.length > blob.length) {
      throw new IntegrityError(
        `'${entry.path}' of backup ${this.ctx.backupId} refers to bytes ${x.blobOffset}..${x.blobOffset + x.length} of blob '${x.blob}', which has ${blob.length}`,
      )
    }
    return blob.subarray(x.blobOffset, x.blobOffset + x.length)
  }

  /** A blob from the shared cache, leased; a failure names the file and the backup (a missing blob included). */
  #lease(entry: FileEntry, id: BlobId): Promise<BlobLease> {
    return readNamingFile(entry, id, this.ctx.backupId, () => this.ctx.cache.get(id), this.ctx.signal)
  }
}

/** The running CRC-32C state after `length` zero bytes (a hole). */
function crc32cZeros(state: number, length: number): number {
  let crc = state
  for (let left = length; left > 0; left -= ZEROS.length) crc = crc32cUpdate(crc, ZEROS.subarray(0, Math.min(left, ZEROS.length)))
  return crc
}
