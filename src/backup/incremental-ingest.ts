// Ingests an `INCREMENTAL.<relfilenode>` file of a server-side incremental backup (PostgreSQL 17+): the blocks it
// carries are new; every other block below truncation_block_length is the parent's, and anything beyond is zeros
// (pg_combinebackup's rules, protocol.md §7). The result is an ordinary file map, so the backup restores on its own:
// version 3 (page CRCs: the changed blocks' computed, the parent's for the others) unless the parent's map has no
// page CRCs, then that map's version.

import { FormatError } from '../errors.js'
import { crc32c, crc32cFinal, crc32cInit, crc32cUpdate } from '../pg/crc32c.js'
import { decodeIncrementalHeader, type IncrementalHeader, incrementalHeaderBytesNeeded } from '../pg/incremental-file.js'
import { isAllZero } from '../pg/page.js'
import {
  type FileMap,
  PAGE_BYTES,
  PAGE_CRC_BYTES,
  PAGE_HASH_ALGORITHM,
  PAGE_HASH_BYTES,
  type PageHashAlgorithm,
  pageCountOf,
  UNKNOWN_WINDOW,
  WINDOW_PAGES,
  type WindowHash,
  type WindowStore,
} from '../repo/index.js'
import { ExtentBuilder, type IngestStats } from './extent-builder.js'
import { fillZeroPageCrcs } from './page-crcs.js'

/** The parent backup lacks what an INCREMENTAL file builds on; the engine then takes a full backup instead. */
export class ParentFileMissingError extends Error {
  constructor(readonly path: string) {
    super(`the parent backup has no file map for '${path}', which the server sent incrementally`)
  }
}

/**
 * Ingests one INCREMENTAL file. Changed blocks that are not all zeros are gathered into blobs of up to one window,
 * whose analysis brings their page hashes.
 */
export class IncrementalFileIngest {
  readonly stats: IngestStats = { storedBytes: 0, reusedBytes: 0 }
  /** Made once the header tells how many blocks follow. */
  private out!: ExtentBuilder
  private head: Buffer = Buffer.alloc(0)
  private header: IncrementalHeader | undefined
  private readonly page = Buffer.allocUnsafe(PAGE_BYTES)
  private pageFill = 0
  private nextImage = 0
  /** Next block (relative to the segment) not yet placed. */
  private cursor = 0
  private crc = crc32cInit()
  private receivedBytes = 0
  private pageHashes = Buffer.alloc(0)
  /** The new map's page CRCs; undefined when the parent's map has none for the blocks it keeps. */
  private pageCrcs: Buffer | undefined
  private lengthBlocks = 0
  private reuseLimit = 0
  private readonly touchedWindows = new Set<number>()
  private readonly algorithm: PageHashAlgorithm

  constructor(
    private readonly store: WindowStore,
    readonly path: string,
    private readonly parent: FileMap | undefined,
  ) {
    this.algorithm = parent?.pageHashAlgorithm ?? PAGE_HASH_ALGORITHM
  }

  async push(chunk: Buffer): Promise<void> {
    this.crc = crc32cUpdate(this.crc, chunk)
    this.receivedBytes += chunk.length
    let at = 0
    if (!this.header) {
      this.head = Buffer.concat([this.head, chunk])
      const need = incrementalHeaderBytesNeeded(this.head)
      if (this.head.length < need) return
      this.start(decodeIncrementalHeader(this.head.subarray(0, need))!)
      chunk = this.head.subarray(need)
      this.head = Buffer.alloc(0)
    }
    while (at < chunk.length) {
      const n = chunk.copy(this.page, this.pageFill, at)
      this.pageFill += n
      at += n
      if (this.pageFill === PAGE_BYTES) {
        this.pageFill = 0
        await this.changedBlock()
      }
    }
  }

  private start(h: IncrementalHeader): void {
    this.header = h
    const maxBlock = h.blockCount > 0 ? h.blockNumbers[h.blockCount - 1] + 1 : 0
    this.lengthBlocks = Math.max(h.truncationBlockLength, maxBlock)
    this.pageHashes = Buffer.alloc(this.lengthBlocks * PAGE_HASH_BYTES)
    if (this.algorithm === 'xxh64' && (!this.parent || this.parent.pageCrcs)) this.pageCrcs = Buffer.alloc(this.lengthBlocks * PAGE_CRC_BYTES)
    const parentBlocks = this.parent ? pageCountOf(this.parent.sizeBytes) : 0
    // Without a parent every block below the truncation length must be in the file (ascending, unique numbers).
    const t = h.truncationBlockLength
    const carriesAll = t === 0 || (h.blockCount >= t && h.blockNumbers[t - 1] === t - 1)
    if (!this.parent && !carriesAll) throw new ParentFileMissingError(this.path)
    this.reuseLimit = Math.min(h.truncationBlockLength, parentBlocks)
    // The page hashes of changed blocks come back with their blob's analysis.
    this.out = new ExtentBuilder(this.store, this.stats, {
      algorithm: this.algorithm,
      onPageHash: (offset, hash) => hash.copy(this.pageHashes, (offset / PAGE_BYTES) * PAGE_HASH_BYTES),
    })
  }

