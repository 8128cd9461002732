// The server's `backup_manifest` (JSON, PostgreSQL 13+): a parser that keeps the 64-bit System-Identifier exact
// and checks Manifest-Checksum (src/common/parse_manifest.c), of the whole text or as it arrives (ManifestStream).
// The writer is backup-manifest-writer.ts.
// Longer than 400 lines on purpose: the whole parse and the streaming one share every check and the layout rules,
// and must mean the same for the same bytes; apart, those would be exported for one reader.

import { isUtf8 } from 'node:buffer'
import { createHash } from 'node:crypto'
import { FormatError, IntegrityError } from '../errors.js'
import { type Lsn, parseLsn } from './lsn.js'
import type { TimelineId } from './wal-names.js'

/** Per-file checksum algorithms of `MANIFEST_CHECKSUMS` (NONE means the fields are left out). */
export type ChecksumAlgorithm = 'CRC32C' | 'SHA224' | 'SHA256' | 'SHA384' | 'SHA512'

/** Hex length of each algorithm's checksum. */
export const CHECKSUM_HEX_LENGTH: Readonly<Record<ChecksumAlgorithm, number>> = {
  CRC32C: 8,
  SHA224: 56,
  SHA256: 64,
  SHA384: 96,
  SHA512: 128,
}

/** One file of a manifest, as parsed. */
export interface ManifestFile {
  /** Path relative to the data directory, `/`-separated. For an `Encoded-Path` entry, the bytes decoded as UTF-8
   * (lossy when they are not UTF-8: use `pathBytes` for the real name). */
  path: string
  /** The exact name bytes; present only when the manifest used `Encoded-Path`. */
  pathBytes?: Uint8Array
  size: number
  /** `YYYY-MM-DD HH:MM:SS GMT`, as written (PostgreSQL does not require it; undefined when absent). */
  lastModified?: string
  checksumAlgorithm?: ChecksumAlgorithm
  /** Lowercase hex; for CRC32C the 4 CRC bytes in little-endian order (see crc32cHexLE). */
  checksum?: string
}

/** The WAL a backup needs on one timeline. */
export interface ManifestWalRange {
  timeline: TimelineId
  startLsn: Lsn
  endLsn: Lsn
}

/** A parsed backup_manifest. */
export interface ServerManifest {
  /** 1 (13–16) or 2 (17+, adds System-Identifier). */
  version: 1 | 2
  /** Version 2 only: the cluster's system identifier, exact (it does not fit a JS number). */
  systemId?: bigint
  files: ManifestFile[]
  walRanges: ManifestWalRange[]
  /** SHA-256 of everything before the last line, lowercase hex. */
  manifestChecksum: string
}

/** Options of {@link parseServerManifest}. */
export interface ParseManifestOptions {
  /** Check Manifest-Checksum (default true). */
  verifyChecksum?: boolean
  /**
   * Called with each file, in manifest order, as it is checked; the result's `files` is then empty. For a caller
   * that only compares (a manifest of 100,000 files is tens of MB as objects): the JSON's entries are dropped as
   * they are visited. Every check still runs before the parse returns, so a manifest that fails one throws after
   * some files were visited: the caller must not act on what it saw before the parse returned.
   */
  onFile?: (file: ManifestFile) => void
}

const TOP_KEYS = new Set(['PostgreSQL-Backup-Manifest-Version', 'System-Identifier', 'Files', 'WAL-Ranges', 'Manifest-Checksum'])
const FILE_KEYS = new Set(['Path', 'Encoded-Path', 'Size', 'Last-Modified', 'Checksum-Algorithm', 'Checksum'])
const RANGE_KEYS = new Set(['Timeline', 'Start-LSN', 'End-LSN'])
const HEX = /^(?:[0-9a-fA-F]{2})*$/
const utf8 = new TextEncoder()
const strictUtf8 = new TextDecoder('utf-8', { fatal: true })
const lossyUtf8 = new TextDecoder('utf-8')

function bad(message: string, cause?: unknown): FormatError {
  return new FormatError(`invalid backup manifest: ${message}`, cause === undefined ? {} : { cause })
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function utf8OrHex(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes)
  } catch {
    return `\0${Buffer.from(bytes).toString('hex')}`
  }
}

