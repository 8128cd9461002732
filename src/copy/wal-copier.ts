// Copies WAL catalog records from one repository to another: the segments a backup needs (start to end LSN) with
// the cluster's timeline histories, or every WAL file of a cluster. A record's content is read back whole and
// verified (length and CRC-32C), stored in the target in the pieces every writer cuts (1 MiB at absolute offsets,
// so WAL already there from another writer dedups), and the record written after its blobs are durable. A record
// the target holds under the same key is never written again (and different content there is an IntegrityError).

import { IntegrityError, NotFoundError } from '../errors.js'
import { parseLsn } from '../pg/lsn.js'
import { parseWalFileName, walFileName } from '../pg/wal-names.js'
import {
  type BackupRecord,
  findSegmentRecord,
  listWalKeys,
  parseWalKey,
  partialKey,
  putWalPieces,
  readWalContent,
  readWalRecord,
  type Repository,
  segmentKey,
  type WalFileRecord,
  type WalHistoryRecord,
  type WalKey,
  type WalPiece,
  type WalRecord,
  type WalSegmentRecord,
  writeWalRecord,
} from '../repo/index.js'

/** Records whose blobs are put before they are written together (after one flush of the target). */
const RECORDS_PER_BATCH = 64
/** Content bytes put before the pending records are written. */
const BYTES_PER_BATCH = 256 << 20

export interface WalCopierStats {
  /** WAL files written to the target. */
  copied: number
  /** WAL files the target held already. */
  present: number
  /** Bytes of WAL content read from the source. */
  bytesRead: number
}

/** What the target holds of one cluster's WAL, by file name. */
interface TargetWal {
  complete: Set<string>
  /** Segment name → the longest partial record's valid bytes. */
  partial: Map<string, number>
  /** History and backup history files. */
  files: Set<string>
}

export class WalCopier {
  readonly stats: WalCopierStats = { copied: 0, present: 0, bytesRead: 0 }
  readonly #source: Repository
  readonly #target: Repository
  readonly #signal: AbortSignal | undefined
  readonly #onFile: (() => void) | undefined
  readonly #held = new Map<string, TargetWal>()
  readonly #histories = new Map<string, [string, WalKey][]>()
  #pending: { key: string; value: WalRecord; parsed: WalKey }[] = []
  #pendingBytes = 0

  constructor(source: Repository, target: Repository, o: { signal?: AbortSignal; onFile?: () => void } = {}) {
    this.#source = source
    this.#target = target
    this.#signal = o.signal
    this.#onFile = o.onFile
  }

