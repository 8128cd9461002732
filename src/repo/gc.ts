// Garbage collection (`pgkeep gc`, docs/repository-format.md §10a): finds what the records still reference with a
// memory footprint of a few bytes per blob (Bloom filters and typed tables, index objects streamed one at a time),
// condemns packs that hold nothing live, repacks packs that hold little, and deletes condemned packs once every
// other session has acknowledged them and a last look at the records written meanwhile still finds nothing live in
// them. Index objects are compacted on the way, crash leftovers removed. Killed at any point, it leaves a sound
// repository; the next run finishes the job.
// Longer than 400 lines on purpose: the phases of one run share its state (the pack table, the filters, the exact
// sets) and must be read in order against the safety argument of repository-format.md §10a.

import { LockedError, UsageError } from '../errors.js'
import { OperationEvents, type OperationOptions } from '../events.js'
import { removeLeftoversOf } from '../storage/storage.js'
import type { BlobId } from './blob.js'
import type { BlobLocation } from './blob-index.js'
import { BloomFilter } from './bloom-filter.js'
import { CONDEMNED_RECORD_KIND, type CondemnedRecord, checkCondemnedRecord, MAX_CONDEMNED_PER_RECORD, newCondemnedKey } from './condemned.js'
import { checkAcknowledgements } from './gc-acks.js'
import { compactIndex, smallIndexObjects } from './gc-index.js'
import { Marker, type MarkStats } from './gc-mark.js'
import { entriesBound, type IndexObjectInfo, listIndexObjects, listPacks, PackFlag, PackTable, streamIndexObjects } from './gc-packs.js'
import { type HeldWrite, Repacker } from './gc-repack.js'
import { Column, IdTable } from './id-table.js'
import { packKey } from './layout.js'
import type { LockTiming, RepoLock } from './lock.js'
import type { PackEntry } from './pack-format.js'
import type { Repository } from './repository.js'
import { forEachConcurrent } from './storage-io.js'

/** The purpose of gc's lock; two of them never run at once. */
export const GC_LOCK_PURPOSE = 'gc'
const DEFAULT_GRACE_MS = 60 * 60_000
const DEFAULT_REPACK_BELOW_PERCENT = 50
const DEFAULT_CONCURRENCY = 8
/** False-positive rate of the Bloom filters: a dead blob counted live keeps its bytes one run longer. */
const DEFAULT_FALSE_POSITIVE_RATE = 0.01
/** Blob ids tracked exactly as possible duplicates; beyond it both copies of a duplicate simply stay. */
const MAX_DUPLICATE_CANDIDATES = 2_000_000
/** Blobs copied by one run at most (the exact set of them is kept until the run ends); the rest waits. */
const MAX_REPACK_BLOBS = 1_000_000
/** Blobs whose entries are held in memory at once while repacking (one pass over the index per group). */
const REPACK_GROUP_BLOBS = 200_000

/**
 * Options of {@link collectGarbage}. Progress phases, in order: `list`, `index` (index objects read: items),
 * `mark` (records walked: items), `live`, `repack` (bytes copied; packs: items), `condemn`, `acknowledgements`,
 * `recheck`, `compact`, `delete` (packs deleted: items, bytes), `leftovers`; a dry run stops after `live`.
 */
export interface GcOptions extends OperationOptions {
  /** Report what would be freed; write and delete nothing (takes a reader's lock). */
  dryRun?: boolean
  /**
   * Minimum age of a pack before it is condemned or repacked, of a condemnation before its packs are deleted, and
   * of crash leftovers before they are removed (default 1 hour). 0 lets one run condemn and delete when no other
   * session holds a lock.
   */
  graceMs?: number
  /** Packs whose live blobs fill less than this percentage of their blob bytes are repacked (default 50; 0: never). */
  repackBelowPercent?: number
  /** Live bytes copied by one run at most (default: no limit); the packs left over wait for the next run. */
  maxRepackBytes?: number
  /** Timing of gc's own lock. */
  lockTiming?: LockTiming
  /** Keep retrying this long while a conflicting lock (an exclusive one, another gc) exists (default 0). */
  lockWaitMs?: number
  /** Objects read at once (default 8). */
  concurrency?: number
  /** False-positive rate of the Bloom filters (default 0.01); for measurements. */
  falsePositiveRate?: number
}

