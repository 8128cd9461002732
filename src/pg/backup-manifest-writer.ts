// Writes a `backup_manifest` the way the server does, byte for byte (src/backend/backup/backup_manifest.c,
// src/backend/utils/adt/json.c escape_json): restore lists what it wrote in one, for pg_verifybackup.

import { createHash, type Hash } from 'node:crypto'
import { FormatError } from '../errors.js'
import { type ChecksumAlgorithm, CHECKSUM_HEX_LENGTH, type ManifestWalRange } from './backup-manifest.js'
import { formatLsn } from './lsn.js'

const HEX = /^(?:[0-9a-fA-F]{2})*$/
const strictUtf8 = new TextDecoder('utf-8', { fatal: true })

/** A file to list in a manifest. A parsed {@link ManifestFile} is accepted as is. */
export interface ManifestFileInput {
  /** The relative path as a string (written as UTF-8), or as raw bytes. */
  path: string | Uint8Array
  /** Raw name bytes; when given they win over `path` (a parsed Encoded-Path entry has them). */
  pathBytes?: Uint8Array
  size: number
  /**
   * A Date (formatted in UTC) or an already formatted `YYYY-MM-DD HH:MM:SS GMT`. The server always writes it;
   * undefined leaves the field out (only to reproduce a manifest that lacked it).
   */
  lastModified?: Date | string
  checksumAlgorithm?: ChecksumAlgorithm
  checksum?: string
}

/** The manifest header. */
export interface ManifestHeader {
  /** 1 for clusters 13–16, 2 for 17+ (then `systemId` is required). */
  version: 1 | 2
  systemId?: bigint
  /** Write every path as Encoded-Path, like `MANIFEST 'force-encode'`. */
  forceEncode?: boolean
}

/**
 * Formats a time the way the server writes Last-Modified (`%Y-%m-%d %H:%M:%S %Z` of pg_gmtime): UTC, whole
 * seconds, e.g. `2026-11-21 05:27:37 GMT`.
 */
export function formatManifestTimestamp(date: Date): string {
  if (Number.isNaN(date.getTime())) throw new FormatError('invalid date for a manifest timestamp')
  const p = (n: number, w = 2): string => String(n).padStart(w, '0')
  return (
    `${p(date.getUTCFullYear(), 4)}-${p(date.getUTCMonth() + 1)}-${p(date.getUTCDate())} ` +
    `${p(date.getUTCHours())}:${p(date.getUTCMinutes())}:${p(date.getUTCSeconds())} GMT`
  )
}

const JSON_ESCAPES: Readonly<Record<string, string>> = {
  '\b': '\\b',
  '\f': '\\f',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '"': '\\"',
  '\\': '\\\\',
}

/**
 * JSON-quotes a string the way PostgreSQL's escape_json does: `\b \f \n \r \t \" \\`, other control characters
 * as `\u00xx` (lowercase hex), everything else (DEL and non-ASCII included) unchanged.
 */
export function escapeJsonString(s: string): string {
  // eslint-disable-next-line no-control-regex
  return `"${s.replace(/[\u0000-\u001f"\\]/g, (c) => JSON_ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}"`
}

