// The backup_manifest of a restored directory (protocol.md §6.3), written as files complete, in whatever order
// the workers finish them, into a temporary file that becomes `backup_manifest` only at the very end. Memory does
// not depend on the number of files: each line goes out as it is made.

import { rename, rm, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { ManifestWalRange } from '../pg/backup-manifest.js'
import { ManifestWriter, type ManifestFileInput, type ManifestHeader } from '../pg/backup-manifest-writer.js'
import { openNoFollow } from './target-tree.js'

export const MANIFEST_NAME = 'backup_manifest'
export const MANIFEST_TEMP_NAME = 'backup_manifest.pgkeep-partial'
const FLUSH_BYTES = 64 * 1024

/** Paths that never go into the restored manifest: pg_verifybackup skips them, or they are the manifest. */
export function excludedFromManifest(path: string): boolean {
  return path === MANIFEST_NAME || path === MANIFEST_TEMP_NAME || path === 'pg_wal' || path.startsWith('pg_wal/')
}

export class RestoredManifest {
  readonly #writer: ManifestWriter
  #pending: Uint8Array[] = []
  #pendingBytes = 0
  #position = 0
  /** Writes are chained, so lines land in the order add() was called. */
  #chain: Promise<void> = Promise.resolve()

  private constructor(
    private readonly dir: string,
    private readonly fh: FileHandle,
    header: ManifestHeader,
  ) {
    this.#writer = new ManifestWriter(header)
  }

  /** Starts the temporary manifest in `dir` (the data directory). */
  static async create(dir: string, header: ManifestHeader): Promise<RestoredManifest> {
    return new RestoredManifest(dir, await openNoFollow(join(dir, MANIFEST_TEMP_NAME), 'create'), header)
  }

  /**
   * Lists one file (ignored for paths the manifest leaves out). Returns the writes in flight only when this line
   * started one, for the caller to wait on; otherwise nothing: a promise per file, awaited by a chain of callbacks,
   * was among the largest allocations of a restore of many small files. A failed write is thrown by the next call
   * that returns the writes, or by finish().
   */
  add(f: ManifestFileInput & { path: string }): Promise<void> | undefined {
    if (excludedFromManifest(f.path)) return undefined
    const bytes = this.#writer.addFile(f)
    this.#pending.push(bytes)
    this.#pendingBytes += bytes.byteLength
    if (this.#pendingBytes < FLUSH_BYTES) return undefined
    this.#flush()
    return this.#chain
  }

  #flush(): void {
    const parts = this.#pending
    this.#pending = []
    this.#pendingBytes = 0
    this.#chain = this.#chain.then(async () => {
      const buf = Buffer.concat(parts)
      let off = 0
      while (off < buf.length) {
        const { bytesWritten } = await this.fh.write(buf, off, buf.length - off, this.#position)
        off += bytesWritten
        this.#position += bytesWritten
      }
    })
    // Handled, as nobody may be waiting on it when a write fails; the failure stays in the chain for the next waiter.
    this.#chain.catch(() => {})
  }

  /** Writes the WAL ranges and the checksum, syncs, and renames the file to `backup_manifest`. */
  async finish(walRanges: readonly ManifestWalRange[], sync: boolean): Promise<void> {
    this.#pending.push(this.#writer.finish(walRanges))
    this.#flush()
    await this.#chain
    if (sync) await this.fh.sync()
    await this.fh.close()
    await rename(join(this.dir, MANIFEST_TEMP_NAME), join(this.dir, MANIFEST_NAME))
  }

  /** Drops the temporary file (after a failure). */
  async discard(): Promise<void> {
    await this.#chain.catch(() => {})
    await this.fh.close().catch(() => {})
    await rm(join(this.dir, MANIFEST_TEMP_NAME), { force: true })
  }
}
