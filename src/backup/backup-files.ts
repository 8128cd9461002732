// The files of one backup as they arrive from the server's tar archives: each entry becomes a file list entry,
// relation files go page by page against the parent's file map (if any), INCREMENTAL files are merged into it, and
// what was received is remembered for the check against the server's manifest.

import { FormatError } from '../errors.js'
import { stripIncrementalLines } from '../pg/backup-label.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { PG_CONTROL_FILE_SIZE_BYTES } from '../pg/pg-control.js'
import { classifyRelationPath } from '../pg/relation-path.js'
import {
  type BackupRecord,
  type BlobId,
  decodeFileMap,
  encodeFileMap,
  type FileEntry,
  FileListReader,
  type FileListSummary,
  FileListWriter,
  GrowingBytes,
  type FileMap,
  inlineExtents,
  inlineFileMap,
  inlineFileMapOf,
  PAGE_BYTES,
  type Repository,
  type WindowStore,
} from '../repo/index.js'
import { ParentBlobMissingError } from './extent-builder.js'
import { IncrementalFileIngest } from './incremental-ingest.js'
import { ReceivedFiles } from './manifest-check.js'
import { PlainFileIngest } from './plain-ingest.js'
import { RelationFileIngest } from './relation-ingest.js'
import type { TarEntry, TarEntryContent } from './tar-entries.js'

const CONTROL_FILE = 'global/pg_control'

export interface ParentFiles {
  backupId: string
  /** The parent's file maps by path: a blob's id, or the map itself where its entry carries it inline. */
  files: { get(path: string, o: { signal?: AbortSignal }): Promise<BlobId | FileMap | undefined> }
  /** Reads the parent's metadata blobs (file maps), reading ahead where they lie together. */
  readBlob(id: BlobId, o: { signal?: AbortSignal }): Promise<Buffer>
}

/**
 * A parent's file maps lie in its meta packs in the order its archives brought them, which is about the order this
 * backup asks for them: each storage read takes this much of a pack, and later maps are found in it (one object
 * store request per few hundred relation files instead of one each).
 */
const PARENT_READ_AHEAD_BYTES = 2 << 20
/**
 * The parent's file maps by path, read in one pass over its file list on first use. The server sends files in
 * directory order, not in the list's path order: looking each up in the list's chunks (a cache of a few) decoded
 * the chunks again and again, minutes of CPU for 20,000 tables. A path and a map per relation file is small: kept
 * as bytes side by side in one buffer (hex strings were 80 bytes each, 10 MB for 40,000 tables), entry n at
 * ends[n - 1]..ends[n], its first byte saying whether a blob id follows or an inline map, encoded (88 bytes for a
 * one-page file).
 */
class ParentFileMaps {
  #loaded: Promise<{ byPath: Map<string, number>; refs: Buffer; ends: Uint32Array }> | undefined

  constructor(
    private readonly list: FileListReader,
    private readonly backupId: string,
  ) {}

  async get(path: string, o: { signal?: AbortSignal }): Promise<BlobId | FileMap | undefined> {
    this.#loaded ??= this.#load(o)
    const { byPath, refs, ends } = await this.#loaded
    const n = byPath.get(path)
    if (n === undefined) return undefined
    const at = n === 0 ? 0 : ends[n - 1]!
    const ref = refs.subarray(at + 1, ends[n])
    return refs[at] === REF_BLOB ? ref.toString('hex') : decodeFileMap(ref, `inline file map of '${path}' in backup ${this.backupId}`)
  }

  async #load(o: { signal?: AbortSignal }): Promise<{ byPath: Map<string, number>; refs: Buffer; ends: Uint32Array }> {
    const byPath = new Map<string, number>()
    const refs = new GrowingBytes(64 << 10)
    let ends = new Uint32Array(1024)
    for await (const chunk of this.list.chunks(o)) {
      for (const e of chunk) {
        if (!e.fileMap) continue
        if (typeof e.fileMap === 'string') {
          refs.appendByte(REF_BLOB)
          refs.appendHex(e.fileMap)
        } else {
          refs.appendByte(REF_INLINE)
          refs.append(encodeFileMap(inlineFileMapOf(e, e.fileMap)))
        }
        const n = byPath.size
        if (n === ends.length) {
          const more = new Uint32Array(ends.length * 2)
          more.set(ends)
          ends = more
        }
        ends[n] = refs.length
        byPath.set(e.path, n)
      }
    }
    return { byPath, refs: refs.view(), ends }
  }
}

/** The first byte of a parent's map reference: a blob id follows, or the map itself. */
const REF_BLOB = 0
const REF_INLINE = 1

/** The files of backup `parent`, its metadata read ahead through a BlobReader (close it when done). */
export function openParentFiles(repo: Repository, parent: BackupRecord, signal?: AbortSignal): ParentFiles & { close(): Promise<void> } {
  const reader = repo.openBlobReader({ workers: 0, readAheadBytes: PARENT_READ_AHEAD_BYTES, signal })
  const readBlob = (id: BlobId) => reader.read(id)
  return {
    backupId: parent.id,
    files: new ParentFileMaps(new FileListReader({ readBlob }, parent.files, undefined, `backup ${parent.id}`), parent.id),
    readBlob,
    close: () => reader.close(),
  }
}

export class BackupFiles {
  readonly received = new ReceivedFiles()
  backupLabel = ''
  tablespaceMap: string | null = null
  /** The bytes of global/pg_control as received (8 KiB), once base.tar brought it. */
  controlFile: Buffer | undefined
  private readonly list = new FileListWriter()