/** What a gc run found and did. Byte counts are of objects in storage (packs and index objects). */
export interface GcResult {
  readonly dryRun: boolean
  readonly packsBefore: number
  readonly packsAfter: number
  readonly bytesBefore: number
  readonly bytesAfter: number
  readonly indexObjectsBefore: number
  readonly indexObjectsAfter: number
  /** Packs deleted and their bytes. */
  readonly packsDeleted: number
  readonly bytesDeleted: number
  /** Packs whose live blobs were copied into new packs (they are condemned), the new packs and their bytes. */
  readonly packsRepacked: number
  readonly packsWritten: number
  readonly bytesWritten: number
  /** Packs condemned by this run (dead, orphaned, or repacked). */
  readonly packsCondemned: number
  /** Condemnations lifted: packs found live again (a record written after they were condemned references them). */
  readonly packsAbsolved: number
  /** Packs still condemned after this run, waiting for the grace period or for sessions to acknowledge them. */
  readonly pendingPacks: number
  readonly pendingBytes: number
  /** Sessions that hold deletion back: lock descriptions. */
  readonly waitingFor: readonly string[]
  /** Blobs in the index (each copy counted), duplicate copies found, and blobs the mark found live (an estimate). */
  readonly blobs: { readonly indexed: number; readonly duplicates: number; readonly live: number }
  readonly records: number
  readonly backups: number
  /** Driver leftovers (temporary files, incomplete uploads) and `probe-*` objects removed. */
  readonly leftoversRemoved: number
  /** With `dryRun`: what a run would free at most (dead packs, repack gains, condemned packs due for deletion). */
  readonly freeableBytes: number
  /** Memory held by the Bloom filters and tables of the run. */
  readonly memoryBytes: number
  readonly falsePositiveRate: number
  /** Problems that kept a pack as it is (a damaged live blob, so it was not repacked). */
  readonly problems: readonly string[]
}

function check(o: GcOptions): Required<Pick<GcOptions, 'graceMs' | 'repackBelowPercent' | 'maxRepackBytes' | 'concurrency' | 'falsePositiveRate'>> {
  const graceMs = o.graceMs ?? DEFAULT_GRACE_MS
  if (!Number.isFinite(graceMs) || graceMs < 0) throw new UsageError(`invalid grace period ${String(graceMs)} ms`, { hint: 'give 0 or more' })
  const repackBelowPercent = o.repackBelowPercent ?? DEFAULT_REPACK_BELOW_PERCENT
  if (!Number.isFinite(repackBelowPercent) || repackBelowPercent < 0 || repackBelowPercent > 100) {
    throw new UsageError(`invalid repack threshold ${String(repackBelowPercent)}%`, { hint: 'give a percentage from 0 to 100' })
  }
  const maxRepackBytes = o.maxRepackBytes ?? Number.POSITIVE_INFINITY
  if (Number.isNaN(maxRepackBytes) || maxRepackBytes < 0)
    throw new UsageError(`invalid repack limit ${String(maxRepackBytes)} bytes`, { hint: 'give 0 or more' })
  const concurrency = o.concurrency ?? DEFAULT_CONCURRENCY
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256)
    throw new UsageError(`invalid concurrency ${String(concurrency)}`, { hint: 'use 1 to 256' })
  const falsePositiveRate = o.falsePositiveRate ?? DEFAULT_FALSE_POSITIVE_RATE
  if (!(falsePositiveRate > 0 && falsePositiveRate < 0.5)) throw new UsageError(`invalid false-positive rate ${String(falsePositiveRate)}`)
  return { graceMs, repackBelowPercent, maxRepackBytes, concurrency, falsePositiveRate }
}

/**
 * Collects garbage in `repo` under a shared lock (purpose `gc`): see docs/repository-format.md §10a for the
 * protocol that keeps concurrent backups, WAL streamers and archivers safe. `repo` may be opened with
 * `openRepository(storage, { index: 'meta' })`: gc needs only the structure blobs in memory.
 * @throws LockedError when another gc runs or an exclusive lock is held
 * @throws IntegrityError when a record or the index cannot be read: nothing is deleted then
 */
export async function collectGarbage(repo: Repository, o: GcOptions = {}): Promise<GcResult> {
  const settings = check(o)
  const ev = new OperationEvents('gc', o.onEvent)
  const say = (level: 'info' | 'warning', text: string) => ev.say(level, text)
  const timing = {
    ...o.lockTiming,
    signal: o.signal,
    waitMs: o.lockWaitMs,
    onStateChange: (c: { state: string; message: string }) => c.state === 'at-risk' && say('warning', c.message),
  }
  let lock: RepoLock | undefined
  if (o.dryRun) {
    lock = await repo.acquireReaderLock({ purpose: `${GC_LOCK_PURPOSE} (dry run)`, ...timing })
  } else {
    lock = await repo.acquireLock('shared', { purpose: GC_LOCK_PURPOSE, ...timing })
    try {
      const other = (await repo.listLocks({ signal: o.signal })).find(
        (l) => l.state === 'live' && l.info?.purpose === GC_LOCK_PURPOSE && l.info.session !== lock!.session,
      )
      if (other) {
        throw new LockedError(`another garbage collection is running: ${other.description}`, {
          hint: 'wait until it finishes; two gc runs at once would only repeat each other',
        })
      }
    } catch (err) {
      await lock.release().catch(() => {})
      throw err
    }
  }
  const signal = lock ? AbortSignal.any([lock.signal, ...(o.signal ? [o.signal] : [])]) : o.signal
  try {
    return await new GcRun(repo, lock, { ...o, ...settings, signal }, ev).run()
  } finally {
    await lock?.release().catch(() => {})
  }
}

