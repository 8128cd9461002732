// How far the stored WAL takes recovery from a backup (src/restore/target-reach.ts), over WAL catalogs laid out by
// hand in a filesystem repository: gaps, partial segments, timeline switches, the timeline 'latest' picks, times
// of storage, and which targets each case refuses. The integration test restore-targets.test.ts does the same
// against WAL a real server wrote.

import { utimes } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { UsageError } from '../../src/errors.js'
import { crc32c, crc32cHexLE } from '../../src/pg/crc32c.js'
import { formatLsn } from '../../src/pg/lsn.js'
import { historyFileName, walFileName } from '../../src/pg/wal-names.js'
import type { BackupRecord } from '../../src/repo/backup-record.js'
import { recordKey } from '../../src/repo/layout.js'
import { historyKey, partialKey, segmentKey, WAL_RECORD_KIND, writeWalRecord } from '../../src/repo/wal-catalog.js'
import { reachableWal } from '../../src/repo/wal-reach.js'
import { checkTargetReachable } from '../../src/restore/target-reach.js'
import type { RecoveryOptions } from '../../src/restore/recovery-config.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'

const SYS = '7000000000000000001'
const SEG = 16 << 20
const T0 = Date.UTC(2026, 10, 21, 5, 0, 0)

let r: TestRepo | undefined
afterEach(async () => {
  await r?.close()
  r = undefined
})

/** Stores segment `segno` of timeline `tli` (partial when `valid` is given), as stored at `storedAt` (ms). */
async function segment(tli: number, segno: number, o: { valid?: number; storedAt?: number } = {}): Promise<void> {
  const name = walFileName(tli, BigInt(segno), SEG)
  const partial = o.valid !== undefined
  const key = partial ? partialKey(SYS, name, o.valid!) : segmentKey(SYS, name)
  await writeWalRecord(r!.repo, key, {
    name,
    timeline: tli,
    segno: String(segno),
    segmentSizeBytes: SEG,
    validBytes: o.valid ?? SEG,
    partial,
    crc32c: '00000000',
    pieces: [],
  })
  const at = new Date(o.storedAt ?? T0)
  await utimes(join(r!.dir, recordKey(WAL_RECORD_KIND, key)), at, at)
}

/** Stores the history file of timeline `tli`. */
async function history(tli: number, text: string): Promise<void> {
  const bytes = Buffer.from(text)
  const { id } = await r!.repo.putBlob('meta', bytes)
  await r!.repo.flush()
  const name = historyFileName(tli)
  await writeWalRecord(r!.repo, historyKey(SYS, tli), {
    name,
    timeline: tli,
    sizeBytes: bytes.length,
    crc32c: crc32cHexLE(crc32c(bytes)),
    pieces: [[id, bytes.length]],
  } as never)
}

const backupAt = (endLsn: string, timeline = 1, finishedAt = T0 - 60_000) =>
  ({
    id: 'B1',
    systemId: SYS,
    timeline,
    startLsn: '0/2000028',
    endLsn,
    finishedAt: new Date(finishedAt).toISOString(),
    walSegmentSizeBytes: SEG,
  }) as BackupRecord

const recovery = (target: RecoveryOptions['target'], more: Partial<RecoveryOptions> = {}): RecoveryOptions => ({
  mode: 'recovery',
  restoreCommand: 'x',
  target,
  ...more,
})

async function refusal(backup: BackupRecord, rec: RecoveryOptions): Promise<UsageError> {
  const err = await checkTargetReachable(r!.repo, backup, rec).then(
    () => undefined,
    (e: unknown) => e,
  )
  if (!(err instanceof UsageError)) throw new Error(`not refused with a UsageError: ${String(err)}`)
  return err
}

