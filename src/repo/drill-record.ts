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

/** Records read at most while looking for the newest good drill (older failures beyond it are not read). */
const MAX_READS = 20

/**
 * The newest drill of a cluster and the newest that passed (null when there is none). Keys sort by time and say
 * their result, so usually only those two records are read. Records are read defensively: one that cannot be read
 * or lacks the fields `info` and monitoring show is passed over (`verify` reports it), so a damaged or foreign record
 * never breaks `info` or the metrics.
 */
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
  let last: DrillRecord | null = null
  let lastPassed: DrillRecord | null = null
  let reads = 0
  for (const k of keys) {
    if (lastPassed || reads >= MAX_READS) break
    if (last && !k.passed) continue
    reads++
    const drill = await readSoundDrill(repo, k.key, k.passed, o)
    if (!drill) continue
    last ??= drill
    if (drill.passed) lastPassed = drill
  }
  return { last, lastPassed, count: keys.length }
}

/** A drill record whose shown fields have their types and whose result agrees with its key; null otherwise. */
async function readSoundDrill(repo: Repository, key: string, passed: boolean, o: { signal?: AbortSignal }): Promise<DrillRecord | null> {
  let value: unknown
  try {
    value = (await repo.readRecord(DRILL_RECORD_KIND, key, o)).value
  } catch (err) {
    if (o.signal?.aborted) throw err
    return null
  }
  if (typeof value !== 'object' || value === null) return null
  const v = value as Partial<Record<keyof DrillRecord, unknown>>
  const t = (typeof v.timings === 'object' && v.timings !== null ? v.timings : {}) as Record<string, unknown>
  const msOrNull = (x: unknown) => x === null || (typeof x === 'number' && Number.isFinite(x) && x >= 0)
  const sound =
    v.passed === passed &&
    typeof v.id === 'string' &&
    typeof v.target === 'string' &&
    typeof v.finishedAt === 'string' &&
    Number.isFinite(Date.parse(v.finishedAt)) &&
    (v.backupId === null || typeof v.backupId === 'string') &&
    (v.failure === null || typeof v.failure === 'string') &&
    ['restoreMs', 'recoveryMs', 'checksMs', 'rtoMs'].every((n) => msOrNull(t[n]))
  return sound ? (value as DrillRecord) : null
}
