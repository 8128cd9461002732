// Assembles a WAL stream into segments and stores each completed segment in the repository's WAL catalog, while
// the next one fills (a bounded pipeline). `durableLsn` is the end of what is durable there, in stream order: the
// flush position a streamer may report (invariant 6).

import { AssertionError } from '../errors.js'
import { formatLsn, type Lsn } from '../../protocol/index.js'
import { crc32cFinal, crc32cHexLE, crc32cInit, crc32cUpdate } from '../pg/crc32c.js'
import { isAllZero } from '../pg/page.js'
import { walFileName } from '../pg/wal-names.js'
import type { Repository } from '../repo/repository.js'
import {
  listWalKeys,
  partialKey,
  removeWalRecord,
  segmentKey,
  type WalPiece,
  type WalSegmentRecord,
  writeWalRecord,
} from '../repo/wal-catalog.js'

/** Superseded partial records removed together (a synchronous streamer writes one per flush report). */
const SUPERSEDED_BATCH = 64

/** WAL is stored in pieces of 1 MiB: page runs compress well, and a partial segment shares its leading pieces. */
export const WAL_PIECE_BYTES = 1 << 20

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
   * Synchronous mode: the largest tail `storeSyncPoint` keeps inline in the partial record before it moves the
   * tail's whole pieces into blobs (default 2 MiB).
   */
  syncInlineMaxBytes?: number
}

interface Pending {
  readonly endLsn: Lsn
  promise: Promise<void>
  event: StoredSegment | undefined
}

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
  private crcState = crc32cInit()
  private readonly pending: Pending[] = []
  private readonly maxPending: number
  private failure: { error: unknown } | undefined
  /** Synchronous mode: pieces of the current segment already in blobs, and the bytes they cover. */
  private syncPieces: WalPiece[] = []
  private syncPiecesBytes = 0
  /** The partial record this writer last wrote for the current segment (removed once superseded). */
  private ownPartialKey: string | undefined
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
      const n = data.copy(this.buf, this.filled, at)
      this.crcState = crc32cUpdate(this.crcState, data.subarray(at, at + n))
      this.filled += n
      at += n
      this.receivedLsn += BigInt(n)
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
    const name = this.currentSegmentName
    const valid = this.buf.subarray(0, this.filled)
    const pieces = await this.putPieces(valid, 0, valid.length)
    await this.writePartial(name, pieces, undefined)
  }

  /**
   * Synchronous mode: makes everything received durable now, as a partial record of the current segment whose last
   * (growing) part is kept inline; the previous such record is removed. Costs one record write, plus one pack and
   * index object each time the inline part passes `syncInlineMaxBytes`.
   */
  async storeSyncPoint(): Promise<void> {
    await this.drain()
    if (this.filled === 0 || this.durableLsn === this.receivedLsn) return
    this.cleanPartialsOf.add(this.segno)
    const inlineMax = this.o.syncInlineMaxBytes ?? 2 * WAL_PIECE_BYTES
    if (this.filled - this.syncPiecesBytes > inlineMax) {
      const wholeEnd = this.syncPiecesBytes + Math.floor((this.filled - this.syncPiecesBytes) / WAL_PIECE_BYTES) * WAL_PIECE_BYTES
      this.syncPieces.push(...(await this.putPieces(this.buf, this.syncPiecesBytes, wholeEnd)))
      this.syncPiecesBytes = wholeEnd
    }
    const tail = this.buf.subarray(this.syncPiecesBytes, this.filled)
    await this.writePartial(this.currentSegmentName, [...this.syncPieces], tail.length > 0 ? tail.toString('base64') : undefined)
  }

  private async writePartial(name: string, pieces: WalPiece[], tail: string | undefined): Promise<void> {
    const record: WalSegmentRecord = {
      name,
      timeline: this.o.timeline,
      segno: this.segno.toString(),
      segmentSizeBytes: this.segSize,
      validBytes: this.filled,
      partial: true,
      crc32c: crc32cHexLE(crc32cFinal(this.crcState)),
      pieces,
      ...(tail !== undefined ? { tail } : {}),
    }
    const key = partialKey(this.o.systemId, name, this.filled)
    const result = await writeWalRecord(this.repo, key, record, { signal: this.o.signal })
    const previous = this.ownPartialKey
    this.ownPartialKey = key
    const endLsn = this.segno * this.seg + BigInt(this.filled)
    this.durableLsn = endLsn
    this.o.onStored?.({ name, partial: true, validBytes: this.filled, result, endLsn })
    // Superseded by the longer record just written. Removed in batches in the background, so that a flush report
    // does not wait for it (each removal is an fsync on a filesystem repository); a reader that listed a removed
    // record looks again (findSegmentRecord). The complete segment's store removes whatever partials remain.
    if (previous !== undefined && previous !== key) this.superseded.push(previous)
    if (this.superseded.length >= SUPERSEDED_BATCH) this.removeSuperseded()
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
    const syncPieces = this.syncPieces
    const syncPiecesBytes = this.syncPiecesBytes
    const cleanPartials = this.cleanPartialsOf.delete(segno)
    const endLsn = (segno + 1n) * this.seg
    const entry: Pending = { endLsn, event: undefined, promise: Promise.resolve() }
    entry.promise = (async () => {
      const name = walFileName(this.o.timeline, segno, this.segSize)
      // Whole pieces a sync point already stored are the same blobs: reuse them, put only the rest.
      const pieces = [...syncPieces, ...(await this.putPieces(buf, syncPiecesBytes, buf.length))]
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
    this.syncPieces = []
    this.syncPiecesBytes = 0
    this.ownPartialKey = undefined
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

  /** Puts `bytes[from, to)` as 1 MiB pieces (cut at absolute multiples of the piece size; zero pieces are holes). */
  private async putPieces(bytes: Buffer, from: number, to: number): Promise<WalPiece[]> {
    const pieces: WalPiece[] = []
    for (let off = from; off < to; ) {
      const end = Math.min(to, (Math.floor(off / WAL_PIECE_BYTES) + 1) * WAL_PIECE_BYTES)
      const piece = bytes.subarray(off, end)
      if (isAllZero(piece)) pieces.push([null, piece.length])
      else pieces.push([(await this.repo.putBlob('data', piece, { signal: this.o.signal })).id, piece.length])
      off = end
    }
    return pieces
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error
  }
}
