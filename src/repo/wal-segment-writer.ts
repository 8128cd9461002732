// Assembles a WAL stream into segments and stores each completed segment in the repository's WAL catalog, while
// the next one fills (a bounded pipeline). `durableLsn` is the end of what is durable there, in stream order: the
// flush position a streamer may report (invariant 6).

import { AssertionError } from '../errors.js'
import { crc32cFinal, crc32cHexLE, crc32cInit, crc32cUpdate } from '../pg/crc32c.js'
import { formatLsn, type Lsn } from '../pg/lsn.js'
import { isAllZero } from '../pg/page.js'
import { walFileName } from '../pg/wal-names.js'
import type { Repository } from './repository.js'
import { listWalKeys, partialKey, removeWalRecord, segmentKey, type WalPiece, type WalSegmentRecord, writeWalRecord } from './wal-catalog.js'
import { putWalPieces, WAL_PIECE_BYTES, zeroPieces } from './wal-pieces.js'

/** Superseded partial records removed together (a synchronous streamer writes one per flush report). */
const SUPERSEDED_BATCH = 64

/** What `onStored` reports. */
export interface StoredSegment {
  name: string
  partial: boolean
  validBytes: number
  /** 'exists' when the same content was already stored under the key (a resumed stream, another writer). */
  result: 'stored' | 'exists'
  /** End of the WAL this record makes durable. */
  endLsn: Lsn
}

/** Options of {@link WalSegmentWriter}; the backup engine passes the first five. */
export interface SegmentWriterOptions {
  systemId: bigint
  timeline: number
  segmentSizeBytes: number
  /** Where the stream starts; must be the start of a segment. */
  startLsn: Lsn
  signal?: AbortSignal
  /** Called, in stream order, after each segment (or partial segment) is durable. */
  onStored?: (e: StoredSegment) => void
  /** Completed segments stored at once while the next one fills (default 2). Memory: one segment buffer each. */
  maxPendingSegments?: number
  /**
   * Synchronous mode: how far past its level-B record a sync point may get before it writes a new level-B record
   * instead of a small level-C one (default 128 KiB; see storeSyncPoint).
   */
  syncStepBytes?: number
}

interface Pending {
  readonly endLsn: Lsn
  promise: Promise<void>
  event: StoredSegment | undefined
}

/**
 * Turns a WAL stream (consecutive XLogData payloads) into segment records. `write` hands completed segments to a
 * bounded store pipeline; `durableLsn` advances in stream order over what is stored; `storePartial` and
 * `storeSyncPoint` make the segment in progress durable; `close` waits for everything.
 */
export class WalSegmentWriter {
  /** End of the WAL that is durable in the repository. */
  durableLsn: Lsn
  /** End of the WAL received. */
  receivedLsn: Lsn
  private readonly seg: bigint
  private readonly segSize: number
  private buf: Buffer
  private readonly spare: Buffer[] = []
  private segno: bigint
  private filled = 0
  /**
   * Where the zeros at the end of what was received begin, when they were not copied into `buf` (its bytes from
   * there are stale). A segment ended by a switch (every backup ends with one) is mostly zeros: copying them touched
   * up to 16 MiB of the buffer at the end of a backup, where its memory peaks.
   */
  private zeroFrom: number | undefined
  private crcState = crc32cInit()
  private readonly pending: Pending[] = []
  private readonly maxPending: number
  private failure: { error: unknown } | undefined
  /** CRC states at each 1 MiB boundary of the current segment (a level-A record's CRC covers only its prefix). */
  private crcAtPiece = new Map<number, number>()
  /** Synchronous mode, current segment: the level-A and level-B records (see storeSyncPoint). */
  private syncA: { key: string; endBytes: number; pieces: WalPiece[] } | undefined
  private syncB: { key: string; endBytes: number } | undefined
  /** Partial records this writer wrote for the current segment, with the key each one's content builds on. */
  private ownPartials = new Map<string, string | undefined>()
  /** Segments whose partial records should be removed once complete: the first one (a resumed stream) and any with a sync point. */
  private readonly cleanPartialsOf = new Set<bigint>()
  private removals: Promise<void> = Promise.resolve()
  private superseded: string[] = []