  /**
   * @param store where file data goes; with a parent it must check that reused blobs still exist
   * @param parent the backup to reuse unchanged pages from
   */
  constructor(
    private readonly repo: Repository,
    private readonly store: WindowStore,
    private readonly parent: ParentFiles | undefined,
    private readonly signal?: AbortSignal,
  ) {}

  /** Ingests one checked tar entry, at its path in the data directory. */
  async add(e: TarEntry): Promise<void> {
    const path = e.path
    const { mode, mtime } = e
    if (e.type !== 'file') {
      this.list.add({ path, type: e.type, mode, mtime, sizeBytes: 0, linkTarget: e.linkTarget })
      return
    }
    const rel = classifyRelationPath(path)
    if (rel.kind === 'relation' && rel.incremental) {
      const target = path.replace(/INCREMENTAL\.([^/]+)$/, '$1')
      const ing = new IncrementalFileIngest(this.store, target, await this.parentMap(target))
      for await (const chunk of e.content) await ing.push(chunk)
      const r = await ing.finish()
      this.received.add({ path, sizeBytes: r.incrementalSizeBytes, crc32c: crc32cHexLE(r.incrementalCrc32c) })
      this.list.add({ path: target, type: 'file', mode, mtime, sizeBytes: r.fileMap.sizeBytes, ...(await this.relationContent(r.fileMap)) })
    } else if (rel.kind === 'relation' && e.sizeBytes % PAGE_BYTES === 0) {
      const ing = new RelationFileIngest(this.store, e.sizeBytes, await this.parentMap(path))
      await e.content.pipe((chunk) => ing.push(chunk))
      const r = await ing.finish()
      const crc = crc32cHexLE(r.crc32c)
      this.received.add({ path, sizeBytes: e.sizeBytes, crc32c: crc })
      this.list.add({ path, type: 'file', mode, mtime, sizeBytes: e.sizeBytes, crc32c: crc, ...(await this.relationContent(r.fileMap)) })
    } else if (path === 'backup_label' || path === 'tablespace_map') {
      const parts: Buffer[] = []
      for await (const chunk of e.content) parts.push(Buffer.from(chunk))
      const received = Buffer.concat(parts)
      this.received.add({ path, sizeBytes: received.length, crc32c: crc32cHexLE(crc32c(received)) })
      let text = received.toString('utf8')
      // A server-side incremental's label names its parent, and a server refuses to start on it; the stored
      // backup is complete, so it keeps the label pg_combinebackup would write.
      if (path === 'backup_label') text = this.backupLabel = stripIncrementalLines(text)
      else this.tablespaceMap = text
      await this.addPlain(path, mode, mtime, Buffer.from(text))
    } else {
      const control = path === CONTROL_FILE && e.sizeBytes <= PG_CONTROL_FILE_SIZE_BYTES ? ([] as Buffer[]) : undefined
      const { sizeBytes, crc } = await this.addPlain(path, mode, mtime, e.content, control)
      if (control) this.controlFile = Buffer.concat(control)
      if (sizeBytes !== e.sizeBytes) throw new FormatError(`'${path}' has ${sizeBytes} bytes, its tar header says ${e.sizeBytes}`)
      this.received.add({ path, sizeBytes, crc32c: crc })
    }
  }

  /** Writes the file list; resolves with its summary for the backup record. */
  finish(): Promise<FileListSummary> {
    return this.list.finish(this.repo, { signal: this.signal })
  }

  /** Stores a file that is not a relation file, its content as received or whole; `keep` gets a copy of its bytes. */
  private async addPlain(path: string, mode: number, mtime: number, content: TarEntryContent | Buffer, keep?: Buffer[]) {
    const ing = new PlainFileIngest(this.store)
    if (Buffer.isBuffer(content)) {
      await ing.push(content)
    } else {
      await content.pipe((chunk) => {
        keep?.push(Buffer.from(chunk))
        return ing.push(chunk)
      })
    }
    const r = await ing.finish()
    const crc = crc32cHexLE(r.crc32c)
    this.list.add({ path, type: 'file', mode, mtime, sizeBytes: r.sizeBytes, crc32c: crc, extents: r.extents })
    return { sizeBytes: r.sizeBytes, crc }
  }

  /**
   * A relation file's content in its entry: its map, and the map's extents too when they are few; a map that small
   * goes inline instead of into a blob of its own.
   */
  private async relationContent(map: FileMap): Promise<Pick<FileEntry, 'fileMap' | 'extents'>> {
    const extents = inlineExtents(map)
    return { fileMap: inlineFileMap(map, extents) ?? (await this.storeFileMap(map)), extents }
  }

  /** The parent's file map of `path`; a map that cannot be read means the parent cannot serve as a base. */
  private async parentMap(path: string): Promise<FileMap | undefined> {
    if (!this.parent) return undefined
    const ref = await this.parent.files.get(path, { signal: this.signal })
    if (ref === undefined || typeof ref !== 'string') return ref
    if (!this.store.hasBlob(ref)) throw new ParentBlobMissingError(ref)
    try {
      return decodeFileMap(await this.parent.readBlob(ref, { signal: this.signal }), `file map of '${path}' in backup ${this.parent.backupId}`)
    } catch (err) {
      if (this.signal?.aborted) throw err
      throw new ParentBlobMissingError(ref)
    }
  }

  /**
   * Stored without trying zstd: a map is blob ids and XXH64 page hashes, random bytes that never shrink (a map of 1
   * to 1,024 pages came out of zstd level 1 as it went in), and the try cost 9-11 us per map, 0.4 s of a backup of
   * 20,000 small tables (40,000 maps).
   */
  private async storeFileMap(m: FileMap): Promise<BlobId> {
    return (await this.repo.putBlob('meta', encodeFileMap(m), { signal: this.signal, compress: false })).id
  }
}
