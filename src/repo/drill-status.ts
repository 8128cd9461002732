// What the repository says about a cluster's restore drills, for monitoring (`pgkeep metrics`, the freshness check):
// the newest drill and the newest that passed, in the few fields monitoring shows. The records are found and read
// (defensively) by drill-record.ts.

import { latestDrills, type DrillRecord } from './drill-record.js'
import type { Repository } from './repository.js'

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

/** The newest drill of a cluster and the newest that passed, as monitoring shows them. */
export async function readDrillStatus(repo: Repository, systemId: string, o: { signal?: AbortSignal } = {}): Promise<DrillStatus> {
  const { last, lastPassed, count } = await latestDrills(repo, systemId, o)
  return { last: summaryOf(last), lastPassed: summaryOf(lastPassed), count }
}

function summaryOf(d: DrillRecord | null): DrillSummary | null {
  if (!d) return null
  return { id: d.id, passed: d.passed, finishedAt: new Date(Date.parse(d.finishedAt)).toISOString(), backupId: d.backupId, rtoMs: d.timings.rtoMs }
}