type Settings = GcOptions & ReturnType<typeof check>

interface Condemnation {
  readonly key: string
  readonly condemnedAt: string
  /** Pack rows. */
  readonly rows: number[]
}

class GcRun {
  readonly #repo: Repository
  readonly #lock: RepoLock | undefined
  readonly #o: Settings
  readonly #ev: OperationEvents
  readonly #now = Date.now()
  readonly #table = new PackTable()
  #objects: IndexObjectInfo[] = []
  #condemnations: Condemnation[] = []
  readonly #problems: string[] = []
  // The mark: L holds every referenced blob; C the blobs of condemned packs, for which E holds exactly the
  // referenced ones (a Bloom filter's false positive must not decide whether a condemned pack is deleted).
  #live!: BloomFilter
  #inCondemned!: BloomFilter
  readonly #referencedCondemned = new IdTable(32)
  // Duplicates: ids seen in more than one pack (S flags candidates), their copies, and the copy kept.
  #seen!: BloomFilter
  readonly #dupIds = new IdTable(32)
  readonly #dupCopies: number[][] = []
  readonly #dupKeeper = new Column('u32')
  readonly #copied = new IdTable(32)
  #marker!: Marker
  #stats = {
    packsBefore: 0,
    bytesBefore: 0,
    indexBytesBefore: 0,
    indexed: 0,
    duplicates: 0,
    live: 0,
    records: 0,
    backups: 0,
    packsDeleted: 0,
    bytesDeleted: 0,
    packsRepacked: 0,
    packsWritten: 0,
    bytesWritten: 0,
    packsCondemned: 0,
    packsAbsolved: 0,
    indexWritten: 0,
    indexRemoved: 0,
    indexBytesWritten: 0,
    indexBytesRemoved: 0,
    leftovers: 0,
    freeable: 0,
  }
  #waitingFor: string[] = []

  constructor(repo: Repository, lock: RepoLock | undefined, o: Settings, ev: OperationEvents) {
    this.#repo = repo
    this.#lock = lock
    this.#o = o
    this.#ev = ev
  }

  get #storage() {
    return this.#repo.storage
  }

  #held: HeldWrite = (write) => {
    if (!this.#lock) throw new UsageError('a dry run writes nothing')
    return this.#lock.runHeld(write, { signal: this.#o.signal })
  }

  async run(): Promise<GcResult> {
    const { signal } = this.#o
    this.#ev.phase('list')
    await this.#readCondemnations()
    const listed = await listPacks(this.#storage, this.#table, signal)
    this.#stats.packsBefore = listed.packs
    this.#stats.bytesBefore = listed.bytes
    this.#objects = await listIndexObjects(this.#storage, signal)
    this.#stats.indexBytesBefore = this.#objects.reduce((s, x) => s + x.sizeBytes, 0)
    for (const c of this.#condemnations) for (const n of c.rows) this.#table.set(n, PackFlag.CONDEMNED)

    const bound = Math.max(1024, entriesBound(this.#objects))
    const p = this.#o.falsePositiveRate
    this.#live = new BloomFilter(bound, p)
    this.#inCondemned = new BloomFilter(bound, p)
    this.#seen = new BloomFilter(bound, p)
    await this.#pass1()
    await this.#mark()
    await this.#pass2()
    this.#resolveDuplicates()
    const repackRows = this.#plan()
    if (this.#o.dryRun) return this.#result()

    await this.#repackAndCollect(repackRows)
    await this.#writeCondemnations()
    const deleted = await this.#deleteDue()
    if (!deleted && smallIndexObjects(this.#objects) > 0) await this.#compact(() => false)
    await this.#removeLeftovers()
    return this.#result()
  }

  /** Reads the condemnation records of earlier runs; a damaged one is reported and left alone. */
  async #readCondemnations(): Promise<void> {
    const keys: string[] = []
    for await (const r of this.#repo.listRecords(CONDEMNED_RECORD_KIND, '', { signal: this.#o.signal })) keys.push(r.key)
    for (const key of keys.sort()) {
      let value: CondemnedRecord
      try {
        value = checkCondemnedRecord(key, (await this.#repo.readRecord<CondemnedRecord>(CONDEMNED_RECORD_KIND, key, { signal: this.#o.signal })).value)
      } catch (err) {
        if ((err as { code?: string }).code === 'NOT_FOUND') continue
        if ((err as { code?: string }).code !== 'INTEGRITY') throw err
        this.#ev.say('warning', `${(err as Error).message}: the packs it names stay until it is repaired`)
        continue
      }
      const rows: number[] = []
      for (const packId of value.packs) {
        const n = this.#table.row(packId)
        if (this.#table.condemnedBy.get(n) === 0) this.#table.condemnedBy.set(n, this.#condemnations.length + 1)
        rows.push(n)
      }
      this.#condemnations.push({ key, condemnedAt: value.condemnedAt, rows })
    }
  }

  /** Pass 1 over the index: which packs are listed (first listing), their sizes, possible duplicates. */
  async #pass1(): Promise<void> {
    const t = this.#table
    let done = 0
    this.#ev.phase('index', { bytesDone: 0, bytesTotal: null, itemsDone: 0, itemsTotal: this.#objects.length })
    await this.#stream(this.#objects, (i, content) => {
      let entries = 0
      for (const pack of content.packs) {
        entries += pack.entries.length
        const n = t.row(pack.packId)
        t.set(n, PackFlag.LISTED)
        if (t.firstListing.get(n) !== 0) continue
        t.firstListing.set(n, i + 1)
        const condemned = t.has(n, PackFlag.CONDEMNED)
        for (const e of pack.entries) {
          t.entries.add(n, 1)
          t.blobBytes.add(n, e.storedLength)
          this.#stats.indexed++
          if (condemned) this.#inCondemned.add(e.id)
          if (!this.#seen.has(e.id)) this.#seen.add(e.id)
          else if (this.#dupIds.size < MAX_DUPLICATE_CANDIDATES) this.#dupIds.add(e.id)
        }
      }
      this.#objects[i]!.entries = entries
      this.#ev.progress({ bytesDone: 0, bytesTotal: null, itemsDone: ++done, itemsTotal: this.#objects.length })
    })
    for (let c = 0; c < this.#dupIds.size; c++) this.#dupCopies.push([])
  }

  /** The mark: every blob the records reference. */
  async #mark(): Promise<void> {
    this.#ev.phase('mark', { bytesDone: 0, bytesTotal: null, itemsDone: 0, itemsTotal: null })
    this.#marker = new Marker(this.#repo, {
      signal: this.#o.signal,
      concurrency: this.#o.concurrency,
      locateMissing: (id, signal) => this.#locateByScan(id, signal),
      onProgress: (s: Readonly<MarkStats>) => this.#ev.progress({ bytesDone: 0, bytesTotal: null, itemsDone: s.records, itemsTotal: null }),
    })
    const stats = await this.#marker.mark((id) => {
      this.#live.add(id)
      if (this.#inCondemned.has(id)) this.#referencedCondemned.add(id)
    })
    this.#ev.flush()
    this.#stats.records = stats.records
    this.#stats.backups = stats.backups
  }

  /**
   * Adds the blobs of a pack condemned after the mark to those whose references are tracked exactly. The mark did
   * not record which of them it saw, so every one the live filter may hold counts as referenced then: for a dead
   * pack that is none, for a repacked one those that were copied.
   */
  #trackExactly(entries: readonly PackEntry[]): void {
    for (const e of entries) {
      if (this.#inCondemned.has(e.id)) continue
      if (this.#live.has(e.id)) this.#referencedCondemned.add(e.id)
      this.#inCondemned.add(e.id)
    }
  }

  /** Live by the mark: exactly for blobs of condemned packs, by the Bloom filter for the others. */
  #isLive(id: Uint8Array): boolean {
    return this.#inCondemned.has(id) ? this.#referencedCondemned.has(id) : this.#live.has(id)
  }

  /** Pass 2 over the index: live bytes per pack; the copies of possible duplicates are set aside. */
  async #pass2(): Promise<void> {
    const t = this.#table
    this.#ev.phase('live', { bytesDone: 0, bytesTotal: null, itemsDone: 0, itemsTotal: this.#objects.length })
    let done = 0
    await this.#stream(this.#objects, (i, content) => {
      for (const pack of content.packs) {
        const n = t.find(pack.packId)
        if (t.firstListing.get(n) !== i + 1) continue
        for (const e of pack.entries) {
          const c = this.#dupIds.find(e.id)
          if (c >= 0) this.#dupCopies[c]!.push(n, e.storedLength)
          else if (this.#isLive(e.id)) {
            t.liveBytes.add(n, e.storedLength)
            t.liveEntries.add(n, 1)
            this.#stats.live++
          }
        }
      }
      this.#ev.progress({ bytesDone: 0, bytesTotal: null, itemsDone: ++done, itemsTotal: this.#objects.length })
    })
  }

  /**
   * A live blob stored in several packs counts at one copy: in a pack that is in storage and not condemned when
   * there is one, then the one with the largest live share (most likely kept), then the smallest pack id.
   */
  #resolveDuplicates(): void {
    const t = this.#table
    for (let c = 0; c < this.#dupIds.size; c++) {
      const copies = this.#dupCopies[c]!
      const id = this.#dupIds.key(c)
      const live = this.#isLive(id)
      if (copies.length === 2) {
        // Only one copy after all (the Bloom filter's false positive): an ordinary blob.
        if (live) {
          t.liveBytes.add(copies[0]!, copies[1]!)
          t.liveEntries.add(copies[0]!, 1)
          this.#stats.live++
        }
        continue
      }
      this.#stats.duplicates += copies.length / 2 - 1
      if (!live) continue
      let best = -1
      let bestScore = -1
      for (let k = 0; k < copies.length; k += 2) {
        const n = copies[k]!
        if (!t.has(n, PackFlag.IN_STORAGE)) continue
        const score = (t.has(n, PackFlag.CONDEMNED) ? 0 : 2) + t.liveBytes.get(n) / Math.max(1, t.blobBytes.get(n))
        if (score > bestScore || (score === bestScore && t.id(n) < t.id(best))) {
          best = n
          bestScore = score
        }
      }
      if (best < 0) continue
      const stored = copies[copies.indexOf(best) + 1]!
      t.liveBytes.add(best, stored)
      t.liveEntries.add(best, 1)
      this.#dupKeeper.set(c, best + 1)
      this.#stats.live++
    }
  }

  /** Decides each pack's fate; returns the rows to repack, least live first, within the limits. */
  #plan(): number[] {
    const t = this.#table
    const grace = this.#o.graceMs
    const candidates: number[] = []
    for (let n = 0; n < t.size; n++) {
      const inStorage = t.has(n, PackFlag.IN_STORAGE)
      const listed = t.has(n, PackFlag.LISTED)
      const condemned = t.has(n, PackFlag.CONDEMNED)
      const old = this.#now - t.modifiedAt.get(n) >= grace
      if (!inStorage) continue // listed but missing (verify reports it), or condemned and already deleted
      if (!listed) {
        // An orphan: a pack no index object lists (an interrupted writer's, or a writer's still being indexed).
        if (!condemned && old) this.#condemn(n)
        continue
      }
      const dead = t.liveBytes.get(n) === 0
      if (condemned) {
        if (!dead) this.#absolve(n)
        else this.#stats.freeable += t.objectBytes.get(n)
        continue
      }
      if (!old) continue
      if (dead) this.#condemn(n)
      else if ((100 * t.liveBytes.get(n)) / Math.max(1, t.blobBytes.get(n)) < this.#o.repackBelowPercent) candidates.push(n)
    }
    candidates.sort((a, b) => t.liveBytes.get(a) / t.blobBytes.get(a) - t.liveBytes.get(b) / t.blobBytes.get(b))
    const chosen: number[] = []
    let bytes = 0
    let blobs = 0
    for (const n of candidates) {
      const live = t.liveBytes.get(n)
      if (bytes + live > this.#o.maxRepackBytes || blobs + t.liveEntries.get(n) > MAX_REPACK_BLOBS) continue
      bytes += live
      blobs += t.liveEntries.get(n)
      t.set(n, PackFlag.REPACK)
      chosen.push(n)
      this.#stats.freeable += Math.max(0, t.objectBytes.get(n) - live)
    }
    return chosen
  }

  #condemn(n: number): void {
    this.#table.set(n, PackFlag.CONDEMN)
    this.#stats.packsCondemned++
    this.#stats.freeable += this.#table.objectBytes.get(n)
  }

  #absolve(n: number): void {
    if (this.#table.has(n, PackFlag.ABSOLVE)) return
    this.#table.set(n, PackFlag.ABSOLVE)
    this.#stats.packsAbsolved++
  }

  /**
   * Copies the live blobs of the packs to repack (in groups, one pass over the index per group) and adds the blobs
   * of every pack condemned by this run to the set whose references are tracked exactly.
   */
  async #repackAndCollect(rows: number[]): Promise<void> {
    const t = this.#table
    const condemnedNow = (n: number) => t.has(n, PackFlag.CONDEMN) || t.has(n, PackFlag.REPACK)
    const anyCondemned = rows.length > 0 || Array.from({ length: t.size }, (_, n) => n).some((n) => t.has(n, PackFlag.CONDEMN))
    if (!anyCondemned) return
    const repacker = new Repacker({
      storage: this.#storage,
      keys: this.#repo.keys,
      packTargetBytes: this.#repo.config.packTargetBytes,
      held: this.#held,
      exists: (packId) => t.find(packId) >= 0,
      signal: this.#o.signal,
    })
    const totalBytes = rows.reduce((s, n) => s + t.liveBytes.get(n), 0)
    let bytesDone = 0
    this.#ev.phase('repack', { bytesDone: 0, bytesTotal: totalBytes, itemsDone: 0, itemsTotal: rows.length })
    let group = 0
    let first = true
    while (first || group < rows.length) {
      // The next group of packs, up to REPACK_GROUP_BLOBS blobs (at least one pack).
      const members = new Set<number>()
      let blobs = 0
      while (group < rows.length && (members.size === 0 || blobs + t.liveEntries.get(rows[group]!) <= REPACK_GROUP_BLOBS)) {
        blobs += t.liveEntries.get(rows[group]!)
        members.add(rows[group++]!)
      }
      const entries = new Map<number, PackEntry[]>()
      const collectAll = first
      first = false
      await this.#stream(this.#objects, (i, content) => {
        for (const pack of content.packs) {
          const n = t.find(pack.packId)
          if (t.firstListing.get(n) !== i + 1) continue
          if (members.has(n)) {
            const keep: PackEntry[] = []
            for (const e of pack.entries) {
              const c = this.#dupIds.find(e.id)
              const copyHere = c >= 0 ? this.#dupKeeper.get(c) === n + 1 : this.#isLive(e.id)
              if (copyHere) keep.push(e)
            }
            entries.set(n, keep)
          }
          if (collectAll && condemnedNow(n)) this.#trackExactly(pack.entries)
        }
      })
      for (const n of members) {
        const keep = entries.get(n) ?? []
        // The blobs to copy are exactly those the plan counted live here; anything else is a bug, and then the
        // pack stays as it is.
        const problem =
          keep.length !== t.liveEntries.get(n)
            ? `found ${keep.length} live blobs, the plan counted ${t.liveEntries.get(n)}`
            : await repacker.copy(t.id(n), keep)
        if (problem !== undefined) {
          t.clear(n, PackFlag.REPACK)
          this.#problems.push(`pack '${packKey(t.id(n))}' was not repacked: ${problem}`)
          this.#ev.say('warning', `pack '${packKey(t.id(n))}' was not repacked: ${problem}`)
          continue
        }
        for (const e of keep) this.#copied.add(e.id)
        bytesDone += t.liveBytes.get(n)
        this.#ev.progress({ bytesDone, bytesTotal: totalBytes, itemsDone: ++this.#stats.packsRepacked, itemsTotal: rows.length })
      }
    }
    const written = await repacker.finish()
    this.#stats.packsWritten = written.packsWritten
    this.#stats.bytesWritten = written.bytesWritten
    this.#stats.indexWritten += written.indexObjects.length
    this.#stats.indexBytesWritten += written.indexBytes
    for (const id of written.packIds) t.set(t.row(id), PackFlag.IN_STORAGE)
    // Only now, with the copies indexed, are the repacked packs condemned.
    for (const n of rows) if (t.has(n, PackFlag.REPACK)) this.#condemn(n)
    this.#ev.flush()
  }

  /** Writes this run's condemnation record(s), and rewrites earlier ones that lost packs (absolved or gone). */
  async #writeCondemnations(): Promise<void> {
    const t = this.#table
    const write = async (rows: number[], condemnedAt: string): Promise<void> => {
      for (let i = 0; i < rows.length; i += MAX_CONDEMNED_PER_RECORD) {
        const part = rows.slice(i, i + MAX_CONDEMNED_PER_RECORD)
        const key = newCondemnedKey()
        const value: CondemnedRecord = { formatVersion: 1, condemnedAt, packs: part.map((n) => t.id(n)) }
        await this.#repo.writeRecord(CONDEMNED_RECORD_KIND, key, value, { signal: this.#o.signal })
        this.#condemnations.push({ key, condemnedAt, rows: part })
      }
    }
    const fresh: number[] = []
    for (let n = 0; n < t.size; n++) if (t.has(n, PackFlag.CONDEMN)) fresh.push(n)
    const earlier = this.#condemnations
    this.#condemnations = []
    if (fresh.length > 0) {
      this.#ev.phase('condemn', { bytesDone: 0, bytesTotal: null, itemsDone: fresh.length, itemsTotal: fresh.length })
      await write(fresh, new Date().toISOString())
    }
    for (const c of earlier) {
      const keep = c.rows.filter((n) => !t.has(n, PackFlag.ABSOLVE) && (t.has(n, PackFlag.IN_STORAGE) || t.has(n, PackFlag.LISTED)))
      if (keep.length === c.rows.length) {
        this.#condemnations.push(c)
        continue
      }
      // The smaller record first (same time: the grace period still runs from the first condemnation), then the
      // old one goes: at every moment some record names each pack still condemned.
      if (keep.length > 0) await write(keep, c.condemnedAt)
      await this.#repo.removeRecord(CONDEMNED_RECORD_KIND, c.key, { signal: this.#o.signal })
    }
  }

  /**
   * Deletes the packs of condemnation records past the grace period that every other session acknowledges, after a
   * last check: no index object written since lists them, and no record written since the mark references a blob
   * that exists only there. Returns true when it compacted the index.
   */
  async #deleteDue(): Promise<boolean> {
    const t = this.#table
    const now = Date.now()
    const due = this.#condemnations.filter((c) => now - Date.parse(c.condemnedAt) >= this.#o.graceMs)
    if (due.length === 0) return false
    this.#ev.phase('acknowledgements')
    const acks = await checkAcknowledgements(
      this.#storage,
      this.#lock!.session,
      due.map((c) => c.key),
      this.#o.signal,
    )
    for (const b of acks.broken) this.#ev.say('warning', `removed the expired lock ${b.description}: it had not acknowledged the condemned packs`)
    this.#waitingFor = acks.waitingFor.map((w) => w.lock)
    for (const w of acks.waitingFor) this.#ev.say('info', `condemned packs wait for ${w.lock} to acknowledge them`)
    const deletable = due.filter((c) => acks.acknowledged.has(c.key))
    if (deletable.length === 0) return false
    const doomed = new Set<number>()
    for (const c of deletable) for (const n of c.rows) if (t.has(n, PackFlag.IN_STORAGE) || t.has(n, PackFlag.LISTED)) doomed.add(n)

    // Index objects written since the listing (by writers, or by this run's repacking) that list a doomed pack: an
    // orphan indexed meanwhile. It stays; the next run judges it like any other pack.
    this.#ev.phase('recheck')
    const known = new Set(this.#objects.map((x) => x.id))
    const newer = (await listIndexObjects(this.#storage, this.#o.signal)).filter((x) => !known.has(x.id))
    await this.#stream(newer, (_, content) => {
      for (const pack of content.packs) {
        const n = t.find(pack.packId)
        if (n >= 0 && doomed.delete(n)) this.#absolve(n)
      }
    })
    // Records written since the mark: their references to blobs of condemned packs are recorded exactly.
    await this.#marker.mark(
      (id) => {
        if (this.#inCondemned.has(id)) this.#referencedCondemned.add(id)
      },
      { onlyNew: true },
    )
    await this.#stream(this.#objects, (i, content) => {
      for (const pack of content.packs) {
        const n = t.find(pack.packId)
        if (!doomed.has(n) || t.firstListing.get(n) !== i + 1) continue
        if (pack.entries.some((e) => this.#referencedCondemned.has(e.id) && !this.#copiedElsewhere(e.id, n, doomed))) {
          doomed.delete(n)
          this.#absolve(n)
        }
      }
    })

    if (doomed.size > 0) {
      this.#ev.phase('compact')
      await this.#compact((n) => doomed.has(n))
      this.#ev.phase('delete', { bytesDone: 0, bytesTotal: null, itemsDone: 0, itemsTotal: doomed.size })
      await forEachConcurrent([...doomed], this.#o.concurrency, async (n) => {
        if (!t.has(n, PackFlag.IN_STORAGE)) return
        await this.#held((s) => this.#storage.remove(packKey(t.id(n)), { signal: s }))
        t.set(n, PackFlag.DELETE)
        this.#stats.packsDeleted++
        this.#stats.bytesDeleted += t.objectBytes.get(n)
        this.#ev.progress({ bytesDone: this.#stats.bytesDeleted, bytesTotal: null, itemsDone: this.#stats.packsDeleted, itemsTotal: doomed.size })
      })
      this.#ev.flush()
    }
    // Every pack of these records is deleted or absolved now.
    for (const c of deletable) await this.#repo.removeRecord(CONDEMNED_RECORD_KIND, c.key, { signal: this.#o.signal })
    const gone = new Set(deletable.map((c) => c.key))
    this.#condemnations = this.#condemnations.filter((c) => !gone.has(c.key))
    return doomed.size > 0
  }

  /** True when blob `id` of doomed pack `n` has a copy that stays: the kept copy of a duplicate, or a repacked one. */
  #copiedElsewhere(id: Uint8Array, n: number, doomed: ReadonlySet<number>): boolean {
    if (this.#copied.has(id)) return true
    const c = this.#dupIds.find(id)
    if (c < 0) return false
    const keeper = this.#dupKeeper.get(c) - 1
    return keeper >= 0 && keeper !== n && !doomed.has(keeper)
  }

  async #compact(drop: (n: number) => boolean): Promise<void> {
    const r = await compactIndex({
      storage: this.#storage,
      keys: this.#repo.keys,
      objects: this.#objects,
      table: this.#table,
      drop,
      mergeSmall: smallIndexObjects(this.#objects) > 0,
      held: this.#held,
      concurrency: this.#o.concurrency,
      signal: this.#o.signal,
    })
    this.#stats.indexWritten += r.written.length
    this.#stats.indexRemoved += r.removed.length
    this.#stats.indexBytesWritten += r.bytesWritten
    this.#stats.indexBytesRemoved += r.bytesRemoved
  }

  /** Driver leftovers (temporary files, incomplete uploads) and `probe-*` objects of interrupted inits. */
  async #removeLeftovers(): Promise<void> {
    this.#ev.phase('leftovers')
    const before = new Date(this.#now - this.#o.graceMs)
    const r = await removeLeftoversOf(this.#storage, before, { signal: this.#o.signal })
    this.#stats.leftovers += r.removed
    for await (const obj of this.#storage.list('probe-', { signal: this.#o.signal })) {
      if (!/^probe-[0-9a-f]{32}$/.test(obj.key) || obj.modifiedAt >= before) continue
      await this.#held((s) => this.#storage.remove(obj.key, { signal: s }))
      this.#stats.leftovers++
    }
  }

  /** Where blob `id` is, found by streaming the index objects (for a structure blob the loaded index lacks). */
  async #locateByScan(id: BlobId, signal: AbortSignal | undefined): Promise<BlobLocation | undefined> {
    const want = Buffer.from(id, 'hex')
    let found: BlobLocation | undefined
    await streamIndexObjects(this.#storage, this.#repo.keys, this.#objects, { concurrency: this.#o.concurrency, signal }, (_, content) => {
      for (const pack of content.packs) {
        const e = pack.entries.find((x) => x.id.equals(want))
        const n = this.#table.find(pack.packId)
        if (e && !found && n >= 0 && this.#table.has(n, PackFlag.IN_STORAGE)) found = { ...e, packId: pack.packId }
      }
    })
    return found
  }

  #stream(objects: readonly IndexObjectInfo[], fn: Parameters<typeof streamIndexObjects>[4]): Promise<void> {
    return streamIndexObjects(this.#storage, this.#repo.keys, objects, { concurrency: this.#o.concurrency, signal: this.#o.signal }, fn)
  }

  #result(): GcResult {
    const t = this.#table
    const s = this.#stats
    let pendingPacks = 0
    let pendingBytes = 0
    for (const c of this.#condemnations) {
      for (const n of c.rows) {
        if (!t.has(n, PackFlag.IN_STORAGE) || t.has(n, PackFlag.DELETE)) continue
        pendingPacks++
        pendingBytes += t.objectBytes.get(n)
      }
    }
    const indexBefore = this.#objects.length
    const memoryBytes =
      this.#live.sizeBytes +
      this.#inCondemned.sizeBytes +
      this.#seen.sizeBytes +
      this.#referencedCondemned.sizeBytes +
      this.#dupIds.sizeBytes +
      this.#copied.sizeBytes +
      t.sizeBytes +
      (this.#marker?.sizeBytes ?? 0)
    return {
      dryRun: this.#o.dryRun === true,
      packsBefore: s.packsBefore,
      packsAfter: s.packsBefore - s.packsDeleted + s.packsWritten,
      bytesBefore: s.bytesBefore + s.indexBytesBefore,
      bytesAfter: s.bytesBefore - s.bytesDeleted + s.bytesWritten + s.indexBytesBefore - s.indexBytesRemoved + s.indexBytesWritten,
      indexObjectsBefore: indexBefore,
      indexObjectsAfter: indexBefore - s.indexRemoved + s.indexWritten,
      packsDeleted: s.packsDeleted,
      bytesDeleted: s.bytesDeleted,
      packsRepacked: s.packsRepacked,
      packsWritten: s.packsWritten,
      bytesWritten: s.bytesWritten,
      packsCondemned: s.packsCondemned,
      packsAbsolved: s.packsAbsolved,
      pendingPacks,
      pendingBytes,
      waitingFor: this.#waitingFor,
      blobs: { indexed: s.indexed, duplicates: s.duplicates, live: s.live },
      records: s.records,
      backups: s.backups,
      leftoversRemoved: s.leftovers,
      freeableBytes: s.freeable,
      memoryBytes,
      falsePositiveRate: this.#live.expectedFalsePositiveRate(),
      problems: this.#problems,
    }
  }
}