function hexToBytes(hex: string): Uint8Array {
  return Uint8Array.from(Buffer.from(hex, 'hex'))
}

/**
 * Where the last line starts: the checksum covers every byte before it (parse_manifest.c
 * verify_manifest_checksum). The file needs at least two lines and a final newline.
 */
function checksummedLength(bytes: Uint8Array): number {
  if (bytes.byteLength === 0 || bytes[bytes.byteLength - 1] !== 0x0a) throw bad('last line not newline-terminated')
  const penultimate = bytes.lastIndexOf(0x0a, bytes.byteLength - 2)
  if (penultimate < 0) throw bad('expected at least 2 lines')
  return penultimate + 1
}

/**
 * Computes the SHA-256 a manifest's Manifest-Checksum should hold (over everything before its last line).
 * @throws FormatError when the bytes do not have the line structure of a manifest
 */
export function computeManifestChecksum(bytes: Uint8Array): string {
  return createHash('sha256')
    .update(bytes.subarray(0, checksummedLength(bytes)))
    .digest('hex')
}

/**
 * Parses a backup_manifest as the server (or pgkeep's writer) produces it.
 *
 * The text goes through JSON.parse (see {@link parseDocument}), except System-Identifier: a 64-bit value JSON.parse
 * would round, so its digits are turned into a string first. Only the first occurrence of the key outside a string
 * can match: inside a JSON string the quotes around it would be escaped.
 *
 * Checks what pg_verifybackup's parser checks: known keys only, the version first and the checksum last,
 * System-Identifier only in version 2 (and required there), Path xor Encoded-Path, Size, Checksum only with an
 * algorithm, no duplicate paths, valid LSNs.
 * @throws FormatError on any structural problem
 * @throws IntegrityError when Manifest-Checksum does not match the content
 */
export function parseServerManifest(input: Uint8Array | string, o: ParseManifestOptions = {}): ServerManifest {
  const bytes = typeof input === 'string' ? utf8.encode(input) : input
  if (!isUtf8(bytes)) throw bad('not valid UTF-8')
  // A byte order mark is no part of the JSON (TextDecoder, which this parser used, skips it too).
  const bom = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0
  const { doc, files: lineFiles } = parseDocument(Buffer.from(bytes.buffer, bytes.byteOffset + bom, bytes.byteLength - bom))
  const top = checkDocument(doc)
  const seen = new Set<string>()
  const files: ManifestFile[] = []
  let i = 0
  for (const raw of lineFiles ?? top.filesRaw) {
    const file = checkFile(raw, i, seen)
    if (!lineFiles) top.filesRaw[i] = undefined // garbage from here on: the caller keeps what it needs
    i++
    if (o.onFile) o.onFile(file)
    else files.push(file)
  }
  if (o.verifyChecksum !== false) assertChecksum(computeManifestChecksum(bytes), top.manifest.manifestChecksum)
  return { ...top.manifest, files }
}