  constructor(
    private readonly repo: Repository,
    private readonly o: SegmentWriterOptions,
  ) {
    this.seg = BigInt(o.segmentSizeBytes)
    this.segSize = o.segmentSizeBytes
    if (o.startLsn % this.seg !== 0n) throw new AssertionError(`WAL stream must start at a segment boundary, not ${formatLsn(o.startLsn)}`)
    this.buf = Buffer.allocUnsafe(o.segmentSizeBytes)
    this.segno = o.startLsn / this.seg
    this.durableLsn = o.startLsn
    this.receivedLsn = o.startLsn
    this.maxPending = Math.max(1, o.maxPendingSegments ?? 2)
    this.cleanPartialsOf.add(this.segno)
  }

  get timeline(): number {
    return this.o.timeline
  }

  /** Name of the segment being filled. */
  get currentSegmentName(): string {
    return walFileName(this.o.timeline, this.segno, this.segSize)
  }

  /**
   * Appends WAL that starts exactly at `receivedLsn`. Each completed segment is handed to the storing pipeline;
   * this waits only while that pipeline is full. A failure of an earlier store is thrown here.
   */
  async write(walStart: Lsn, data: Buffer): Promise<void> {
    this.throwIfFailed()
    if (walStart !== this.receivedLsn) {
      throw new AssertionError(`WAL gap: expected data at ${formatLsn(this.receivedLsn)}, got ${formatLsn(walStart)}`)
    }
    let at = 0
    while (at < data.length) {
      // Up to the next 1 MiB boundary (or the segment's end), where the CRC state is kept for level-A records.
      const room = Math.min(this.segSize, (Math.floor(this.filled / WAL_PIECE_BYTES) + 1) * WAL_PIECE_BYTES) - this.filled
      const n = Math.min(room, data.length - at)
      const piece = data.subarray(at, at + n)
      if (isAllZero(piece)) this.zeroFrom ??= this.filled
      else {
        this.writeZeros()
        piece.copy(this.buf, this.filled)
      }
      this.crcState = crc32cUpdate(this.crcState, piece)
      this.filled += n
      at += n
      this.receivedLsn += BigInt(n)
      if (this.filled % WAL_PIECE_BYTES === 0) this.crcAtPiece.set(this.filled, this.crcState)
      if (this.filled === this.segSize) await this.completeSegment()
    }
  }

  /** Waits until every completed segment handed over so far is durable (or throws its failure). */
  async drain(): Promise<void> {
    while (this.pending.length > 0) {
      await this.pending[0]!.promise
      this.throwIfFailed()
    }
    this.throwIfFailed()
  }

  /** Waits for the pipeline and removes superseded partial records. */
  async close(): Promise<void> {
    await this.drain()
    this.removeSuperseded()
    await this.removals
    this.throwIfFailed()
  }

  /** Stores what was received of the current segment as a partial segment (nothing when it is empty). */
  async storePartial(): Promise<void> {
    await this.drain()
    if (this.filled === 0 || this.durableLsn === this.receivedLsn) return
    const zerosAt = this.zerosToPieceEnd()
    const pieces = [...(await this.putPieces(this.buf, 0, zerosAt)), ...zeroPieces(zerosAt, this.filled)]
    await this.writePartial({ validBytes: this.filled, crcState: this.crcState, pieces })
  }

