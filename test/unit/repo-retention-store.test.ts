// Stored retention policies (src/repo/policy-store.ts, `pgkeep policy`) and the recoverable window
// (src/repo/wal-reach.ts) over a filesystem repository laid out by hand: the newest policy record of a scope is in
// force and older ones go, a cluster's own beats the default, a policy with a rule this version does not know is
// refused rather than applied in part; the window runs from the oldest backup's end to where WAL after the newest
// stops, with the holes WAL gaps leave.

import { afterEach, describe, expect, it } from 'vitest'
import { IntegrityError } from '../../src/errors.js'
import { walFileName } from '../../src/pg/wal-names.js'
import type { BackupRecord } from '../../src/repo/backup-record.js'
import { DEFAULT_POLICY_SCOPE, listStoredPolicies, POLICY_RECORD_KIND, policyInForce, readStoredPolicy, storePolicy } from '../../src/repo/policy-store.js'
import { recoverableWindow } from '../../src/repo/wal-reach.js'
import { segmentKey, writeWalRecord } from '../../src/repo/wal-catalog.js'
import { runMain } from '../harness/cli.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'

const SYS = '7000000000000000001'
const SEG = 16 << 20

let r: TestRepo | undefined
afterEach(async () => {
  await r?.close()
  r = undefined
})

describe('stored policies', () => {
  it('keeps the newest record of a scope in force, removes older ones, and prefers a cluster its own', async () => {
    r = await freshFsRepo()
    await storePolicy(r.repo, DEFAULT_POLICY_SCOPE, { keepLast: 3 })
    await storePolicy(r.repo, DEFAULT_POLICY_SCOPE, { keepLast: 5, keepDaily: 7 })
    const keys: string[] = []
    for await (const x of r.repo.listRecords(POLICY_RECORD_KIND)) keys.push(x.key)
    expect(keys).toHaveLength(1)
    expect((await readStoredPolicy(r.repo, DEFAULT_POLICY_SCOPE))!.policy).toEqual({ keepLast: 5, keepDaily: 7 })
    expect((await policyInForce(r.repo, SYS))!.scope).toBe(DEFAULT_POLICY_SCOPE)
    await storePolicy(r.repo, SYS, { keepWithin: '2w' })
    expect(await policyInForce(r.repo, SYS)).toMatchObject({ scope: SYS, policy: { keepWithin: '2w' } })
    expect((await listStoredPolicies(r.repo)).map((p) => p.scope)).toEqual([SYS, DEFAULT_POLICY_SCOPE])
  })

  it('refuses a stored policy with a rule it does not know, or a malformed one', async () => {
    r = await freshFsRepo()
    await r.repo.writeRecord(POLICY_RECORD_KIND, `${DEFAULT_POLICY_SCOPE}/20990101T000000.000Z-000000`, {
      formatVersion: 1,
      scope: DEFAULT_POLICY_SCOPE,
      setAt: '2099-01-01T00:00:00.000Z',
      policy: { keepLast: 3, keepEverySecondTuesday: 1 },
    })
    await expect(policyInForce(r.repo, SYS)).rejects.toThrow(IntegrityError)
    await expect(policyInForce(r.repo, SYS)).rejects.toThrow(/rule 'keepEverySecondTuesday' this pgkeep does not know/)
    await expect(storePolicy(r.repo, SYS, { keepLast: -1 })).rejects.toThrow(IntegrityError)
  })

  it('pgkeep policy set, show and clear', async () => {
    r = await freshFsRepo()
    const set = await runMain(['policy', 'set', '--repo', r.dir, '--keep-last', '7', '--keep-monthly', '6', '--tz', 'Europe/Berlin'])
    expect(set.code, set.stderr).toBe(0)
    expect(set.stdout).toBe('stored the default retention policy: keep-last 7, keep-monthly 6 (buckets in Europe/Berlin)\n')
    const nothing = await runMain(['policy', 'set', '--repo', r.dir, '--keep-wal-within', '3d'])
    expect(nothing.code).toBe(2)
    expect(nothing.stderr).toMatch(/a stored policy must keep backups, and keep-wal-within 3d keeps none/)
    expect((await runMain(['policy', 'set', '--repo', r.dir])).code).toBe(2)
    const show = JSON.parse((await runMain(['policy', 'show', '--repo', r.dir, '--json'])).stdout)
    expect(show.policies).toEqual([{ scope: 'default', policy: { keepLast: 7, keepMonthly: 6, timeZone: 'Europe/Berlin' }, setAt: expect.any(String) }])
    const clear = await runMain(['policy', 'clear', '--repo', r.dir, '--json'])
    expect(JSON.parse(clear.stdout)).toEqual({ scope: 'default', removedRecords: 1 })
    expect((await runMain(['policy', 'show', '--repo', r.dir])).stdout).toBe('no retention policy is stored\n')
  })
})

describe('the recoverable window', () => {
  const segment = (segno: number) =>
    writeWalRecord(r!.repo, segmentKey(SYS, walFileName(1, BigInt(segno), SEG)), {
      name: walFileName(1, BigInt(segno), SEG),
      timeline: 1,
      segno: String(segno),
      segmentSizeBytes: SEG,
      validBytes: SEG,
      partial: false,
      crc32c: '00000000',
      pieces: [],
    })
  const backup = (id: string, startLsn: string, endLsn: string) =>
    ({ id, systemId: SYS, timeline: 1, startLsn, endLsn, finishedAt: '2026-12-01T00:00:00.000Z', walSegmentSizeBytes: SEG }) as BackupRecord

  it('runs from the oldest backup to where WAL after the newest stops, with the holes gaps leave', async () => {
    r = await freshFsRepo()
    for (const s of [2, 3, 6, 7, 8, 10]) await segment(s)
    const b1 = backup('B1', '0/2000028', '0/2000100')
    const b2 = backup('B2', '0/6000028', '0/6000100')
    const w = (await recoverableWindow(r.repo, [b2, b1]))!
    expect(w.from).toEqual({ lsn: '0/2000100', time: b1.finishedAt, backupId: 'B1' })
    expect(w.to).toMatchObject({ lsn: '0/9000000', timeline: 1, backupId: 'B2' })
    expect(w.holes).toEqual([{ from: '0/4000000', to: '0/6000100' }])
    expect(await recoverableWindow(r.repo, [])).toBeUndefined()
    // A backup whose WAL reaches past the next one's end leaves no hole.
    const w2 = (await recoverableWindow(r.repo, [backup('B0', '0/2000028', '0/2000100'), backup('B1', '0/3000028', '0/3000100')]))!
    expect(w2.holes).toEqual([])
    expect(w2.to.lsn).toBe('0/4000000')
  })
})
