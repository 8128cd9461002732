// Assembles a WAL stream into segments and stores each completed segment in the repository's WAL catalog.
// `durableLsn` is the end of what is durable there: the flush position a streamer may report (invariant 6).

import { AssertionError } from '../errors.js'
import { formatLsn, type Lsn } from '../../protocol/index.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { isAllZero } from '../pg/page.js'
import { walFileName } from '../pg/wal-names.js'
import type { Repository } from '../repo/repository.js'
import { partialKey, segmentKey, type WalPiece, type WalSegmentRecord, writeWalRecord } from '../repo/wal-catalog.js'

/** WAL is stored in pieces of 1 MiB: page runs compress well, and a partial segment shares its leading pieces. */
export const WAL_PIECE_BYTES = 1 << 20

export interface SegmentWriterOptions {
  systemId: bigint
  timeline: number
  segmentSizeBytes: number
  /** Where the stream starts; must be the start of a segment. */
  startLsn: Lsn
  signal?: AbortSignal
  /** Called after each segment (or partial segment) is durable. */
  onStored?: (e: { name: string; partial: boolean; validBytes: number; result: 'stored' | 'exists' }) => void
}

export class WalSegmentWriter {
  /** End of the WAL that is durable in the repository. */
  durableLsn: Lsn
  /** End of the WAL received. */
  receivedLsn: Lsn
  private readonly seg: bigint
  private readonly buf: Buffer
  private segno: bigint
  private filled = 0

  constructor(
    private readonly repo: Repository,
    private readonly o: SegmentWriterOptions,
  ) {
    this.seg = BigInt(o.segmentSizeBytes)
    if (o.startLsn % this.seg !== 0n) throw new AssertionError(`WAL stream must start at a segment boundary, not ${formatLsn(o.startLsn)}`)
    this.buf = Buffer.alloc(o.segmentSizeBytes)
    this.segno = o.startLsn / this.seg
    this.durableLsn = o.startLsn
    this.receivedLsn = o.startLsn
  }

  /** Appends WAL that starts exactly at `receivedLsn`; stores each segment it completes before resolving. */
  async write(walStart: Lsn, data: Buffer): Promise<void> {
    if (walStart !== this.receivedLsn) {
      throw new AssertionError(`WAL gap: expected data at ${formatLsn(this.receivedLsn)}, got ${formatLsn(walStart)}`)
    }
    let at = 0
    while (at < data.length) {
      const n = data.copy(this.buf, this.filled, at)
      this.filled += n
      at += n
      this.receivedLsn += BigInt(n)
      if (this.filled === this.buf.length) {
        await this.store(false)
        this.segno++
        this.filled = 0
        this.buf.fill(0)
      }
    }
  }

  /** Stores what was received of the current segment as a partial segment (nothing when it is empty). */
  async storePartial(): Promise<void> {
    if (this.filled > 0) await this.store(true)
  }

  private async store(partial: boolean): Promise<void> {
    const name = walFileName(this.o.timeline, this.segno, this.o.segmentSizeBytes)
    const valid = this.buf.subarray(0, this.filled)
    const pieces: WalPiece[] = []
    for (let off = 0; off < valid.length; off += WAL_PIECE_BYTES) {
      const piece = valid.subarray(off, Math.min(valid.length, off + WAL_PIECE_BYTES))
      if (isAllZero(piece)) {
        pieces.push([null, piece.length])
      } else {
        const { id } = await this.repo.putBlob('data', piece, { signal: this.o.signal })
        pieces.push([id, piece.length])
      }
    }
    const record: WalSegmentRecord = {
      name,
      timeline: this.o.timeline,
      segno: this.segno.toString(),
      segmentSizeBytes: this.o.segmentSizeBytes,
      validBytes: valid.length,
      partial,
      crc32c: crc32cHexLE(crc32c(valid)),
      pieces,
    }
    const key = partial ? partialKey(this.o.systemId, name, valid.length) : segmentKey(this.o.systemId, name)
    // writeRecord flushes the repository first: the pieces are durable before the record names them.
    const result = await writeWalRecord(this.repo, key, record, { signal: this.o.signal })
    this.durableLsn = this.segno * this.seg + BigInt(valid.length)
    this.o.onStored?.({ name, partial, validBytes: valid.length, result })
  }
}