/** Everything of a manifest but its files, checked (see parseServerManifest); `filesRaw` is the Files array. */
function checkDocument(doc: unknown): { manifest: ServerManifest; filesRaw: unknown[] } {
  if (!isObject(doc)) throw bad('not a JSON object')
  const keys = Object.keys(doc)
  for (const k of keys) if (!TOP_KEYS.has(k)) throw bad(`unexpected key '${k}'`)
  if (keys[0] !== 'PostgreSQL-Backup-Manifest-Version') throw bad('expected version indicator first')
  if (keys[keys.length - 1] !== 'Manifest-Checksum') throw bad('expected Manifest-Checksum last')
  const version = doc['PostgreSQL-Backup-Manifest-Version']
  if (version !== 1 && version !== 2) {
    throw new FormatError(`unsupported backup manifest version '${String(version)}'`, {
      hint: 'pgkeep reads manifest versions 1 (PostgreSQL 13–16) and 2 (17+)',
    })
  }
  let systemId: bigint | undefined
  if ('System-Identifier' in doc) {
    const raw = doc['System-Identifier']
    if (version === 1) throw bad('System-Identifier in a version 1 manifest')
    if (typeof raw !== 'string' || !/^[0-9]+$/.test(raw) || BigInt(raw) > 0xffff_ffff_ffff_ffffn) {
      throw bad(`System-Identifier is not an unsigned 64-bit integer: '${String(raw)}'`)
    }
    systemId = BigInt(raw)
  } else if (version === 2) {
    throw bad('version 2 manifest without System-Identifier')
  }

  const filesRaw = doc.Files
  if (!Array.isArray(filesRaw)) throw bad('Files is not an array')

  const rangesRaw = doc['WAL-Ranges']
  const walRanges: ManifestWalRange[] = []
  if (rangesRaw !== undefined) {
    if (!Array.isArray(rangesRaw)) throw bad('WAL-Ranges is not an array')
    for (const r of rangesRaw as unknown[]) {
      if (!isObject(r)) throw bad('a WAL range is not an object')
      for (const k of Object.keys(r)) if (!RANGE_KEYS.has(k)) throw bad(`unexpected WAL range field '${k}'`)
      const tli = r.Timeline
      const start = r['Start-LSN']
      const end = r['End-LSN']
      if (typeof tli !== 'number' || !Number.isInteger(tli) || tli < 1 || tli > 0xffff_ffff) throw bad('invalid Timeline')
      if (typeof start !== 'string' || typeof end !== 'string') throw bad('WAL range without Start-LSN or End-LSN')
      walRanges.push({ timeline: tli, startLsn: parseLsn(start), endLsn: parseLsn(end) })
    }
  }

  const manifestChecksum = doc['Manifest-Checksum']
  if (typeof manifestChecksum !== 'string' || !/^[0-9a-fA-F]{64}$/.test(manifestChecksum)) {
    throw bad('invalid Manifest-Checksum')
  }
  const manifest: ServerManifest = { version, files: [], walRanges, manifestChecksum: manifestChecksum.toLowerCase() }
  if (systemId !== undefined) manifest.systemId = systemId
  return { manifest, filesRaw }
}

/** @throws IntegrityError when the checksum computed differs from the one the manifest holds */
function assertChecksum(actual: string, expected: string): void {
  if (actual !== expected) {
    throw new IntegrityError(`backup manifest checksum mismatch: expected ${expected}, actual ${actual}`, {
      hint: 'the manifest was modified or truncated',
    })
  }
}

const FILES_LINE = '\n"Files": [\n'
const FILES_KEY = /"Files"\s*:/

/** The manifest's JSON text parsed, System-Identifier kept exact (see parseServerManifest). */
function json(text: string): unknown {
  try {
    return JSON.parse(text.replace(/("System-Identifier"\s*:\s*)(-?[0-9][0-9.eE+-]*)/, '$1"$2"'))
  } catch (e) {
    throw bad(e instanceof Error ? e.message : 'JSON syntax error', e)
  }
}

/**
 * The manifest's JSON (valid UTF-8), its Files visited one at a time when the text is laid out as PostgreSQL writes
 * it (backup_manifest.c): a line `"Files": [`, one file object a line (`},` ending every one but the last), then a
 * line starting with `]`. A JSON string cannot hold a raw newline, so each such line is a whole value: the rest of
 * the text is parsed with an empty Files array, and `files` decodes and parses the lines one by one as they are
 * visited, instead of the whole text and all its objects at once (tens of MB for 100,000 files). The lines are
 * checked to parse before anything is visited, so a text laid out any other way is parsed whole, with `files`
 * undefined, and means the same.
 */