  /**
   * Copies the WAL `rec` needs to become consistent, its segments from start to end LSN, and every timeline history
   * of its cluster; durable in the target when this resolves.
   * @throws NotFoundError when the source lacks part of that WAL (the backup cannot be copied whole)
   */
  async copyForBackup(rec: BackupRecord): Promise<void> {
    const o = { signal: this.#signal }
    const held = await this.#targetWal(rec.systemId)
    const segSize = rec.walSegmentSizeBytes
    const seg = BigInt(segSize)
    const end = parseLsn(rec.endLsn)
    const last = (end - 1n) / seg
    for (let s = parseLsn(rec.startLsn) / seg; s <= last; s++) {
      const name = walFileName(rec.timeline, s, segSize)
      const needed = s === last ? Number(end - s * seg) : segSize
      if (held.complete.has(name) || (held.partial.get(name) ?? 0) >= needed) {
        this.#counted('present')
        continue
      }
      // A synchronous streamer may supersede the partial record found while it is read: look it up again.
      for (let attempt = 0; ; attempt++) {
        const found = await findSegmentRecord(this.#source, rec.systemId, name, o)
        if (!found || found.validBytes < needed) {
          throw new NotFoundError(
            `backup ${rec.id} cannot be copied: WAL segment '${name}' it needs ${found ? `is stored only up to byte ${found.validBytes} of ${needed}` : 'is not'} in the source`,
            { hint: "run 'pgkeep verify' on the source repository; copy the backups that are whole with --backup" },
          )
        }
        const key = found.partial ? partialKey(rec.systemId, name, found.validBytes) : segmentKey(rec.systemId, name)
        try {
          await this.#copy(key, found)
          break
        } catch (err) {
          if (!(err instanceof NotFoundError && err.retryable) || attempt >= 3) throw err
        }
      }
    }
    for (const [key, k] of await this.#sourceHistories(rec.systemId)) if (!held.files.has(k.name)) await this.#copyListed(key, k)
    await this.#writePending()
  }

  /** The timeline history records of a cluster in the source (listed once: a cluster's WAL keys may be many). */
  async #sourceHistories(systemId: string): Promise<[string, WalKey][]> {
    let found = this.#histories.get(systemId)
    if (!found) {
      found = []
      for (const key of await listWalKeys(this.#source, systemId, '', { signal: this.#signal })) {
        const k = parseWalKey(key)
        if (k?.kind === 'history') found.push([key, k])
      }
      this.#histories.set(systemId, found)
    }
    return found
  }

  /** Copies every WAL file of cluster `systemId` that the target lacks; durable in the target when this resolves. */
  async copyAll(systemId: string): Promise<void> {
    const held = await this.#targetWal(systemId)
    for (const key of await listWalKeys(this.#source, systemId, '', { signal: this.#signal })) {
      const k = parseWalKey(key)
      if (!k) continue
      const there =
        k.kind === 'segment' || k.kind === 'partial'
          ? held.complete.has(k.name) || (k.kind === 'partial' && (held.partial.get(k.name) ?? 0) >= k.validBytes)
          : held.files.has(k.name)
      if (there) this.#counted('present')
      else await this.#copyListed(key, k)
    }
    await this.#writePending()
  }

  /** Copies a record found by listing: one removed since (a superseded partial) is skipped. */
  async #copyListed(key: string, k: WalKey): Promise<void> {
    const rec = await readWalRecord<WalRecord>(this.#source, key, { signal: this.#signal })
    if (!rec) return
    try {
      await this.#copy(key, rec, k)
    } catch (err) {
      if (!(err instanceof NotFoundError && err.retryable)) throw err
    }
  }

  /** Reads a record's content (verified), puts its pieces into the target, and queues the record. */
  async #copy(key: string, rec: WalRecord, parsed = parseWalKey(key)): Promise<void> {
    if (!parsed) throw new IntegrityError(`'${key}' is not a WAL catalog key`)
    const withPieces = targetValue(key, parsed, rec)
    const content = await readWalContent(this.#source, rec, { signal: this.#signal })
    this.stats.bytesRead += content.length
    const pieces = await putWalPieces(this.#target, content, { signal: this.#signal })
    this.#pending.push({ key, value: withPieces(pieces), parsed })
    this.#pendingBytes += content.length
    if (this.#pending.length >= RECORDS_PER_BATCH || this.#pendingBytes >= BYTES_PER_BATCH) await this.#writePending()
  }

  /** Makes the pending records' blobs durable (one flush), then writes the records. */
  async #writePending(): Promise<void> {
    if (this.#pending.length === 0) return
    await this.#target.flush({ signal: this.#signal })
    const pending = this.#pending
    this.#pending = []
    this.#pendingBytes = 0
    for (const { key, value, parsed } of pending) {
      const result = await writeWalRecord(this.#target, key, value, { signal: this.#signal })
      const held = await this.#targetWal(parsed.systemId)
      if (parsed.kind === 'segment') held.complete.add(parsed.name)
      else if (parsed.kind === 'partial') held.partial.set(parsed.name, Math.max(held.partial.get(parsed.name) ?? 0, parsed.validBytes))
      else held.files.add(parsed.name)
      this.#counted(result === 'stored' ? 'copied' : 'present')
    }
  }

  #counted(what: 'copied' | 'present'): void {
    this.stats[what]++
    this.#onFile?.()
  }

  async #targetWal(systemId: string): Promise<TargetWal> {
    let held = this.#held.get(systemId)
    if (held) return held
    held = { complete: new Set(), partial: new Map(), files: new Set() }
    for (const key of await listWalKeys(this.#target, systemId, '', { signal: this.#signal })) {
      const k = parseWalKey(key)
      if (k?.kind === 'segment') held.complete.add(k.name)
      else if (k?.kind === 'partial') held.partial.set(k.name, Math.max(held.partial.get(k.name) ?? 0, k.validBytes))
      else if (k) held.files.add(k.name)
    }
    this.#held.set(systemId, held)
    return held
  }
}

/**
 * The record the target gets for source record `rec` under `key`, given its pieces there: only the fields the format
 * defines, checked against the key (a repository is untrusted input). A synchronous streamer's `base` and `tail`
 * are not carried over: the content is stored whole, in pieces, as every other writer stores it.
 * @throws IntegrityError when the record does not fit its key
 */
function targetValue(key: string, k: WalKey, rec: WalRecord): (pieces: WalPiece[]) => WalRecord {
  const bad = (why: string) =>
    new IntegrityError(`WAL record '${key}' of the source is malformed: ${why}`, { hint: "run 'pgkeep verify' on the source repository" })
  if (rec?.name !== k.name) throw bad(`it names '${String(rec?.name)}'`)
  if (typeof rec.crc32c !== 'string') throw bad('it has no CRC-32C')
  if (k.kind === 'segment' || k.kind === 'partial') {
    const s = rec as WalSegmentRecord
    let segno: bigint | undefined
    try {
      const n = parseWalFileName(k.name, s.segmentSizeBytes)
      segno = n.kind === 'segment' ? n.segno : undefined
    } catch {
      throw bad(`its segment size ${String(s.segmentSizeBytes)} is not one`)
    }
    const partial = k.kind === 'partial'
    const valid = partial ? k.validBytes : s.segmentSizeBytes
    if (s.timeline !== k.tli || s.segno !== segno?.toString() || s.validBytes !== valid || s.partial !== partial) {
      throw bad('its timeline, number, length or partial flag does not match its key')
    }
    return (pieces): WalSegmentRecord => ({
      name: s.name,
      timeline: s.timeline,
      segno: s.segno,
      segmentSizeBytes: s.segmentSizeBytes,
      validBytes: s.validBytes,
      partial: s.partial,
      crc32c: s.crc32c,
      pieces,
    })
  }
  const f = rec as WalFileRecord
  if (!Number.isSafeInteger(f.sizeBytes) || f.sizeBytes < 0) throw bad('its size is malformed')
  if (k.kind === 'history') {
    if ((rec as WalHistoryRecord).timeline !== k.tli) throw bad('its timeline does not match its key')
    return (pieces): WalHistoryRecord => ({ name: f.name, timeline: k.tli, sizeBytes: f.sizeBytes, crc32c: f.crc32c, pieces })
  }
  return (pieces): WalFileRecord => ({ name: f.name, sizeBytes: f.sizeBytes, crc32c: f.crc32c, pieces })
}