  private async changedBlock(): Promise<void> {
    const h = this.header!
    if (this.nextImage >= h.blockCount) throw new FormatError(`'${this.path}' has more block images than its header lists`)
    const block = h.blockNumbers[this.nextImage++]
    this.placeUpTo(block)
    const offset = block * PAGE_BYTES
    this.touchedWindows.add(Math.floor(block / WINDOW_PAGES))
    this.pageCrcs?.writeUInt32LE(crc32c(this.page), block * PAGE_CRC_BYTES)
    if (isAllZero(this.page)) {
      this.out.hole(offset, PAGE_BYTES)
    } else {
      await this.out.changedPage(this.page, offset)
    }
    this.cursor = block + 1
  }

  /** Places the blocks before `block` that the file does not carry: the parent's, or zeros past its end. */
  private placeUpTo(block: number): void {
    if (block <= this.cursor) return
    const reuseEnd = Math.max(this.cursor, Math.min(block, this.reuseLimit))
    if (reuseEnd > this.cursor) {
      const from = this.cursor * PAGE_HASH_BYTES
      this.parent!.pageHashes.copy(this.pageHashes, from, from, reuseEnd * PAGE_HASH_BYTES)
      if (this.pageCrcs) this.parent!.pageCrcs!.copy(this.pageCrcs, this.cursor * PAGE_CRC_BYTES, this.cursor * PAGE_CRC_BYTES, reuseEnd * PAGE_CRC_BYTES)
      this.out.reuse(this.parent!, this.cursor * PAGE_BYTES, (reuseEnd - this.cursor) * PAGE_BYTES)
    }
    if (block > reuseEnd) {
      if (this.pageCrcs) fillZeroPageCrcs(this.pageCrcs, reuseEnd, block)
      this.out.hole(reuseEnd * PAGE_BYTES, (block - reuseEnd) * PAGE_BYTES)
    }
    this.cursor = block
  }

  /**
   * Completes the file. Resolves with the file map of the rebuilt file, and the size and CRC-32C of the
   * INCREMENTAL file itself (what the server's manifest lists).
   */
  async finish(): Promise<{ fileMap: FileMap; incrementalSizeBytes: number; incrementalCrc32c: number }> {
    const h = this.header
    if (!h) throw new FormatError(`'${this.path}' ended inside its header`)
    if (this.nextImage !== h.blockCount || this.pageFill !== 0) {
      throw new FormatError(`'${this.path}' ended after ${this.nextImage} of ${h.blockCount} block images`)
    }
    this.placeUpTo(this.lengthBlocks)
    const extents = await this.out.finish()
    const sizeBytes = this.lengthBlocks * PAGE_BYTES
    const fileMap: FileMap =
      this.algorithm === 'sha256-64'
        ? { sizeBytes, pageHashAlgorithm: this.algorithm, windowHashes: this.windowHashes(), pageHashes: this.pageHashes, extents }
        : this.pageCrcs
          ? { sizeBytes, pageHashAlgorithm: this.algorithm, pageHashes: this.pageHashes, pageCrcs: this.pageCrcs, extents }
          : { sizeBytes, pageHashAlgorithm: this.algorithm, pageHashes: this.pageHashes, extents }
    return {
      fileMap,
      incrementalSizeBytes: this.receivedBytes,
      incrementalCrc32c: crc32cFinal(this.crc),
    }
  }

  /**
   * Version 1 maps: a window keeps the parent's hash only when it is entirely the parent's, unchanged and equally
   * long.
   */
  private windowHashes(): WindowHash[] {
    const out: WindowHash[] = []
    const p = this.parent
    const parentBlocks = p ? pageCountOf(p.sizeBytes) : 0
    for (let start = 0, k = 0; start < this.lengthBlocks; start += WINDOW_PAGES, k++) {
      const end = Math.min(start + WINDOW_PAGES, this.lengthBlocks)
      const parentEnd = Math.min(start + WINDOW_PAGES, parentBlocks)
      if (this.touchedWindows.has(k)) out.push(UNKNOWN_WINDOW)
      else if (p?.windowHashes && end <= this.reuseLimit && parentEnd === end) out.push(p.windowHashes[k] ?? UNKNOWN_WINDOW)
      else if (start >= this.reuseLimit) out.push(null)
      else out.push(UNKNOWN_WINDOW)
    }
    return out
  }
}
