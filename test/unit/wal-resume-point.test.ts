// Where `wal stream` resumes, decided from catalog keys (records written directly) and the slot's position.

import { afterEach, describe, expect, it } from 'vitest'
import { walFileName } from '../../src/pg/wal-names.js'
import { partialKey, segmentKey, type WalSegmentRecord, writeWalRecord } from '../../src/repo/wal-catalog.js'
import { findResumePoint } from '../../src/wal/resume-point.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'

const SEG = 16 << 20
const S = BigInt(SEG)
const SYS = 7000000000000000003n

describe('findResumePoint', () => {
  let r: TestRepo
  afterEach(async () => r?.close())

  async function store(tli: number, segno: number, validBytes = SEG): Promise<void> {
    const name = walFileName(tli, BigInt(segno), SEG)
    const rec: WalSegmentRecord = {
      name,
      timeline: tli,
      segno: String(segno),
      segmentSizeBytes: SEG,
      validBytes,
      partial: validBytes < SEG,
      crc32c: '00000000',
      pieces: [[null, validBytes]],
    }
    await writeWalRecord(r.repo, validBytes < SEG ? partialKey(SYS, name, validBytes) : segmentKey(SYS, name), rec)
  }
  const server = { timeline: 3, xlogPos: 40n * S + 1234n }

  it('starts where the slot stands, else where the server stands, when the catalog is empty', async () => {
    r = await freshFsRepo()
    expect(await findResumePoint(r.repo, { systemId: SYS, segmentSizeBytes: SEG, server, slot: { restartLsn: 7n * S + 99n, timeline: 2 } })).toEqual({
      startLsn: 7n * S,
      timeline: 2,
      source: 'slot',
    })
    expect(await findResumePoint(r.repo, { systemId: SYS, segmentSizeBytes: SEG, server })).toEqual({ startLsn: 40n * S, timeline: 3, source: 'server' })
  })

  it('continues after the newest complete segment, or at the start of the newest partial one, on its timeline', async () => {
    r = await freshFsRepo()
    for (const s of [3, 4, 5]) await store(1, s)
    expect(await findResumePoint(r.repo, { systemId: SYS, segmentSizeBytes: SEG, server })).toEqual({ startLsn: 6n * S, timeline: 1, source: 'catalog' })
    await store(1, 6, 5000)
    expect(await findResumePoint(r.repo, { systemId: SYS, segmentSizeBytes: SEG, server })).toEqual({ startLsn: 6n * S, timeline: 1, source: 'catalog' })
    // A promotion inside segment 6: timeline 2 holds the same segment number and wins (pg_receivewal's rule).
    await store(2, 6, 9000)
    expect(await findResumePoint(r.repo, { systemId: SYS, segmentSizeBytes: SEG, server })).toEqual({ startLsn: 6n * S, timeline: 2, source: 'catalog' })
    await store(2, 6)
    expect(await findResumePoint(r.repo, { systemId: SYS, segmentSizeBytes: SEG, server })).toEqual({ startLsn: 7n * S, timeline: 2, source: 'catalog' })
  })

  it('goes back to the first missing segment after the slot position (another writer stored later ones)', async () => {
    r = await freshFsRepo()
    for (const s of [3, 4, 5, 9, 10]) await store(1, s) // 9-10 from a backup's WAL stream while the streamer was away
    const slot = { restartLsn: 4n * S, timeline: 1 }
    expect(await findResumePoint(r.repo, { systemId: SYS, segmentSizeBytes: SEG, server, slot })).toEqual({
      startLsn: 6n * S,
      timeline: 1,
      source: 'catalog-gap',
    })
    for (const s of [6, 7, 8]) await store(1, s)
    expect(await findResumePoint(r.repo, { systemId: SYS, segmentSizeBytes: SEG, server, slot })).toEqual({ startLsn: 11n * S, timeline: 1, source: 'catalog' })
  })
})