describe('the WAL a backup can reach', () => {
  it('stops at a partial segment before a gap, and says where WAL resumes', async () => {
    r = await freshFsRepo()
    for (const s of [1, 2, 3]) await segment(1, s)
    await segment(1, 4, { valid: 0x10_0000 })
    for (const s of [6, 7]) await segment(1, s)
    const b = backupAt('0/2000100')
    const reach = await reachableWal(r.repo, b, undefined)
    expect({ ...reach, from: formatLsn(reach.from), to: formatLsn(reach.to), resumesAt: formatLsn(reach.resumesAt!) }).toMatchObject({
      from: '0/2000100',
      to: '0/4100000',
      timeline: 1,
      timelines: [1],
      resumesAt: '0/6000000',
    })

    await expect(checkTargetReachable(r.repo, b, recovery({ type: 'lsn', lsn: '0/4100000' }))).resolves.toBeUndefined()
    await expect(checkTargetReachable(r.repo, b, recovery({ type: 'lsn', lsn: '0/2000100' }))).resolves.toBeUndefined()
    for (const lsn of ['0/4100001', '0/5000000', '0/6800000']) {
      const err = await refusal(b, recovery({ type: 'lsn', lsn }))
      expect(err.message).toBe(
        `recovery target LSN ${lsn.toUpperCase()} cannot be reached from backup B1: the repository's WAL takes recovery from 0/2000100..0/4100000 (timeline 1); a gap follows on timeline 1, up to 0/6000000`,
      )
      expect(err.hint).toMatch(/a backup taken after the gap/)
    }
    const before = await refusal(b, recovery({ type: 'lsn', lsn: '0/2000000' }))
    expect(before.message).toMatch(/^recovery target LSN 0\/2000000 is before the end of backup B1 \(0\/2000100\)/)
    expect(before.hint).toMatch(/earlier backup with --backup/)
  })

  it('refuses targets past the end of the stored WAL, with a hint to wait for the newest WAL', async () => {
    r = await freshFsRepo()
    for (const s of [2, 3]) await segment(1, s)
    const b = backupAt('0/2000100')
    const err = await refusal(b, recovery({ type: 'lsn', lsn: '0/4000001' }))
    expect(err.message).toMatch(/from 0\/2000100\.\.0\/4000000 \(timeline 1\)$/)
    expect(err.hint).toMatch(/pg_switch_wal\(\)/)
  })

  it("follows a timeline switch to the newest timeline whose history is stored, or stays with 'current'", async () => {
    r = await freshFsRepo()
    for (const s of [1, 2, 3, 4]) await segment(1, s)
    await segment(1, 5, { valid: 0x80_0000 })
    await segment(2, 5)
    await segment(2, 6, { valid: 0x1_0000 })
    await history(2, '1\t0/5800000\tno recovery target specified\n')
    // Timeline 4's history is stored, 3's is not: the server's probe stops at 2.
    await history(4, '1\t0/5800000\tno recovery target specified\n\n2\t0/6000000\tno recovery target specified\n\n3\t0/6000000\tx\n')
    const b = backupAt('0/2000100')
    const latest = await reachableWal(r.repo, b, 'latest')
    expect([formatLsn(latest.to), latest.timeline, latest.timelines]).toEqual(['0/6010000', 2, [1, 2]])
    expect(await reachableWal(r.repo, b, undefined)).toEqual(latest)
    const current = await reachableWal(r.repo, b, 'current')
    expect([formatLsn(current.to), current.timeline, current.timelines]).toEqual(['0/5800000', 1, [1]])
    expect(formatLsn((await reachableWal(r.repo, b, 2)).to)).toBe('0/6010000')
    const err = await refusal(b, recovery({ type: 'lsn', lsn: '0/6010001' }))
    expect(err.message).toMatch(/from 0\/2000100\.\.0\/6010000 \(timeline 1 → 2\)$/)
    await expect(checkTargetReachable(r.repo, b, recovery({ type: 'lsn', lsn: '0/6000000' }, { targetTimeline: 'current' }))).rejects.toThrow(
      /0\/2000100\.\.0\/5800000 \(timeline 1\)/,
    )
  })

  it('stops at a switch whose first segment on the new timeline is missing', async () => {
    r = await freshFsRepo()
    for (const s of [2, 3, 4]) await segment(1, s)
    await segment(1, 5, { valid: 0x80_0000 })
    await segment(2, 6)
    await history(2, '1\t0/5800000\tno recovery target specified\n')
    const reach = await reachableWal(r.repo, backupAt('0/2000100'), 'latest')
    expect([formatLsn(reach.to), reach.timeline, reach.timelines, formatLsn(reach.resumesAt!)]).toEqual(['0/5800000', 2, [1, 2], '0/6000000'])
  })

  it('refuses target timelines that do not lead on from the backup', async () => {
    r = await freshFsRepo()
    for (const s of [2, 3]) await segment(1, s)
    await history(2, '1\t0/2000000\tbranched early\n')
    const b = backupAt('0/2000100')
    await expect(reachableWal(r.repo, b, 2)).rejects.toThrow(
      /recovery target timeline 2 branched off timeline 1 at 0\/2000000, before the end of backup B1 \(0\/2000100\)/,
    )
    await expect(reachableWal(r.repo, b, 5)).rejects.toThrow(/recovery target timeline 5 has no history file in the repository/)
    await expect(reachableWal(r.repo, backupAt('0/2000100', 3), 2)).rejects.toThrow(/timeline 2 does not descend from timeline 3/)
    await expect(checkTargetReachable(r.repo, b, recovery({ type: 'lsn', lsn: '0/3000000' }, { targetTimeline: 2 }))).rejects.toThrow(UsageError)
  })

  it('refuses a time before the backup finished or after the newest stored WAL was stored', async () => {
    r = await freshFsRepo()
    await segment(1, 2, { storedAt: T0 - 30_000 })
    await segment(1, 3, { storedAt: T0 })
    await segment(1, 5, { storedAt: T0 + 3_600_000 }) // after a gap: recovery never gets there
    const b = backupAt('0/2000100', 1, T0 - 60_000)
    const at = (ms: number) => recovery({ type: 'time', time: new Date(ms) })
    await expect(checkTargetReachable(r.repo, b, at(T0 - 60_000))).resolves.toBeUndefined()
    await expect(checkTargetReachable(r.repo, b, at(T0))).resolves.toBeUndefined()
    // A second of slack: object stores keep whole seconds.
    await expect(checkTargetReachable(r.repo, b, at(T0 + 1000))).resolves.toBeUndefined()
    const early = await refusal(b, at(T0 - 61_000))
    expect(early.message).toBe(
      'recovery target time 2026-11-21 04:58:59+00 is before backup B1 finished (2026-11-21T04:59:00.000Z): recovery cannot stop before the backup is consistent',
    )
    const late = await refusal(b, at(T0 + 1001))
    expect(late.message).toMatch(
      /^recovery target time 2026-11-21 05:00:01\.001\+00 cannot be reached from backup B1: .*0\/2000100\.\.0\/4000000 \(timeline 1\); a gap follows on timeline 1, up to 0\/5000000; the newest of that WAL was stored at 2026-11-21T05:00:00\.000Z/,
    )
    // A standby may get later WAL from its primary: only "before the backup's end" applies.
    await expect(checkTargetReachable(r.repo, b, { ...at(T0 + 1001), mode: 'standby' })).resolves.toBeUndefined()
    await expect(checkTargetReachable(r.repo, b, { ...at(T0 - 61_000), mode: 'standby' })).rejects.toThrow(/before backup B1 finished/)
  })

  it('refuses an xid or restore point when no WAL after the backup is stored, and checks nothing for no target or immediate', async () => {
    r = await freshFsRepo()
    await segment(1, 2, { valid: 0x10_0000 })
    const b = backupAt('0/2100000')
    const xid = await refusal(b, recovery({ type: 'xid', xid: 1234 }))
    expect(xid.message).toMatch(
      /^recovery target transaction 1234 cannot be reached from backup B1: .*0\/2100000\.\.0\/2100000 .*no WAL after the end of the backup is stored/,
    )
    await expect(checkTargetReachable(r.repo, b, recovery({ type: 'name', name: 'before_drop' }))).rejects.toThrow(
      /restore point 'before_drop' cannot be reached/,
    )
    await expect(checkTargetReachable(r.repo, b, recovery(undefined))).resolves.toBeUndefined()
    await expect(checkTargetReachable(r.repo, b, recovery({ type: 'immediate' }))).resolves.toBeUndefined()
    await segment(1, 2)
    await expect(checkTargetReachable(r.repo, b, recovery({ type: 'xid', xid: 1234 }))).resolves.toBeUndefined()
  })
})
