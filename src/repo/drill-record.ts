// Drill records: one immutable record per restore drill (`pgkeep drill`), keyed `drill` /
// `<systemId>/<drillId>.<passed|failed>`: which backup was restored to what target, how long restore, recovery and
// the checks took, and what each check found. The result is part of the key, so the newest drill and the newest
// good one are found from a listing, reading only those two records (docs/backup-format.md §8).

import { randomBytes } from 'node:crypto'
import type { Repository } from './repository.js'

export const DRILL_RECORD_KIND = 'drill'
export const DRILL_FORMAT_VERSION = 1

/** One check of a drill, as recorded. */
export interface DrillCheckRecord {
  /** restore, start, recovery, connections, catalog, tables, amcheck, user-checks, checksums. */
  name: string
  /** passed, failed, or skipped (not run: an earlier step failed, or not available or not asked for). */
  status: 'passed' | 'failed' | 'skipped'
  /** What it found, for a person. */
  detail: string
  durationMs: number | null
}

export interface DrillRecord {
  formatVersion: typeof DRILL_FORMAT_VERSION
  id: string
  systemId: string
  clusterName: string
  /** The backup restored (null when the restore failed before choosing one). */
  backupId: string | null
  backupType: 'full' | 'incremental' | null
  /** PostgreSQL version of the binaries the copy ran on. */
  serverVersion: string | null
  /** The recovery target, for a person: 'end of the archived WAL', 'immediate', 'time 2026-…', … */
  target: string
  startedAt: string
  finishedAt: string
  passed: boolean
  /** `<check>: <what went wrong>` for the first failed check; null when passed. */
  failure: string | null
  /** Restore and recovery time (the recovery time objective measured), checks apart; null where not reached. */
  timings: { restoreMs: number | null; recoveryMs: number | null; checksMs: number | null; rtoMs: number | null }
  /** Where recovery ended: the last WAL location replayed and the newest commit it replayed. */
  recoveredTo: { lsn: string | null; lastCommitAt: string | null }
  checks: DrillCheckRecord[]
}

/** A new drill id: UTC time to the millisecond, then random hex (`20261121T055301.123Z-3fa9c2`), sorting by time. */
export function newDrillId(now = new Date()): string {
  return `${now.toISOString().replace(/[-:]/g, '')}-${randomBytes(3).toString('hex')}`
}

const drillKey = (systemId: string, id: string, passed: boolean) => `${systemId}/${id}.${passed ? 'passed' : 'failed'}`
const KEY = /^(\d+)\/([0-9TZ.]+-[0-9a-f]+)\.(passed|failed)$/

/** Stores a drill record (never overwritten). */
export async function writeDrillRecord(repo: Repository, rec: DrillRecord, o: { signal?: AbortSignal } = {}): Promise<void> {
  await repo.writeRecord(DRILL_RECORD_KIND, drillKey(rec.systemId, rec.id, rec.passed), rec, { signal: o.signal })
}

/** The newest drill of a cluster and the newest that passed (null when there is none), reading only those two. */
export async function latestDrills(
  repo: Repository,
  systemId: string,
  o: { signal?: AbortSignal } = {},
): Promise<{ last: DrillRecord | null; lastPassed: DrillRecord | null; count: number }> {
  const keys: { key: string; id: string; passed: boolean }[] = []
  for await (const r of repo.listRecords(DRILL_RECORD_KIND, `${systemId}/`, o)) {
    const m = KEY.exec(r.key)
    if (m && m[1] === systemId) keys.push({ key: r.key, id: m[2]!, passed: m[3] === 'passed' })
  }
  keys.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
  const read = async (k: { key: string } | undefined) => (k ? (await repo.readRecord<DrillRecord>(DRILL_RECORD_KIND, k.key, o)).value : null)
  const newest = keys[0]
  const newestPassed = keys.find((k) => k.passed)
  const last = await read(newest)
  const lastPassed = newestPassed === newest ? last : await read(newestPassed)
  return { last, lastPassed, count: keys.length }
}