function isValidUtf8(bytes: Uint8Array): boolean {
  try {
    strictUtf8.decode(bytes)
    return true
  } catch {
    return false
  }
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/
const TIMESTAMP = /^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$/

/** One file line (without the separator before it), exactly as backup_manifest.c AddFileToBackupManifest. */
function fileLine(f: ManifestFileInput, forceEncode: boolean): string {
  let pathField: string
  const raw = f.pathBytes ?? (typeof f.path === 'string' ? undefined : f.path)
  if (raw !== undefined) {
    if (raw.byteLength === 0) throw new FormatError('empty path in manifest')
    pathField =
      !forceEncode && isValidUtf8(raw)
        ? `"Path": ${escapeJsonString(strictUtf8.decode(raw))}`
        : `"Encoded-Path": "${Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('hex')}"`
  } else {
    const path = f.path as string
    if (path === '') throw new FormatError('empty path in manifest')
    if (LONE_SURROGATE.test(path)) {
      throw new FormatError(`path '${path}' is not representable in UTF-8`, { hint: 'pass the raw name bytes as pathBytes' })
    }
    pathField = forceEncode ? `"Encoded-Path": "${Buffer.from(path, 'utf8').toString('hex')}"` : `"Path": ${escapeJsonString(path)}`
  }
  if (!Number.isSafeInteger(f.size) || f.size < 0) throw new FormatError(`invalid size ${f.size} in manifest`)
  let line = `{ ${pathField}, "Size": ${f.size}`
  if (f.lastModified !== undefined) {
    const lastModified = typeof f.lastModified === 'string' ? f.lastModified : formatManifestTimestamp(f.lastModified)
    if (!TIMESTAMP.test(lastModified)) throw new FormatError(`invalid Last-Modified '${lastModified}'`)
    line += `, "Last-Modified": "${lastModified}"`
  }
  if (f.checksumAlgorithm !== undefined) {
    const want = CHECKSUM_HEX_LENGTH[f.checksumAlgorithm]
    if (want === undefined) throw new FormatError(`unknown checksum algorithm '${f.checksumAlgorithm}'`)
    if (f.checksum === undefined || f.checksum.length !== want || !HEX.test(f.checksum)) {
      throw new FormatError(`invalid ${f.checksumAlgorithm} checksum '${f.checksum ?? ''}' in manifest`)
    }
    line += `, "Checksum-Algorithm": "${f.checksumAlgorithm}", "Checksum": "${f.checksum.toLowerCase()}"`
  } else if (f.checksum !== undefined) {
    throw new FormatError('manifest checksum without an algorithm')
  }
  return `${line} }`
}

/**
 * Writes a backup_manifest incrementally, byte for byte as the server does: `addFile` for each file, then
 * `finish` with the WAL ranges. Each call returns the bytes to append; a SHA-256 of them is kept as they go, so
 * memory does not depend on the number of files.
 *
 * Layout: `{ "PostgreSQL-Backup-Manifest-Version": N,⏎` [`"System-Identifier": id,⏎`] `"Files": [`, then per
 * file `⏎` (first) or `,⏎` (others) and one object, then `⏎],⏎"WAL-Ranges": [⏎`, ranges joined by `,⏎`,
 * `⏎],⏎`, and finally `"Manifest-Checksum": "<sha256 of all before>"}⏎`.
 */
export class ManifestWriter {
  readonly #hash: Hash = createHash('sha256')
  readonly #forceEncode: boolean
  #header: string | undefined
  #files = 0
  #finished = false

  constructor(header: ManifestHeader) {
    if (header.version !== 1 && header.version !== 2) throw new FormatError(`unsupported manifest version ${String(header.version)}`)
    if (header.version === 2 && header.systemId === undefined) throw new FormatError('a version 2 manifest needs a system identifier')
    if (header.version === 1 && header.systemId !== undefined) {
      throw new FormatError('a version 1 manifest has no system identifier', { hint: 'use version 2 for PostgreSQL 17+' })
    }
    if (header.systemId !== undefined && (header.systemId < 0n || header.systemId > 0xffff_ffff_ffff_ffffn)) {
      throw new FormatError(`system identifier out of range: ${header.systemId}`)
    }
    this.#forceEncode = header.forceEncode === true
    this.#header =
      `{ "PostgreSQL-Backup-Manifest-Version": ${header.version},\n` +
      (header.version === 2 ? `"System-Identifier": ${header.systemId!.toString()},\n` : '') +
      '"Files": ['
  }

  /** Number of files added so far. */
  get fileCount(): number {
    return this.#files
  }

  #emit(text: string): Uint8Array {
    const bytes = Buffer.from(text, 'utf8')
    this.#hash.update(bytes)
    return bytes
  }

  #prefix(): string {
    if (this.#finished) throw new FormatError('manifest writer already finished')
    const h = this.#header ?? ''
    this.#header = undefined
    return h
  }

  /** Adds one file; returns the bytes to append (the header too, on the first call). */
  addFile(file: ManifestFileInput): Uint8Array {
    const line = fileLine(file, this.#forceEncode)
    const text = `${this.#prefix()}${this.#files === 0 ? '\n' : ',\n'}${line}`
    this.#files++
    return this.#emit(text)
  }

  /** Ends the file list, writes the WAL ranges and the Manifest-Checksum line; returns the last bytes. */
  finish(walRanges: readonly ManifestWalRange[]): Uint8Array {
    const ranges = walRanges
      .map((r) => {
        if (!Number.isInteger(r.timeline) || r.timeline < 1 || r.timeline > 0xffff_ffff) {
          throw new FormatError(`invalid timeline ${r.timeline} in WAL range`)
        }
        return `{ "Timeline": ${r.timeline}, "Start-LSN": "${formatLsn(r.startLsn)}", "End-LSN": "${formatLsn(r.endLsn)}" }`
      })
      .join(',\n')
    const body = this.#emit(`${this.#prefix()}\n],\n"WAL-Ranges": [\n${ranges}\n],\n`)
    this.#finished = true
    const tail = Buffer.from(`"Manifest-Checksum": "${this.#hash.digest('hex')}"}\n`, 'utf8')
    return Buffer.concat([body, tail])
  }
}

/** A whole manifest to format at once. */
export interface ManifestContent extends ManifestHeader {
  files: Iterable<ManifestFileInput>
  walRanges: readonly ManifestWalRange[]
}

/** Formats a whole manifest in memory (see {@link ManifestWriter} for large directories). */
export function formatManifest(m: ManifestContent): Uint8Array {
  const w = new ManifestWriter(m)
  const parts: Uint8Array[] = []
  for (const f of m.files) parts.push(w.addFile(f))
  parts.push(w.finish(m.walRanges))
  return Buffer.concat(parts)
}

/**
 * Streams a manifest as chunks of about `chunkSizeBytes` (default 64 KiB) from a possibly asynchronous sequence
 * of files; memory stays bounded by the chunk size whatever the number of files.
 */
export async function* manifestChunks(
  header: ManifestHeader,
  files: AsyncIterable<ManifestFileInput> | Iterable<ManifestFileInput>,
  walRanges: readonly ManifestWalRange[],
  chunkSizeBytes = 64 * 1024,
): AsyncGenerator<Uint8Array> {
  const w = new ManifestWriter(header)
  let pending: Uint8Array[] = []
  let pendingBytes = 0
  for await (const f of files) {
    const bytes = w.addFile(f)
    pending.push(bytes)
    pendingBytes += bytes.byteLength
    if (pendingBytes >= chunkSizeBytes) {
      yield Buffer.concat(pending)
      pending = []
      pendingBytes = 0
    }
  }
  pending.push(w.finish(walRanges))
  yield Buffer.concat(pending)
}
