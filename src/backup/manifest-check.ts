// The server's backup_manifest is the oracle for every byte a backup received (invariant 4): each file it lists
// must have arrived with the size and CRC-32C the server computed, nothing else may have arrived, and its WAL range
// must be the backup's.

import { formatLsn, type Lsn } from '../../protocol/index.js'
import { IntegrityError, ProtocolError } from '../errors.js'
import { type ManifestFile, ManifestStream, parseServerManifest, type ServerManifest } from '../pg/backup-manifest.js'
import { type BlobId, CompressedLines } from '../repo/index.js'

/** Size and CRC-32C of a file as received, to compare with the server's manifest. */
export interface ReceivedFile {
  path: string
  sizeBytes: number
  crc32c: string
}

/**
 * The files a backup received, in the order they arrived, held compressed until the manifest comes at the very end
 * (a map of every file was 10-20 MB of the JS heap for 60,000 files).
 */
export class ReceivedFiles {
  readonly #lines = new CompressedLines()

  add(f: ReceivedFile): void {
    this.#lines.push(JSON.stringify([f.path, f.sizeBytes, f.crc32c]))
  }

  get count(): number {
    return this.#lines.count
  }

  /** In the order they arrived. */
  *files(): Generator<ReceivedFile> {
    for (const line of this.#lines.lines()) {
      const [path, sizeBytes, crc32c] = JSON.parse(line) as [string, number, string]
      yield { path, sizeBytes, crc32c }
    }
  }
}

/**
 * Compares the server's manifest, file by file, with what arrived. The server lists its files in the order it sends
 * them, so each is compared with the next file that arrived; from the first one out of that order (or missing), the
 * files not compared yet are looked up by path instead, which finds every difference all the same.
 */
class ReceivedMatcher {
  readonly problems: string[] = []
  readonly #arrived: Generator<ReceivedFile>
  #byPath: Map<string, ReceivedFile> | undefined

  constructor(received: ReceivedFiles) {
    this.#arrived = received.files()
  }

  /** One file of the manifest, in its order. */
  compare(f: ManifestFile): void {
    const got = this.#take(f.path)
    if (!got) this.problems.push(`'${f.path}' is in the server's manifest but did not arrive`)
    else if (got.sizeBytes !== f.size) this.problems.push(`'${f.path}' has ${got.sizeBytes} bytes, the server's manifest says ${f.size}`)
    else if (f.checksumAlgorithm === 'CRC32C' && got.crc32c !== f.checksum) {
      this.problems.push(`'${f.path}' has CRC-32C ${got.crc32c}, the server's manifest says ${f.checksum}`)
    }
  }

  #take(path: string): ReceivedFile | undefined {
    if (!this.#byPath) {
      const next = this.#arrived.next()
      if (!next.done && next.value.path === path) return next.value
      this.#byPath = new Map()
      const rest = next.done ? this.#arrived : [next.value, ...this.#arrived]
      for (const f of rest) {
        if (this.#byPath.has(f.path)) this.problems.push(`'${f.path}' arrived twice`)
        this.#byPath.set(f.path, f)
      }
    }
    const got = this.#byPath.get(path)
    this.#byPath.delete(path)
    return got
  }

