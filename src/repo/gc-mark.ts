// Garbage collection's mark: every blob the records reference. A record's `blobRefs` name the blobs it references
// directly (repository-format §9); backup records name only their file list chunks and server manifest there, so
// they are walked: file list chunks → entries → inline extents and file maps → the file maps' extents
// (backup-format §2–§4). WAL records' pieces are read as well as their `blobRefs`. Anything that cannot be read or
// does not parse stops garbage collection: what it would have referenced is unknown, so nothing may be deleted.

import { createHash } from 'node:crypto'
import { Codes, IntegrityError, isPgkeepError, NotFoundError } from '../errors.js'
import { printableName } from '../pg/data-dir-entry.js'
import { BACKUP_FORMAT_VERSION, BACKUP_RECORD_KIND, type BackupRecord, backupRecordProblems } from './backup-record.js'
import type { BlobId } from './blob.js'
import type { BlobLocation } from './blob-index.js'
import { CONDEMNED_RECORD_KIND } from './condemned.js'
import { decodeChunk } from './file-list.js'
import { decodeFileMap } from './file-map.js'
import { IdTable } from './id-table.js'
import { isHexId, RECORDS_PREFIX } from './layout.js'
import type { Repository } from './repository.js'
import type { ObjectInfo } from '../storage/storage.js'
import { forEachConcurrent } from './storage-io.js'
import { WAL_RECORD_KIND, type WalRecord } from './wal-catalog.js'

/** What a mark found. */
export interface MarkStats {
  records: number
  backups: number
  /** References reported (with repetitions: a blob used by ten backups counts ten times). */
  references: number
  /** File list chunks and file maps read. */
  structureBlobs: number
}

export interface MarkerOptions {
  signal?: AbortSignal
  /** Records (and file maps within a file list chunk) read at once. */
  concurrency: number
  /** Locates a blob the loaded index lacks (a structure blob stored as `data`): garbage collection streams its index. */
  locateMissing(id: BlobId, signal: AbortSignal | undefined): Promise<BlobLocation | undefined>
  onProgress?(stats: Readonly<MarkStats>): void
}

const FINGERPRINT_BYTES = 16
/**
 * Stored bytes of records being read at once (at least one record): a record holds up to 16 MiB of JSON, which
 * parses into several times that, so large ones are read one at a time rather than `concurrency` at a time.
 */
const RECORD_BYTES_IN_FLIGHT = 4 << 20

/**
 * Walks the records of a repository and reports every blob id they reference. Structure blobs (file list chunks,
 * file maps) are walked once per Marker, however many backups share them. `seen` keeps a fingerprint (key, size,
 * time) of every record marked, so that a later `mark({ onlyNew: true })` walks only records that appeared or
 * changed since.
 */
export class Marker {
  readonly #repo: Repository
  readonly #o: MarkerOptions
  readonly #walked = new IdTable(32)
  readonly seen = new IdTable(FINGERPRINT_BYTES)

  constructor(repo: Repository, o: MarkerOptions) {
    this.#repo = repo
    this.#o = o
  }

  /** Bytes held by the marker's tables (for the memory figures gc reports). */
  get sizeBytes(): number {
    return this.#walked.sizeBytes + this.seen.sizeBytes
  }