function parseDocument(bytes: Buffer): { doc: unknown; files: Iterable<unknown> | undefined } {
  const whole = () => ({ doc: json(bytes.toString('utf8')), files: undefined })
  const marker = bytes.indexOf(FILES_LINE)
  if (marker < 0) return whole()
  const from = marker + FILES_LINE.length
  // The first line starting with ']' ends the array: no file line can.
  const end = bytes[from] === 0x5d ? from : bytes.indexOf('\n]', from) + 1
  if (end === 0) return whole()
  const head = bytes.toString('utf8', 0, marker)
  const tail = bytes.toString('utf8', end)
  // `"Files"` before a colon is a key wherever it stands (inside a string its quotes would be escaped); with a second
  // one outside the file lines (inside one it belongs to a file), JSON.parse would take the last: the whole decides.
  if (FILES_KEY.test(head) || FILES_KEY.test(tail)) return whole()
  /** The file lines, each without its comma. */
  function* fileLines(): Generator<string> {
    for (let at = from; at < end; ) {
      const eol = bytes.indexOf(0x0a, at)
      const last = eol + 1 === end
      const comma = !last && bytes[eol - 1] === 0x2c
      if (bytes[at] !== 0x7b || (!last && !comma)) throw new SyntaxError('not one file a line')
      yield bytes.toString('utf8', at, comma ? eol - 1 : eol)
      at = eol + 1
    }
  }
  try {
    for (const line of fileLines()) JSON.parse(line)
  } catch {
    return whole()
  }
  function* values(): Generator<unknown> {
    for (const line of fileLines()) yield JSON.parse(line)
  }
  return { doc: json(head + FILES_LINE + tail), files: values() }
}

/**
 * A backup_manifest checked as it arrives, for a caller that should not hold it whole (about 130 bytes a file: 16 MB
 * for 120,000 files). PostgreSQL writes one file a line (see parseDocument), so each file line is checked and
 * visited once it is complete, the checksum is computed as the bytes pass, and only the few lines before and after
 * the Files array are kept. It means exactly what parseServerManifest means for the same bytes. A manifest laid out
 * any other way (never by PostgreSQL: a byte order mark, two files on a line, no line of its own for `"Files": [`
 * or `]`, a second Files key) turns `streamable` false from the line that shows it; the caller must then forget the
 * files visited and parse the whole with parseServerManifest. Errors a file line shows (an unknown field, a
 * duplicate path) are thrown at once by `push`, as the whole parse would throw them.
 */
export class ManifestStream {
  readonly #onFile: (file: ManifestFile) => void
  readonly #hash = createHash('sha256')
  /** The start of a line not complete yet. */
  #partial: Buffer[] = []
  /** The last complete line: hashed only once another follows (the checksum leaves the last line out). */
  #last: Buffer | undefined
  #state: 'head' | 'files' | 'tail' | 'other layout' = 'head'
  readonly #head: string[] = []
  readonly #tail: string[] = []
  readonly #seen = new Set<string>()
  #files = 0
  /** The last file line had no comma: the array must end on the next line. */
  #filesEnded = false

  constructor(onFile: (file: ManifestFile) => void) {
    this.#onFile = onFile
  }

  /** False once the bytes showed a layout PostgreSQL does not write: parse the whole with parseServerManifest. */
  get streamable(): boolean {
    return this.#state !== 'other layout'
  }

  /**
   * The next bytes; `chunk` is not kept (copied where needed).
   * @throws FormatError for a file line that fails its checks, or bytes that are not UTF-8
   */
  push(chunk: Uint8Array): void {
    let at = 0
    while (this.streamable) {
      const eol = chunk.indexOf(0x0a, at)
      if (eol < 0) {
        if (at < chunk.length) this.#partial.push(Buffer.from(chunk.subarray(at)))
        return
      }
      const rest = chunk.subarray(at, eol + 1)
      this.#line(this.#partial.length === 0 ? Buffer.from(rest) : Buffer.concat([...this.#partial, rest]))
      this.#partial = []
      at = eol + 1
    }
  }