  /**
   * After the manifest's last file: what arrived and is not listed, a WAL range other than the backup's.
   * @throws IntegrityError listing the first differences
   */
  end(m: ServerManifest, startLsn: Lsn, endLsn: Lsn): void {
    const problems = this.problems
    for (const f of this.#byPath ? this.#byPath.values() : this.#arrived) problems.push(`'${f.path}' arrived but is not in the server's manifest`)
    const last = m.walRanges[m.walRanges.length - 1]
    if (m.walRanges.length === 0 || m.walRanges[0].startLsn !== startLsn || last.endLsn !== endLsn) {
      problems.push(`the manifest's WAL range does not match the backup's ${formatLsn(startLsn)}..${formatLsn(endLsn)}`)
    }
    if (problems.length > 0) {
      const more = problems.length > 5 ? ` (and ${problems.length - 5} more)` : ''
      throw new IntegrityError(`the backup does not match the server's manifest: ${problems.slice(0, 5).join('; ')}${more}`, {
        hint: 'the data was damaged in transit or by a bug; nothing was recorded, run the backup again',
      })
    }
  }
}

/**
 * Checks what arrived against the server's manifest, held whole (see ReceivedMatcher).
 * @throws IntegrityError listing the first differences
 */
export function checkAgainstManifest(bytes: Uint8Array, received: ReceivedFiles, startLsn: Lsn, endLsn: Lsn): void {
  const matcher = new ReceivedMatcher(received)
  const m = parseServerManifest(bytes, { verifyChecksum: true, onFile: (f) => matcher.compare(f) })
  matcher.end(m, startLsn, endLsn)
}

/**
 * The server's manifest is bounded by what it can describe: a line per file of at most a hex-encoded 4095-byte path
 * plus size, time and checksum, and a header and WAL ranges.
 */
const MANIFEST_BYTES_PER_ENTRY = 8192 + 512
const MANIFEST_BASE_BYTES = 1 << 20

/** @throws ProtocolError when `bytes` of manifest exceed what `files` received files can need */
function assertManifestBound(bytes: number, files: number): void {
  if (bytes <= MANIFEST_BASE_BYTES + files * MANIFEST_BYTES_PER_ENTRY) return
  throw new ProtocolError(`the server's backup_manifest exceeds ${bytes} bytes, more than ${files} files can need`, {
    hint: 'PostgreSQL never sends such a manifest: check that the connection leads to a genuine PostgreSQL server; nothing was recorded',
  })
}

/**
 * The manifest's pieces in the repository (blobs of this size, the last one shorter). A window, as other blobs: a
 * piece is held while it fills, and a larger one grew the codec's scratch buffer with it (4 MiB pieces held 8 MB at
 * the end of a backup of 20,000 tables, its peak).
 */
export const MANIFEST_PIECE_BYTES = 1 << 20

/** Where the manifest's pieces go, and how they are read back. */
export interface ManifestPieceStore {
  put(piece: Uint8Array): Promise<BlobId>
  read(id: BlobId): Promise<Uint8Array>
}

/**
 * The server's manifest as it arrives, after every file of the backup: stored in pieces and checked against what
 * arrived line by line (ManifestStream), so that it is never held whole (16 MB for 120,000 files, at the end of a
 * backup, when the file list is written too). A manifest laid out otherwise than PostgreSQL writes it is read back
 * from its pieces and checked whole, with the same result.
 */
export class ManifestIntake {
  readonly #received: ReceivedFiles
  readonly #store: ManifestPieceStore
  readonly #matcher: ReceivedMatcher
  readonly #stream: ManifestStream
  readonly #pieces: BlobId[] = []
  #piece = Buffer.allocUnsafe(0)
  #filled = 0
  #bytes = 0

  constructor(received: ReceivedFiles, store: ManifestPieceStore) {
    this.#received = received
    this.#store = store
    this.#matcher = new ReceivedMatcher(received)
    this.#stream = new ManifestStream((f) => this.#matcher.compare(f))
  }

  /**
   * The next bytes (not kept: copied before anything is awaited).
   * @throws ProtocolError when the manifest grows beyond what the files received can need
   * @throws FormatError for a file line that fails its checks
   */
  async add(chunk: Uint8Array): Promise<void> {
    this.#bytes += chunk.length
    assertManifestBound(this.#bytes, this.#received.count)
    this.#stream.push(chunk)
    const full: Buffer[] = []
    for (let at = 0; at < chunk.length; ) {
      if (this.#filled === this.#piece.length) {
        if (this.#filled > 0) full.push(this.#piece)
        this.#piece = Buffer.allocUnsafe(MANIFEST_PIECE_BYTES)
        this.#filled = 0
      }
      const n = Math.min(chunk.length - at, this.#piece.length - this.#filled)
      this.#piece.set(chunk.subarray(at, at + n), this.#filled)
      this.#filled += n
      at += n
    }
    for (const p of full) this.#pieces.push(await this.#store.put(p))
  }

  /**
   * After the last byte: checks the manifest and what arrived against each other, and stores the last piece.
   * Resolves the pieces' blob ids, in order.
   * @throws IntegrityError listing the first differences, or when the manifest's checksum does not match
   * @throws FormatError when it is no valid manifest
   */
  async finish(startLsn: Lsn, endLsn: Lsn): Promise<BlobId[]> {
    if (this.#filled > 0) this.#pieces.push(await this.#store.put(this.#piece.subarray(0, this.#filled)))
    this.#piece = Buffer.allocUnsafe(0)
    const m = this.#stream.finish({ verifyChecksum: true })
    if (m) this.#matcher.end(m, startLsn, endLsn)
    else {
      const whole = Buffer.concat(await Promise.all(this.#pieces.map((id) => this.#store.read(id))))
      checkAgainstManifest(whole, this.#received, startLsn, endLsn)
    }
    return this.#pieces
  }
}