  /**
   * Lists every record and reports, through `onRef`, each blob id it references (in a buffer that is reused: copy
   * what you keep). With `onlyNew`, records already marked by this Marker (same key, size and time) are skipped.
   * @throws IntegrityError when a record, file list chunk or file map cannot be read or does not parse
   */
  async mark(onRef: (id: Buffer) => void, o: { onlyNew?: boolean } = {}): Promise<MarkStats> {
    const stats: MarkStats = { records: 0, backups: 0, references: 0, structureBlobs: 0 }
    const signal = this.#o.signal
    let inFlight = 0
    let wake: (() => void) | undefined
    const storage = this.#repo.storage
    const listing = (async function* () {
      for await (const obj of storage.list(RECORDS_PREFIX, { signal })) {
        while (inFlight > 0 && inFlight + obj.sizeBytes > RECORD_BYTES_IN_FLIGHT) await new Promise<void>((r) => (wake = r))
        inFlight += obj.sizeBytes
        yield obj
      }
    })()
    await forEachConcurrent(listing, this.#o.concurrency, async (obj) => {
      try {
        await this.#markRecord(obj, onRef, stats, o.onlyNew === true)
      } finally {
        inFlight -= obj.sizeBytes
        wake?.()
      }
    })
    return stats
  }

  async #markRecord(obj: ObjectInfo, onRef: (id: Buffer) => void, stats: MarkStats, onlyNew: boolean): Promise<void> {
    const signal = this.#o.signal
    // One buffer for every id reported: `onRef` copies what it keeps (a mark sees millions of references).
    const scratch = Buffer.alloc(32)
    const ref = (id: unknown, where: string) => {
      if (typeof id !== 'string' || !isHexId(id)) throw unusable(where, `it names a malformed blob id '${printableName(id)}'`)
      stats.references++
      scratch.write(id, 'hex')
      onRef(scratch)
    }
    const rest = obj.key.slice(RECORDS_PREFIX.length)
    const slash = rest.indexOf('/')
    if (slash <= 0) return // not a record name: not part of the repository
    const kind = rest.slice(0, slash)
    const key = rest.slice(slash + 1)
    if (kind === CONDEMNED_RECORD_KIND) return
    const fp = fingerprint(obj.key, obj.sizeBytes, obj.modifiedAt)
    if (onlyNew && this.seen.has(fp)) return
    const where = `record '${obj.key}'`
    try {
      let record
      try {
        record = await this.#repo.readRecord(kind, key, { signal })
      } catch (err) {
        if (err instanceof NotFoundError) return // removed since it was listed: it references nothing any more
        throw err
      }
      for (const id of record.blobRefs) ref(id, where)
      if (kind === BACKUP_RECORD_KIND) {
        await this.#walkBackup(record.value as BackupRecord, where, ref, stats)
        stats.backups++
      } else if (kind === WAL_RECORD_KIND) {
        // `blobRefs` lists the pieces already; reading them from the value too costs nothing and needs no trust.
        const pieces = (record.value as WalRecord)?.pieces
        if (!Array.isArray(pieces)) throw unusable(where, 'it has no list of pieces')
        for (const p of pieces) if (Array.isArray(p) && p[0] !== null) ref(p[0], where)
      }
    } catch (err) {
      throw this.#explain(err, where)
    }
    this.seen.add(fp)
    stats.records++
    this.#o.onProgress?.(stats)
  }

  async #walkBackup(b: BackupRecord, where: string, ref: (id: unknown, where: string) => void, stats: MarkStats): Promise<void> {
    if (b?.formatVersion !== BACKUP_FORMAT_VERSION) throw unusable(where, `its format version ${String(b?.formatVersion)} is unknown to this pgkeep`)
    const problems = backupRecordProblems(b)
    if (problems.length > 0) throw unusable(where, problems[0]!)
    for (const id of b.serverManifest) ref(id, where)
    for (const chunk of b.files.chunks) {
      ref(chunk.blob, where)
      if (this.#walked.has(Buffer.from(chunk.blob, 'hex'))) continue
      const chunkWhere = `${where}, file list chunk '${chunk.blob}'`
      const entries = decodeChunk(await this.#read(chunk.blob, chunkWhere), chunkWhere, chunk)
      stats.structureBlobs++
      const maps: string[] = []
      for (const e of entries) {
        for (const x of e.extents ?? []) if (x.blob !== null) ref(x.blob, chunkWhere)
        // An inline map's blobs are its entry's extents'.
        if (typeof e.fileMap === 'string') {
          ref(e.fileMap, chunkWhere)
          if (!this.#walked.has(Buffer.from(e.fileMap, 'hex'))) maps.push(e.fileMap)
        }
      }
      await forEachConcurrent(maps, this.#o.concurrency, async (id) => {
        const mapWhere = `${chunkWhere}, file map '${id}'`
        let extents
        try {
          extents = decodeFileMap(await this.#read(id, mapWhere), mapWhere).extents
        } catch (err) {
          throw this.#explain(err, mapWhere)
        }
        for (const x of extents) if (x.blob !== null) ref(x.blob, mapWhere)
        stats.structureBlobs++
        this.#walked.add(Buffer.from(id, 'hex'))
      })
      this.#walked.add(Buffer.from(chunk.blob, 'hex'))
    }
  }

  /** A structure blob's verified bytes: through the index, else located by streaming the index objects. */
  async #read(id: BlobId, where: string): Promise<Buffer> {
    const signal = this.#o.signal
    try {
      return await this.#repo.readBlob(id, { signal })
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw this.#explain(err, where)
    }
    const loc = await this.#o.locateMissing(id, signal)
    if (!loc) throw unusable(where, `blob '${id}' is not in the repository`)
    try {
      return await this.#repo.readBlobAt(id, loc, { signal })
    } catch (err) {
      throw this.#explain(err, where)
    }
  }

  /**
   * Damage (a record, chunk or map that does not read or parse) becomes the error that stops gc, naming `where`;
   * aborts and storage failures pass as they are (they say nothing about the repository's content).
   */
  #explain(err: unknown, where: string): unknown {
    if (this.#o.signal?.aborted) return this.#o.signal.reason
    if (explained.has(err as object)) return err
    if (isPgkeepError(err) && DAMAGE_CODES.has(err.code)) return unusable(where, err.message, err)
    return err
  }
}

/** Codes that say the repository's content is damaged or not understood (rather than unreachable). */
const DAMAGE_CODES = new Set<string>([Codes.INTEGRITY, Codes.FORMAT, Codes.NOT_FOUND, Codes.REPO_FORMAT])
const explained = new WeakSet<object>()

/** 16 bytes of SHA-256 over a record's key, size and time: equal only for the same object, in practice. */
export function fingerprint(key: string, sizeBytes: number, modifiedAt: Date): Buffer {
  return createHash('sha256').update(`${key}\0${sizeBytes}\0${modifiedAt.getTime()}`).digest().subarray(0, FINGERPRINT_BYTES)
}

function unusable(where: string, why: string, cause?: unknown): IntegrityError {
  const err = new IntegrityError(`garbage collection cannot tell what ${where} references: ${why}`, {
    cause,
    hint: "gc deletes nothing it cannot account for; run 'pgkeep verify' to list the damage, and remove or repair what it names before running gc again",
  })
  explained.add(err)
  return err
}
