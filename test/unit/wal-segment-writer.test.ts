// WalSegmentWriter against a real filesystem repository, fed a synthetic stream (the writer does not parse WAL):
// stored content equals what was fed, durableLsn advances in stream order and only over stored records,
// partial and synchronous-mode records, removal of superseded partial records, and failure propagation.

import { randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { AssertionError } from '../../src/errors.js'
import { walFileName } from '../../src/pg/wal-names.js'
import { findSegmentRecord, listWalKeys, parseWalKey, readWalContent, type WalSegmentRecord } from '../../src/repo/wal-catalog.js'
import { type StoredSegment, WalSegmentWriter } from '../../src/repo/wal-segment-writer.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'

const SEG = 4 << 20 // 4 MiB segments: several 1 MiB pieces each, quick to fill
const SYS = 7000000000000000002n
const name = (segno: number) => walFileName(1, BigInt(segno), SEG)

/** Feeds `stream` to the writer in pieces of about `chunk` bytes (crossing segment boundaries), as XLogData would. */
async function feed(w: WalSegmentWriter, stream: Buffer, from: bigint, chunk: number): Promise<void> {
  for (let at = 0; at < stream.length; at += chunk) await w.write(from + BigInt(at), stream.subarray(at, Math.min(stream.length, at + chunk)))
}

describe('WalSegmentWriter', () => {
  let r: TestRepo
  afterEach(async () => r?.close())

  it('stores each completed segment with the bytes it was fed, reporting in order only what is stored', async () => {
    r = await freshFsRepo()
    const start = BigInt(5 * SEG)
    const stream = randomBytes(3 * SEG + 12345)
    const events: StoredSegment[] = []
    const checks: Promise<void>[] = []
    const w = new WalSegmentWriter(r.repo, {
      systemId: SYS,
      timeline: 1,
      segmentSizeBytes: SEG,
      startLsn: start,
      onStored: (e) => {
        events.push(e)
        // Invariant 6: when reported, the record is in the repository (read through a second instance).
        checks.push(r.second().then(async (other) => expect(await findSegmentRecord(other, SYS, e.name)).toBeDefined()))
      },
    })
    await feed(w, stream, start, 128 << 10)
    await w.drain()
    expect(w.durableLsn).toBe(start + BigInt(3 * SEG))
    expect(w.receivedLsn).toBe(start + BigInt(stream.length))
    await w.storePartial()
    await w.close()
    await Promise.all(checks)
    expect(events.map((e) => [e.name, e.partial, e.endLsn])).toEqual([
      [name(5), false, start + BigInt(SEG)],
      [name(6), false, start + BigInt(2 * SEG)],
      [name(7), false, start + BigInt(3 * SEG)],
      [name(8), true, start + BigInt(3 * SEG + 12345)],
    ])
    for (let i = 0; i < 4; i++) {
      const rec = (await findSegmentRecord(r.repo, SYS, name(5 + i)))!
      const want = stream.subarray(i * SEG, Math.min(stream.length, (i + 1) * SEG))
      expect((await readWalContent(r.repo, rec)).equals(want), name(5 + i)).toBe(true)
      expect(rec.pieces.length).toBe(Math.ceil(want.length / (1 << 20)))
    }
  })

  it('synchronous mode: each sync point is durable, longer partials supersede shorter ones, the complete segment removes them', async () => {
    r = await freshFsRepo()
    const stream = randomBytes(SEG + 1000)
    const w = new WalSegmentWriter(r.repo, { systemId: SYS, timeline: 1, segmentSizeBytes: SEG, startLsn: 0n, syncStepBytes: 64 << 10 })
    let at = 0
    const partialKeys = async () => (await listWalKeys(r.repo, SYS, name(0))).map(parseWalKey).filter((k) => k?.kind === 'partial')
    // Many small batches, each made durable at once (as commits under synchronous replication).
    for (const n of [100, 5000, 300_000, 900_000, 1_200_000, 10, 70_000, 20_000, 30_000, 1]) {
      await w.write(BigInt(at), stream.subarray(at, at + n))
      at += n
      await w.storeSyncPoint()
      expect(w.durableLsn).toBe(BigInt(at))
      const rec = (await findSegmentRecord(r.repo, SYS, name(0)))! as WalSegmentRecord
      expect(rec.partial).toBe(true)
      expect(rec.validBytes).toBe(at)
      expect((await readWalContent(r.repo, rec)).equals(stream.subarray(0, at))).toBe(true)
      // What a sync point writes inline stays small: at most the step past a level-B record, which itself holds
      // less than one piece (whole pieces go to blobs).
      const inline = Buffer.from(rec.tail ?? '', 'base64').length
      expect(inline).toBeLessThan(1 << 20)
      if (rec.base !== undefined) expect(inline <= 64 << 10 || rec.pieces.length === 0).toBe(true)
    }
    await w.close()
    // Superseded ones removed: what is left is the newest record and the (at most two) it builds on.
    expect((await partialKeys()).length).toBeLessThanOrEqual(3)
    await w.write(BigInt(at), stream.subarray(at))
    await w.close()
    expect(await partialKeys()).toEqual([]) // the complete record supersedes them all
    const complete = (await findSegmentRecord(r.repo, SYS, name(0)))!
    expect(complete.partial).toBe(false)
    expect(complete.tail).toBeUndefined()
    expect((await readWalContent(r.repo, complete)).equals(stream.subarray(0, SEG))).toBe(true)
  })

  it('stores zeros it does not copy as zeros: a switched segment, zeros then WAL, a reused buffer, a partial after zeros', async () => {
    r = await freshFsRepo()
    const MiB = 1 << 20
    // With each segment's store done before the next segment completes, buffers go round in a known order: A, B,
    // A, B, A. Segment 0 (A) ends in zeros from 1.5 MiB on, as a switched segment does; segment 2 (A again) is all
    // zeros; segment 3 (B, stale WAL of segment 1 under its zeros) has WAL, then zeros from the middle of a piece;
    // the partial segment 4 (A: segment 0's WAL still in it) has zeros, WAL, and ends in zeros.
    const segments = [
      Buffer.concat([randomBytes(1.5 * MiB), Buffer.alloc(SEG - 1.5 * MiB)]),
      Buffer.concat([Buffer.alloc(0.25 * MiB), randomBytes(SEG - 0.25 * MiB)]),
      Buffer.alloc(SEG),
      Buffer.concat([randomBytes(1.5 * MiB), Buffer.alloc(SEG - 1.5 * MiB)]),
      Buffer.concat([Buffer.alloc(0.25 * MiB), randomBytes(8192), Buffer.alloc(3 * 8192)]),
    ]
    const w = new WalSegmentWriter(r.repo, { systemId: SYS, timeline: 1, segmentSizeBytes: SEG, startLsn: 0n, maxPendingSegments: 1 })
    // In messages of 8 KiB, as zeros and WAL come apart (a message of both is copied whole).
    for (const [i, bytes] of segments.entries()) {
      await feed(w, bytes, BigInt(i * SEG), 8192)
      await w.drain()
    }
    await w.storePartial()
    await w.close()
    for (const [i, want] of segments.entries()) {
      const rec = (await findSegmentRecord(r.repo, SYS, name(i)))!
      expect((await readWalContent(r.repo, rec)).equals(want), name(i)).toBe(true)
      // The same pieces as putWalPieces makes of the whole buffer: all-zero pieces are holes.
      const holes = rec.pieces.map(([blob]) => blob === null)
      expect(holes, name(i)).toEqual(Array.from({ length: rec.pieces.length }, (_, k) => want.subarray(k * MiB, (k + 1) * MiB).every((b) => b === 0)))
    }
  })

  it('a partial segment ending in whole pieces of zeros (the last, switched segment of a backup) stores them as holes, over stale bytes', async () => {
    r = await freshFsRepo()
    const MiB = 1 << 20
    // Buffers go round A, B, A: segment 2 is filled in A, which still holds segment 0's random bytes under the
    // zeros. Its partial ends in zeros from the middle of piece 0 over pieces 1 and 2 to the middle of piece 3; then
    // more WAL follows after the zeros and the segment completes.
    const w = new WalSegmentWriter(r.repo, { systemId: SYS, timeline: 1, segmentSizeBytes: SEG, startLsn: 0n, maxPendingSegments: 1 })
    // Each segment's store is done before the next segment completes (drain), so segment 1 completes into A again.
    for (const segno of [0, 1]) {
      await feed(w, randomBytes(SEG), BigInt(segno * SEG), 8192)
      await w.drain()
    }
    const partial = Buffer.concat([randomBytes(0.5 * MiB), Buffer.alloc(3 * MiB)])
    await feed(w, partial, BigInt(2 * SEG), 8192)
    await w.storePartial()
    const rec = (await findSegmentRecord(r.repo, SYS, name(2)))!
    expect(rec.partial).toBe(true)
    expect((await readWalContent(r.repo, rec)).equals(partial)).toBe(true)
    expect(rec.pieces.map(([blob, length]) => [blob === null, length])).toEqual([
      [false, MiB],
      [true, MiB],
      [true, MiB],
      [true, 0.5 * MiB],
    ])
    // The writer goes on: the zeros it did not write into its buffer are still zeros in the complete segment.
    const rest = Buffer.concat([Buffer.alloc(0.25 * MiB), randomBytes(SEG - 3.75 * MiB)])
    await feed(w, rest, BigInt(2 * SEG) + BigInt(partial.length), 8192)
    await w.close()
    const complete = (await findSegmentRecord(r.repo, SYS, name(2)))!
    expect(complete.partial).toBe(false)
    expect((await readWalContent(r.repo, complete)).equals(Buffer.concat([partial, rest]))).toBe(true)
  })

  it('refuses a gap and a start that is not a segment boundary', async () => {
    r = await freshFsRepo()
    expect(() => new WalSegmentWriter(r.repo, { systemId: SYS, timeline: 1, segmentSizeBytes: SEG, startLsn: 100n })).toThrow(AssertionError)
    const w = new WalSegmentWriter(r.repo, { systemId: SYS, timeline: 1, segmentSizeBytes: SEG, startLsn: 0n })
    await w.write(0n, Buffer.alloc(10, 1))
    await expect(w.write(20n, Buffer.alloc(10, 1))).rejects.toThrow(AssertionError)
  })

  it('reports a failed background store at the next call, and never moves durableLsn over it', async () => {
    r = await freshFsRepo()
    const w = new WalSegmentWriter(r.repo, { systemId: SYS, timeline: 1, segmentSizeBytes: SEG, startLsn: 0n })
    await r.repo.close() // every later write to it fails
    await w.write(0n, randomBytes(SEG)) // hands the segment to the pipeline
    await expect(w.drain()).rejects.toThrow()
    await expect(w.write(BigInt(SEG), Buffer.alloc(10))).rejects.toThrow()
    expect(w.durableLsn).toBe(0n)
  })
})