  /**
   * Synchronous mode: makes everything received durable now, cheaply enough to do it for every batch. Partial
   * records form at most three levels, each built on the one before (field `base`):
   * - A: the whole 1 MiB pieces received so far, in blobs (written when a new piece is complete: a pack, an index
   *   object and a record);
   * - B: based on A, the bytes after A inline (written every `syncStepBytes` of progress; at most 1 MiB inline);
   * - C: based on B, the bytes after B inline (every other sync point; at most `syncStepBytes`).
   * So a flush report costs one small record write. Superseded records are removed in the background.
   */
  async storeSyncPoint(): Promise<void> {
    await this.drain()
    if (this.filled === 0 || this.durableLsn === this.receivedLsn) return
    this.writeZeros()
    this.cleanPartialsOf.add(this.segno)
    const step = this.o.syncStepBytes ?? 128 << 10
    const whole = Math.floor(this.filled / WAL_PIECE_BYTES) * WAL_PIECE_BYTES
    const aEnd = this.syncA?.endBytes ?? 0
    if (whole > aEnd) {
      await this.retake(this.syncA?.pieces ?? [], this.buf)
      const pieces = [...(this.syncA?.pieces ?? []), ...(await this.putPieces(this.buf, aEnd, whole))]
      const key = await this.writePartial({ validBytes: whole, crcState: this.crcAtPiece.get(whole)!, pieces, quiet: whole < this.filled })
      this.syncA = { key, endBytes: whole, pieces }
      this.syncB = undefined
      if (whole === this.filled) return
    }
    const a = this.syncA
    if (this.syncB === undefined || this.filled - this.syncB.endBytes > step) {
      const from = a?.endBytes ?? 0
      const key = await this.writePartial({
        validBytes: this.filled,
        crcState: this.crcState,
        pieces: [],
        base: a?.key,
        tail: this.buf.subarray(from, this.filled),
      })
      this.syncB = { key, endBytes: this.filled }
    } else {
      const b = this.syncB
      await this.writePartial({ validBytes: this.filled, crcState: this.crcState, pieces: [], base: b.key, tail: this.buf.subarray(b.endBytes, this.filled) })
    }
  }

  /**
   * Writes a partial record of the current segment covering its first `validBytes`; then (unless `quiet`: an
   * intermediate record of a sync point) reports it durable. Resolves with its key.
   */
  private async writePartial(p: { validBytes: number; crcState: number; pieces: WalPiece[]; base?: string; tail?: Buffer; quiet?: boolean }): Promise<string> {
    const name = this.currentSegmentName
    const record: WalSegmentRecord = {
      name,
      timeline: this.o.timeline,
      segno: this.segno.toString(),
      segmentSizeBytes: this.segSize,
      validBytes: p.validBytes,
      partial: true,
      crc32c: crc32cHexLE(crc32cFinal(p.crcState)),
      pieces: p.pieces,
      ...(p.base !== undefined ? { base: p.base } : {}),
      ...(p.tail !== undefined && p.tail.length > 0 ? { tail: p.tail.toString('base64') } : {}),
    }
    const key = partialKey(this.o.systemId, name, p.validBytes)
    const result = await writeWalRecord(this.repo, key, record, { signal: this.o.signal })
    this.ownPartials.set(key, p.base)
    const endLsn = this.segno * this.seg + BigInt(p.validBytes)
    if (endLsn > this.durableLsn) this.durableLsn = endLsn
    if (!p.quiet) this.o.onStored?.({ name, partial: true, validBytes: p.validBytes, result, endLsn })
    // Every earlier record of this segment that the new one does not build on is superseded. Removed in batches in
    // the background, so that a flush report does not wait for it (each removal is an fsync on a filesystem
    // repository); a reader that listed a removed record looks again. The complete segment's store removes
    // whatever partials remain.
    const live = new Set<string>()
    for (let k: string | undefined = key; k !== undefined; k = this.ownPartials.get(k)) live.add(k)
    for (const k of this.ownPartials.keys()) {
      if (!live.has(k)) {
        this.ownPartials.delete(k)
        this.superseded.push(k)
      }
    }
    if (this.superseded.length >= SUPERSEDED_BATCH) this.removeSuperseded()
    return key
  }

  private removeSuperseded(): void {
    const keys = this.superseded
    this.superseded = []
    if (keys.length === 0) return
    this.removals = this.removals.then(async () => {
      try {
        for (const k of keys) await removeWalRecord(this.repo, k, { signal: this.o.signal })
      } catch (error) {
        this.failure ??= { error }
      }
    })
  }

