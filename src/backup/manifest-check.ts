// The server's backup_manifest is the oracle for every byte a backup received (invariant 4): each file it lists
// must have arrived with the size and CRC-32C the server computed, nothing else may have arrived, and its WAL range
// must be the backup's.

import { formatLsn, type Lsn } from '../../protocol/index.js'
import { IntegrityError, ProtocolError } from '../errors.js'
import { parseServerManifest } from '../pg/backup-manifest.js'
import { CompressedLines } from '../repo/index.js'

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
 * Checks what arrived against the server's manifest. The server lists its files in the order it sends them, so each
 * is compared with the next file that arrived; from the first one out of that order (or missing), the files not
 * compared yet are looked up by path instead, which finds every difference all the same.
 * @throws IntegrityError listing the first differences
 */
export function checkAgainstManifest(bytes: Buffer, received: ReceivedFiles, startLsn: Lsn, endLsn: Lsn): void {
  const problems: string[] = []
  const arrived = received.files()
  let byPath: Map<string, ReceivedFile> | undefined
  const take = (path: string): ReceivedFile | undefined => {
    if (!byPath) {
      const next = arrived.next()
      if (!next.done && next.value.path === path) return next.value
      byPath = new Map()
      const rest = next.done ? arrived : [next.value, ...arrived]
      for (const f of rest) {
        if (byPath.has(f.path)) problems.push(`'${f.path}' arrived twice`)
        byPath.set(f.path, f)
      }
    }
    const got = byPath.get(path)
    byPath.delete(path)
    return got
  }
  const m = parseServerManifest(bytes, {
    verifyChecksum: true,
    onFile: (f) => {
      const got = take(f.path)
      if (!got) problems.push(`'${f.path}' is in the server's manifest but did not arrive`)
      else if (got.sizeBytes !== f.size) problems.push(`'${f.path}' has ${got.sizeBytes} bytes, the server's manifest says ${f.size}`)
      else if (f.checksumAlgorithm === 'CRC32C' && got.crc32c !== f.checksum) {
        problems.push(`'${f.path}' has CRC-32C ${got.crc32c}, the server's manifest says ${f.checksum}`)
      }
    },
  })
  const unlisted = byPath ? byPath.values() : arrived
  for (const f of unlisted) problems.push(`'${f.path}' arrived but is not in the server's manifest`)
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

/**
 * The server's manifest is held in memory until it is checked, so its size is bounded by what it can describe: a
 * line per file of at most a hex-encoded 4095-byte path plus size, time and checksum, and a header and WAL ranges.
 */
const MANIFEST_BYTES_PER_ENTRY = 8192 + 512
const MANIFEST_BASE_BYTES = 1 << 20

/** @throws ProtocolError when `heldBytes` of manifest exceed what `files` received files can need */
function assertManifestBound(heldBytes: number, files: number): void {
  if (heldBytes <= MANIFEST_BASE_BYTES + files * MANIFEST_BYTES_PER_ENTRY) return
  throw new ProtocolError(`the server's backup_manifest exceeds ${heldBytes} bytes, more than ${files} files can need`, {
    hint: 'PostgreSQL never sends such a manifest: check that the connection leads to a genuine PostgreSQL server; nothing was recorded',
  })
}

/** A first guess of a manifest's bytes per file (a line is 150-250 bytes), so that its buffer is seldom grown. */
const MANIFEST_GUESS_BYTES_PER_FILE = 256

/**
 * The server's manifest as it arrives, in one buffer sized from the number of files received, not in pieces joined
 * at the end: for 120,000 files the pieces and their join were 40 MB at once.
 */
export class HeldManifest {
  #buffer = Buffer.alloc(0)
  #length = 0

  /** @throws ProtocolError when the manifest grows beyond what `filesReceived` files can need */
  add(chunk: Uint8Array, filesReceived: number): void {
    const length = this.#length + chunk.length
    assertManifestBound(length, filesReceived)
    if (length > this.#buffer.length) {
      const size = Math.max(2 * this.#buffer.length, length, MANIFEST_BASE_BYTES + filesReceived * MANIFEST_GUESS_BYTES_PER_FILE)
      const grown = Buffer.allocUnsafe(size)
      this.#buffer.copy(grown, 0, 0, this.#length)
      this.#buffer = grown
    }
    this.#buffer.set(chunk, this.#length)
    this.#length = length
  }

  /** The bytes so far (a view). */
  get bytes(): Buffer {
    return this.#buffer.subarray(0, this.#length)
  }
}