  /** One complete line, its newline included. */
  #line(line: Buffer): void {
    if (this.#last) this.#hash.update(this.#last)
    this.#last = line
    if (!isUtf8(line)) throw bad('not valid UTF-8')
    const text = line.toString('utf8', 0, line.length - 1)
    switch (this.#state) {
      case 'head':
        if (this.#head.length === 0 && text.startsWith('\ufeff')) this.#state = 'other layout'
        else if (text === FILES_LINE.slice(1, -1)) this.#state = 'files'
        else this.#head.push(text)
        return
      case 'files':
        if (text.startsWith(']')) {
          // After a file line with a comma, another file must follow.
          if (this.#files > 0 && !this.#filesEnded) this.#state = 'other layout'
          else {
            this.#state = 'tail'
            this.#tail.push(text)
          }
          return
        }
        this.#file(text)
        return
      case 'tail':
        this.#tail.push(text)
        return
      case 'other layout':
        return
    }
  }

  #file(text: string): void {
    const comma = text.endsWith(',')
    let raw: unknown
    try {
      if (this.#filesEnded || !text.startsWith('{')) throw new SyntaxError('not one file a line')
      raw = JSON.parse(comma ? text.slice(0, -1) : text)
    } catch {
      this.#state = 'other layout'
      return
    }
    this.#filesEnded = !comma
    this.#onFile(checkFile(raw, this.#files++, this.#seen))
  }

  /**
   * After the last byte: the manifest without its files (visited already), checked as parseServerManifest checks
   * it; undefined when it is not streamable (then nothing was concluded).
   * @throws FormatError on any structural problem
   * @throws IntegrityError when Manifest-Checksum does not match the content
   */
  finish(o: { verifyChecksum?: boolean } = {}): ServerManifest | undefined {
    // Not newline-terminated, or no Files array of its own: the whole parse says what is wrong.
    if (this.#state !== 'tail' || this.#partial.length > 0) return undefined
    const head = this.#head.join('\n')
    const tail = `${this.#tail.join('\n')}\n`
    if (FILES_KEY.test(head) || FILES_KEY.test(tail)) return undefined
    const { manifest } = checkDocument(json(head + FILES_LINE + tail))
    if (o.verifyChecksum !== false) assertChecksum(this.#hash.digest('hex'), manifest.manifestChecksum)
    return manifest
  }
}

/** One entry of Files, checked (see parseServerManifest); `seen` holds the paths before it. */
function checkFile(f: unknown, i: number, seen: Set<string>): ManifestFile {
  if (!isObject(f)) throw bad(`file ${i} is not an object`)
  for (const k of Object.keys(f)) if (!FILE_KEYS.has(k)) throw bad(`unexpected file field '${k}'`)
  const path = f.Path
  const encoded = f['Encoded-Path']
  let file: ManifestFile
  if (path !== undefined && encoded !== undefined) throw bad(`file ${i} has both Path and Encoded-Path`)
  if (typeof path === 'string') {
    file = { path, size: 0 }
  } else if (typeof encoded === 'string' && HEX.test(encoded) && encoded.length > 0) {
    const pathBytes = hexToBytes(encoded)
    file = { path: lossyUtf8.decode(pathBytes), pathBytes, size: 0 }
  } else {
    throw bad(`file ${i} has no valid Path or Encoded-Path`)
  }
  // Path "a" and Encoded-Path "61" name the same file; a NUL prefix keeps non-UTF-8 names apart (paths have no NUL).
  const dupKey = file.pathBytes === undefined ? file.path : utf8OrHex(file.pathBytes)
  if (seen.has(dupKey)) throw bad(`duplicate path '${file.path}'`)
  seen.add(dupKey)
  const size = f.Size
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw bad(`file '${file.path}' has an invalid Size`)
  file.size = size
  const lastModified = f['Last-Modified']
  if (lastModified !== undefined) {
    if (typeof lastModified !== 'string') throw bad(`file '${file.path}' has an invalid Last-Modified`)
    file.lastModified = lastModified
  }
  const algorithm = f['Checksum-Algorithm']
  const checksum = f.Checksum
  if (checksum !== undefined && algorithm === undefined) throw bad(`file '${file.path}' has a checksum but no algorithm`)
  if (algorithm !== undefined) {
    if (typeof algorithm !== 'string' || !(algorithm in CHECKSUM_HEX_LENGTH)) {
      throw bad(`file '${file.path}' has an unknown checksum algorithm '${String(algorithm)}'`)
    }
    const alg = algorithm as ChecksumAlgorithm
    if (typeof checksum !== 'string' || checksum.length !== CHECKSUM_HEX_LENGTH[alg] || !HEX.test(checksum)) {
      throw bad(`invalid checksum for file '${file.path}'`)
    }
    file.checksumAlgorithm = alg
    file.checksum = checksum.toLowerCase()
  }
  return file
}