  private async completeSegment(): Promise<void> {
    const buf = this.buf
    const segno = this.segno
    const crc = crc32cHexLE(crc32cFinal(this.crcState))
    const syncPieces = this.syncA?.pieces ?? []
    const syncPiecesBytes = this.syncA?.endBytes ?? 0
    const cleanPartials = this.cleanPartialsOf.delete(segno)
    const endLsn = (segno + 1n) * this.seg
    // Pieces of zeros after zerosAt become holes. (A sync point writes its zeros before it stores pieces, so zeros
    // never begin before its pieces end.)
    const zerosAt = this.zerosToPieceEnd()
    this.zeroFrom = undefined
    const entry: Pending = { endLsn, event: undefined, promise: Promise.resolve() }
    entry.promise = (async () => {
      const name = walFileName(this.o.timeline, segno, this.segSize)
      // Whole pieces a sync point already stored are the same blobs: reuse them, put only the rest.
      await this.retake(syncPieces, buf)
      const pieces = [...syncPieces, ...(await this.putPieces(buf, syncPiecesBytes, zerosAt)), ...zeroPieces(zerosAt, buf.length)]
      const record: WalSegmentRecord = {
        name,
        timeline: this.o.timeline,
        segno: segno.toString(),
        segmentSizeBytes: this.segSize,
        validBytes: buf.length,
        partial: false,
        crc32c: crc,
        pieces,
      }
      const result = await writeWalRecord(this.repo, segmentKey(this.o.systemId, name), record, { signal: this.o.signal })
      entry.event = { name, partial: false, validBytes: buf.length, result, endLsn }
      if (cleanPartials) {
        for (const key of await listWalKeys(this.repo, this.o.systemId, `${name}.partial.`, { signal: this.o.signal })) {
          await removeWalRecord(this.repo, key, { signal: this.o.signal })
        }
      }
    })().then(
      () => {
        this.spare.push(buf)
        this.advance()
      },
      (error: unknown) => {
        this.failure ??= { error }
      },
    )
    this.pending.push(entry)
    this.segno++
    this.filled = 0
    this.crcState = crc32cInit()
    this.crcAtPiece = new Map()
    this.syncA = undefined
    this.syncB = undefined
    this.ownPartials = new Map()
    // The complete segment's store removes all its partial records.
    this.superseded = this.superseded.filter((k) => !k.includes(`/${walFileName(this.o.timeline, segno, this.segSize)}.partial.`))
    this.buf = this.spare.pop() ?? Buffer.allocUnsafe(this.segSize)
    while (this.pending.length > this.maxPending) {
      await this.pending[0]!.promise
      this.throwIfFailed()
    }
  }

  /** Moves durableLsn over the completed stores at the head of the pipeline, reporting each in order. */
  private advance(): void {
    while (this.pending.length > 0 && this.pending[0]!.event !== undefined) {
      const head = this.pending.shift()!
      this.durableLsn = head.endLsn
      this.o.onStored?.(head.event!)
    }
  }

  /**
   * Takes again the references to pieces an earlier record of this segment lists, before another record lists
   * them: a record may name only blobs its writer holds a reference to (docs/repository-format.md §10a). A piece
   * whose pack garbage collection has condemned meanwhile is stored again from `bytes` (the segment's buffer; the
   * pieces start at its beginning).
   */
  private async retake(pieces: readonly WalPiece[], bytes: Buffer): Promise<void> {
    let off = 0
    for (const [blob, length] of pieces) {
      if (blob !== null && !this.repo.hasBlob(blob)) await this.repo.putBlob('data', bytes.subarray(off, off + length), { signal: this.o.signal })
      off += length
    }
  }

  /**
   * Before the segment in progress is stored: writes into `buf` the zeros received since `zeroFrom` up to the next
   * piece boundary (that piece is stored from the buffer) and returns where they stop, at most `filled`. Whole
   * pieces of zeros after that are stored as holes without writing them (putWalPieces would make the same holes).
   * A backup ends with a WAL switch, after which the server sends the rest of the segment, up to 16 MiB of zeros:
   * writing them all into the buffer touched that much memory at the backup's end, its peak (12-15 MB of a backup
   * of 40,000 tables).
   */
  private zerosToPieceEnd(): number {
    if (this.zeroFrom === undefined) return this.filled
    const end = Math.min(this.filled, Math.ceil(this.zeroFrom / WAL_PIECE_BYTES) * WAL_PIECE_BYTES)
    this.buf.fill(0, this.zeroFrom, end)
    this.zeroFrom = end < this.filled ? end : undefined
    return end
  }

  /** Writes into `buf` the zeros received since `zeroFrom`, before anything reads or follows them there. */
  private writeZeros(): void {
    if (this.zeroFrom === undefined) return
    this.buf.fill(0, this.zeroFrom, this.filled)
    this.zeroFrom = undefined
  }

  private putPieces(bytes: Buffer, from: number, to: number): Promise<WalPiece[]> {
    return putWalPieces(this.repo, bytes, { from, to, signal: this.o.signal })
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error
  }
}
