// The retention rule options `expire` and `policy set` share, and how a policy and its decisions print.

import { parseRetentionPolicy, type RetentionPolicy, type RetentionRuleText, type WalRun } from '../repo/index.js'

export const retentionOptions = {
  'keep-last': { type: 'string' },
  'keep-hourly': { type: 'string' },
  'keep-daily': { type: 'string' },
  'keep-weekly': { type: 'string' },
  'keep-monthly': { type: 'string' },
  'keep-yearly': { type: 'string' },
  'keep-within': { type: 'string' },
  'keep-wal-within': { type: 'string' },
  tz: { type: 'string' },
} as const

export const RETENTION_USAGE = `retention rules (a backup is kept when any rule keeps it):
  --keep-last N           the N newest backups
  --keep-hourly N         the newest backup of each of the last N hours that have one
  --keep-daily N          … of each of the last N days that have one
  --keep-weekly N         … of each of the last N ISO weeks (Monday to Sunday) that have one
  --keep-monthly N        … of each of the last N months that have one
  --keep-yearly N         … of each of the last N years that have one
                          (if fewer buckets have a backup than N, the oldest backup is kept too, as restic does)
  --keep-within DURATION  every backup started less than DURATION before the newest one (7d, 36h, 2w, 6mo, 1y6mo)
  --keep-wal-within DURATION
                          WAL for point-in-time recovery to any moment of the last DURATION (counted from now);
                          without it, WAL is kept from the oldest kept backup's start. WAL that kept backups need
                          is always kept
  --tz ZONE               time zone of the hour/day/week/month/year buckets: UTC (default), an IANA name
                          (Europe/Berlin) or an offset (+02:00); a backup's time is when it started`

/** The policy the rule options give, or undefined when none was given. */
export function policyFromArgs(values: RetentionRuleText): RetentionPolicy | undefined {
  const given = Object.keys(retentionOptions).some((k) => values[k as keyof RetentionRuleText] !== undefined)
  return given ? parseRetentionPolicy(values) : undefined
}

/** `timeline 1: 000000010000000000000001 .. 00000001000000000000000C (12 files)` per run. */
export function describeWalRuns(runs: readonly WalRun[]): string[] {
  return runs.map((r) => `timeline ${r.timeline}: ${r.first}${r.count > 1 ? ` .. ${r.last}` : ''} (${r.count} file${r.count === 1 ? '' : 's'})`)
}

/** `2026-11-21 05:53:01Z` from an ISO time. */
export const shortTime = (iso: string): string => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')
