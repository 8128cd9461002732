// What the repository says about a cluster's restore drills, for monitoring: the newest drill and the newest one
// that passed. Drill records (`records/drill/<systemId>/<drill id>[.passed|.failed]`, written by `pgkeep drill`,
// docs/backup-format.md) are read defensively here: only the fields monitoring needs, each checked, and a record
// that does not have them is passed over rather than trusted, so a newer or foreign record cannot break metrics.

import type { Repository } from './repository.js'

const DRILL_KIND = 'drill'
/** Records read at most while looking for the newest good drill (older failures beyond it are not read). */
const MAX_READS = 20

/** A drill as monitoring sees it. */
export interface DrillSummary {
  readonly id: string
  readonly passed: boolean
  /** When the drill ended (ISO 8601). */
  readonly finishedAt: string
  /** The backup it restored, when the record names it. */
  readonly backupId: string | null
  /** Restore and recovery time measured (the recovery time objective), when the record has it. */
  readonly rtoMs: number | null
}

/** A cluster's drills: the newest, the newest that passed, and how many are recorded. */
export interface DrillStatus {
  readonly last: DrillSummary | null
  readonly lastPassed: DrillSummary | null
  readonly count: number
}

/**
 * The newest drill of a cluster and the newest that passed. Keys sort by time (drill ids start with the UTC time);
 * a key that says its result (`.passed`, `.failed`) is skipped without reading when it cannot be the answer.
 */
export async function readDrillStatus(repo: Repository, systemId: string, o: { signal?: AbortSignal } = {}): Promise<DrillStatus> {
  const keys: string[] = []
  for await (const r of repo.listRecords(DRILL_KIND, `${systemId}/`, o)) keys.push(r.key)
  keys.sort().reverse()
  let last: DrillSummary | null = null
  let lastPassed: DrillSummary | null = null
  let reads = 0
  for (const key of keys) {
    if (lastPassed || reads >= MAX_READS) break
    const said = /\.(passed|failed)$/.exec(key)?.[1]
    if (last && said === 'failed') continue
    reads++
    const drill = await readSummary(repo, key, o)
    if (!drill) continue
    last ??= drill
    if (drill.passed) lastPassed = drill
  }
  return { last, lastPassed, count: keys.length }
}

async function readSummary(repo: Repository, key: string, o: { signal?: AbortSignal }): Promise<DrillSummary | null> {
  let value: unknown
  try {
    value = (await repo.readRecord(DRILL_KIND, key, o)).value
  } catch {
    return null // unreadable or damaged: `verify` reports it; monitoring goes on with the others
  }
  if (typeof value !== 'object' || value === null) return null
  const v = value as Record<string, unknown>
  const passed = typeof v.passed === 'boolean' ? v.passed : v.result === 'passed' ? true : v.result === 'failed' ? false : undefined
  const finishedAt = typeof v.finishedAt === 'string' && Number.isFinite(Date.parse(v.finishedAt)) ? v.finishedAt : undefined
  if (passed === undefined || finishedAt === undefined) return null
  const timings = typeof v.timings === 'object' && v.timings !== null ? (v.timings as Record<string, unknown>) : {}
  const rto = timings.rtoMs ?? v.rtoMs
  return {
    id: typeof v.id === 'string' ? v.id : key.slice(key.indexOf('/') + 1).replace(/\.(passed|failed)$/, ''),
    passed,
    finishedAt: new Date(Date.parse(finishedAt)).toISOString(),
    backupId: typeof v.backupId === 'string' ? v.backupId : null,
    rtoMs: typeof rto === 'number' && Number.isFinite(rto) && rto >= 0 ? rto : null,
  }
}
