// Builds a file's extents in file order while its content arrives: ranges reused from the parent backup, holes,
// windows stored as blobs, and changed pages gathered into blobs of up to one window. Extents after changed pages
// that are still being gathered wait with them, so the list stays in order.

import type { BlobId, PageHashAlgorithm, WindowStore } from '../repo/index.js'
import { type Extent, extentsIn, type FileMap, PAGE_BYTES, PAGE_HASH_BYTES, pushExtent, WINDOW_PAGES } from '../repo/index.js'

/** Page hashes of changed pages, for a caller whose file map needs them (relation windows bring their own). */
export interface ChangedPageHashes {
  readonly algorithm: PageHashAlgorithm
  /** Called with the hash of every changed page, once its blob is analysed. */
  readonly onPageHash: (offset: number, hash: Buffer) => void
}

export interface IngestStats {
  /** Plain bytes of blobs this file added to the repository (0 for content already there). */
  storedBytes: number
  /** Bytes of the file taken from the parent backup without storing anything. */
  reusedBytes: number
}

/** A parent's blob that the new backup would reference is gone: the parent cannot be trusted as a base. */
export class ParentBlobMissingError extends Error {
  constructor(readonly blob: BlobId) {
    super(`blob '${blob}' of the parent backup is missing from the repository`)
  }
}

export class ExtentBuilder {
  readonly extents: Extent[] = []
  private changed: Buffer
  private changedPages = 0
  private pending: Extent[] = []

  /** @param hashes page hashes of changed pages, when the caller's file map needs them */
  constructor(
    private readonly store: WindowStore,
    readonly stats: IngestStats,
    private readonly hashes?: ChangedPageHashes,
  ) {
    this.changed = store.takeBuffer()
  }

  /** The parent's bytes [offset, offset + length) stay as they are; their blobs must still exist. */
  reuse(parent: FileMap, offset: number, length: number): void {
    for (const e of extentsIn(parent.extents, offset, length)) {
      if (e.blob !== null && !this.store.hasBlob(e.blob)) throw new ParentBlobMissingError(e.blob)
      this.add(e)
    }
    this.stats.reusedBytes += length
  }

  hole(offset: number, length: number): void {
    this.add({ offset, length, blob: null, blobOffset: 0 })
  }

  /** Places blob `id` (an analysed window, which passes to the builder) at `offset` and stores it. */
  async window(id: BlobId, window: Buffer, offset: number): Promise<void> {
    this.add({ offset, length: window.length, blob: id, blobOffset: 0 })
    await this.#store(id, window)
  }

  /** A changed page; stored with other changed pages of the file in blobs of up to one window. */
  async changedPage(page: Buffer, offset: number): Promise<void> {
    page.copy(this.changed, this.changedPages * PAGE_BYTES)
    // The blob is not known yet: '' until the gathered pages are stored.
    this.pending.push({ offset, length: PAGE_BYTES, blob: '', blobOffset: this.changedPages * PAGE_BYTES })
    this.changedPages++
    if (this.changedPages === WINDOW_PAGES) await this.storeChanged()
  }

  /** Resolves with the extents once every blob is stored (added to the repository). */
  async finish(): Promise<Extent[]> {
    await this.storeChanged()
    await this.store.drain()
    this.store.recycle(this.changed)
    return this.extents
  }

  private add(e: Extent): void {
    if (this.changedPages > 0) this.pending.push(e)
    else pushExtent(this.extents, e)
  }

  private async storeChanged(): Promise<void> {
    if (this.changedPages === 0) return
    const bytes = this.changed.subarray(0, this.changedPages * PAGE_BYTES)
    const pending = this.pending
    this.changedPages = 0
    this.pending = []
    this.changed = this.store.takeBuffer()
    const f = await this.store.analyze(bytes, { id: true, pageHashes: this.hashes?.algorithm })
    // Changed pages are never all zeros (those are holes), so the analysis has an id.
    const id = f.id!
    if (this.hashes) {
      for (const e of pending) {
        if (e.blob !== '') continue
        const at = (e.blobOffset / PAGE_BYTES) * PAGE_HASH_BYTES
        this.hashes.onPageHash(e.offset, f.pageHashes!.subarray(at, at + PAGE_HASH_BYTES))
      }
    }
    for (const e of pending) pushExtent(this.extents, e.blob === '' ? { ...e, blob: id } : e)
    await this.#store(id, f.window)
  }

  #store(id: BlobId, window: Buffer): Promise<void> {
    const length = window.length
    return this.store.store(id, window, (stored) => {
      if (stored) this.stats.storedBytes += length
    })
  }
}
