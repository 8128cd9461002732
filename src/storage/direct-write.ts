// Whole files written past the page cache (O_DIRECT), for the fs driver's large objects (packs).
//
// Why: a buffered write copies every byte into page-cache pages the kernel has to allocate, and on the virtual
// machines pgkeep was measured on that copy is most of what writing costs: 587 MB in 8 MiB writes with fdatasync
// took 1.0-1.4 s of system CPU buffered and 0.08 s with O_DIRECT (`dd ... conv=fdatasync` against `oflag=direct`),
// and in a full backup of the bench data the copy (copy_folio_from_iter_atomic) was 12% of all samples. The
// written pack is not read again soon either: caching it only pushes the database's own pages out of memory on the
// host being backed up. The data still becomes durable the usual way (fdatasync, rename, directory fsync):
// O_DIRECT alone does not flush a device's write cache.
//
// O_DIRECT wants the memory, the file offset and the length aligned to the device's logical block size. Node has
// no aligned allocation, but a WebAssembly memory's buffer starts on a page boundary: the bytes are copied through
// such a staging buffer (a copy in memory that stays resident costs far less than the page-cache one), the last
// block padded with zeros and the file truncated to its length afterwards. Whatever refuses (a file system without
// O_DIRECT, a device with larger blocks, no memory for the staging buffer) turns direct writes off for the
// writer's life, and the caller writes that file the ordinary way.

import { constants, promises as fsp } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import path from 'node:path'

/** Alignment of offsets, lengths and memory: 4 KiB covers the logical block size of every common device. */
const ALIGN = 4096
/** Bytes staged per write(2): 1 MiB wrote 587 MB as fast as 4 MiB did here (dd, 1.08 against 0.96 s). */
const STAGING_BYTES = 1 << 20
const WASM_PAGE_BYTES = 65536
/** Staging buffers kept for the next write (one per write at once; the fs driver runs two pack writes at a time). */
const SPARE_STAGING = 4

/**
 * statfs(2) types of the file systems direct writes are used on: local block file systems where O_DIRECT is plain
 * and was measured (ext4), or is their usual way for large writes (xfs, btrfs). Elsewhere (NFS, where each direct
 * write would be a synchronous round trip; tmpfs, where the page cache is the storage; FUSE; ZFS before 2.3, which
 * ignores the flag) files are written the ordinary way.
 */
const DIRECT_FILE_SYSTEMS = new Set([0xef53 /* ext2/3/4 */, 0x58465342 /* xfs */, 0x9123683e /* btrfs */])

/** Whether `dir` (or, while it does not exist yet, its nearest existing parent) is on such a file system. */
export async function suitsDirectWrites(dir: string): Promise<boolean> {
  for (let at = path.resolve(dir); ; at = path.dirname(at)) {
    try {
      return DIRECT_FILE_SYSTEMS.has((await fsp.statfs(at)).type)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || path.dirname(at) === at) return false
    }
  }
}

/** Thrown by {@link DirectWriter.write} when the kernel refused the direct write itself; the file holds garbage. */
export class DirectWriteRefused extends Error {}

/** Allocates a staging buffer of `bytes` (a multiple of 64 KiB) whose first byte is page-aligned. */
export type StagingAllocator = (bytes: number) => Buffer

// The one piece of WebAssembly used (its memory as an aligned allocation); typed here: tsconfig has no DOM lib.
declare const WebAssembly: { Memory: new (size: { initial: number; maximum: number }) => { buffer: ArrayBuffer } }

/** A buffer of `bytes` (a multiple of 64 KiB) whose first byte lies on a page boundary: a WebAssembly memory's. */
export function pageAlignedBuffer(bytes: number): Buffer {
  const pages = bytes / WASM_PAGE_BYTES
  return Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer)
}

/** Direct writes of whole files, shared by all writes of one fs storage; off for good after the first refusal. */
export class DirectWriter {
  readonly #allocate: StagingAllocator
  readonly #spare: Buffer[] = []
  #on = constants.O_DIRECT !== undefined

  /** `allocate`: tests pass one that returns misaligned memory, to see a real refusal from the kernel. */
  constructor(allocate: StagingAllocator = pageAlignedBuffer) {
    this.#allocate = allocate
  }

  /** Whether direct writes are still tried. */
  get enabled(): boolean {
    return this.#on
  }

  /**
   * Creates `path` exclusively (like flag 'wx') for direct writing, or returns undefined when the file system
   * refuses O_DIRECT (direct writes are then off). Other errors are thrown as they are.
   */
  async create(path: string, mode: number): Promise<FileHandle | undefined> {
    if (!this.#on) return undefined
    try {
      return await fsp.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_DIRECT, mode)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err
      this.#on = false
      return undefined
    }
  }

  /**
   * Writes `data` from offset 0 of `fh` (opened by {@link create}, empty) and truncates the file to its length.
   * Throws DirectWriteRefused, after turning direct writes off, when the kernel refuses the alignment or no staging
   * memory can be had; any other error (ENOSPC, EIO) as it is.
   */
  async write(fh: FileHandle, data: Uint8Array): Promise<void> {
    const staging = this.#takeStaging()
    try {
      for (let pos = 0; pos < data.byteLength; pos += STAGING_BYTES) {
        const n = Math.min(STAGING_BYTES, data.byteLength - pos)
        staging.set(data.subarray(pos, pos + n))
        const padded = Math.ceil(n / ALIGN) * ALIGN
        // The padding is cut off below; zeros, so that no byte of an earlier file reaches the disk even briefly.
        if (padded > n) staging.fill(0, n, padded)
        await this.#writeBlocks(fh, staging.subarray(0, padded), pos)
      }
      if (data.byteLength % ALIGN !== 0) await fh.truncate(data.byteLength)
    } finally {
      if (this.#spare.length < SPARE_STAGING) this.#spare.push(staging)
    }
  }

  async #writeBlocks(fh: FileHandle, blocks: Buffer, position: number): Promise<void> {
    let off = 0
    while (off < blocks.length) {
      let written: number
      try {
        ;({ bytesWritten: written } = await fh.write(blocks, off, blocks.length - off, position + off))
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err
        this.#on = false
        throw new DirectWriteRefused('the kernel refused a direct write (alignment)', { cause: err })
      }
      // write(2) stops short on a regular file only at a full disk: the next call reports ENOSPC (or, had it stopped
      // inside a block, EINVAL for the misaligned rest, and the file is written again the ordinary way). Nothing
      // written at all would loop here for ever: taken as a refusal too.
      if (written === 0) {
        this.#on = false
        throw new DirectWriteRefused('a direct write wrote nothing')
      }
      off += written
    }
  }

  #takeStaging(): Buffer {
    const spare = this.#spare.pop()
    if (spare) return spare
    try {
      return this.#allocate(STAGING_BYTES)
    } catch (err) {
      this.#on = false
      throw new DirectWriteRefused('no memory for a direct write staging buffer', { cause: err })
    }
  }
}
