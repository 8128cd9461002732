// Retention policies: which backups of a cluster to keep (restic's rules: the newest N, the newest in each of the
// last N hours, days, ISO weeks, months, years that have a backup, everything within a duration of the newest) and
// how much WAL to keep for point-in-time recovery. The type is what CLI flags, a stored policy record and a config
// file all fill; parsing and checking live here so that every way in accepts and refuses the same things.

import { UsageError } from '../errors.js'

/**
 * A retention policy. A backup is kept when any rule keeps it; a rule left out (or 0) keeps nothing. Durations are
 * text (`7d`, `36h`, `2w`, `1y6mo`, `90min`: see {@link parseDuration}) so that a policy reads the same in a
 * record, a config file and on a command line.
 */
export interface RetentionPolicy {
  /** The N newest backups. */
  keepLast?: number
  /** The newest backup of each of the last N hours that have a backup. */
  keepHourly?: number
  /** … of each of the last N days that have a backup. */
  keepDaily?: number
  /** … of each of the last N ISO weeks (Monday to Sunday) that have a backup. */
  keepWeekly?: number
  /** … of each of the last N months that have a backup. */
  keepMonthly?: number
  /** … of each of the last N years that have a backup. */
  keepYearly?: number
  /** Every backup that started less than this long before the newest backup started. */
  keepWithin?: string
  /**
   * WAL for point-in-time recovery: enough to reach any moment of this long before now (from the start of the newest
   * kept backup that finished before that moment). Without it, WAL is kept from the oldest kept backup's start. WAL
   * that a kept backup needs to restore is kept either way.
   */
  keepWalWithin?: string
  /** Time zone of the hour, day, week, month and year buckets: `UTC` (the default), an IANA name, or `+02:00`. */
  timeZone?: string
}

/** The count rules, in the order they are shown, with their option names. */
export const COUNT_RULES = [
  ['keepLast', 'keep-last'],
  ['keepHourly', 'keep-hourly'],
  ['keepDaily', 'keep-daily'],
  ['keepWeekly', 'keep-weekly'],
  ['keepMonthly', 'keep-monthly'],
  ['keepYearly', 'keep-yearly'],
] as const

/** A parsed duration: calendar years and months, then a fixed number of milliseconds. */
export interface Duration {
  readonly years: number
  readonly months: number
  readonly ms: number
  /** The text it was parsed from. */
  readonly text: string
}

const UNIT_MS: Record<string, number> = { w: 7 * 86_400_000, d: 86_400_000, h: 3_600_000, min: 60_000 }
const MAX_COUNT = 1_000_000

/**
 * Parses a duration: one or more of `<number><unit>` with units `y` (calendar years), `mo` (calendar months), `w`,
 * `d` (24 hours), `h`, `min`, e.g. `7d`, `36h`, `2w`, `1y6mo`. `m` alone is refused (minutes or months?).
 * @throws UsageError naming `what` (e.g. `keep-within`)
 */
export function parseDuration(text: string, what = 'duration'): Duration {
  const bad = (why: string) =>
    new UsageError(`invalid ${what} '${text}': ${why}`, {
      hint: 'give a duration such as 7d, 36h, 2w, 6mo or 1y6mo (units y, mo, w, d, h, min)',
    })
  if (typeof text !== 'string' || !/^(\d+(y|mo|w|d|h|min))+$/.test(text)) {
    throw bad(/\dm(?!in|o)/.test(String(text)) ? "'m' is ambiguous: write mo for months or min for minutes" : 'not a duration')
  }
  let years = 0
  let months = 0
  let ms = 0
  for (const [, n, unit] of text.matchAll(/(\d+)(y|mo|w|d|h|min)/g)) {
    const v = Number(n)
    if (!Number.isSafeInteger(v) || v > 100_000) throw bad('a number is too large')
    if (unit === 'y') years += v
    else if (unit === 'mo') months += v
    else ms += v * UNIT_MS[unit!]!
  }
  if (years === 0 && months === 0 && ms === 0) throw bad('it must be longer than zero')
  if (years * 12 + months > 12 * 10_000) throw bad('it is too long')
  return { years, months, ms, text }
}

/**
 * The moment `d` before `atMs`: calendar years and months first (in UTC; a day that does not exist in the target
 * month rolls over, as Go's AddDate does: 31 March − 1mo is 3 March), then the fixed part.
 */
export function subtractDuration(atMs: number, d: Duration): number {
  const t = new Date(atMs)
  if (d.years !== 0 || d.months !== 0) t.setUTCFullYear(t.getUTCFullYear() - d.years, t.getUTCMonth() - d.months)
  return t.getTime() - d.ms
}

/** Checks a time zone: `UTC`, an IANA name this runtime knows, or a fixed offset `+HH:MM` / `-HHMM`. */
export function checkTimeZone(tz: string): string {
  if (tz === 'UTC' || /^[+-]\d{2}:?\d{2}$/.test(tz)) {
    const m = /^([+-])(\d{2}):?(\d{2})$/.exec(tz)
    if (m && (Number(m[2]) > 23 || Number(m[3]) > 59)) throw badZone(tz)
    return tz
  }
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz })
  } catch {
    throw badZone(tz)
  }
  return tz
}

function badZone(tz: string): UsageError {
  return new UsageError(`unknown time zone '${tz}'`, { hint: 'give UTC, an IANA name such as Europe/Berlin, or a fixed offset such as +02:00' })
}

/** Text values of the rules, as flags or a config file give them (`keep-daily: '7'`). */
export type RetentionRuleText = Partial<
  Record<'keep-last' | 'keep-hourly' | 'keep-daily' | 'keep-weekly' | 'keep-monthly' | 'keep-yearly' | 'keep-within' | 'keep-wal-within' | 'tz', string>
>

/**
 * A policy from text values (CLI flags, a config file). Counts are whole numbers from 0 (the rule is left out) to
 * 1,000,000; durations as {@link parseDuration}; `tz` as {@link checkTimeZone}.
 * @throws UsageError naming the option
 */
export function parseRetentionPolicy(values: RetentionRuleText): RetentionPolicy {
  const policy: RetentionPolicy = {}
  for (const [field, name] of COUNT_RULES) {
    const text = values[name]
    if (text === undefined) continue
    const n = Number(text)
    if (!/^\d+$/.test(text) || n > MAX_COUNT) {
      throw new UsageError(`invalid ${name} '${text}'`, { hint: `give a whole number of backups from 0 to ${MAX_COUNT}` })
    }
    if (n > 0) policy[field] = n
  }
  if (values['keep-within'] !== undefined) policy.keepWithin = parseDuration(values['keep-within'], 'keep-within').text
  if (values['keep-wal-within'] !== undefined) policy.keepWalWithin = parseDuration(values['keep-wal-within'], 'keep-wal-within').text
  if (values.tz !== undefined) policy.timeZone = checkTimeZone(values.tz)
  return policy
}

/**
 * What is wrong with a policy that came from outside (a stored record, a config file, a library caller), or an
 * empty list. Same rules as {@link parseRetentionPolicy}; members it does not know are not allowed either, so a
 * newer pgkeep's rule is never silently ignored.
 */
export function retentionPolicyProblems(p: unknown): string[] {
  if (typeof p !== 'object' || p === null || Array.isArray(p)) return ['it is not an object']
  const problems: string[] = []
  const known = new Set<string>([...COUNT_RULES.map(([f]) => f), 'keepWithin', 'keepWalWithin', 'timeZone'])
  for (const k of Object.keys(p)) if (!known.has(k)) problems.push(`it has a rule '${k}' this pgkeep does not know`)
  const rec = p as Record<string, unknown>
  for (const [field, name] of COUNT_RULES) {
    const v = rec[field]
    if (v !== undefined && !(Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= MAX_COUNT))
      problems.push(`${name} ${JSON.stringify(v)} is not a count`)
  }
  const check = (field: string, fn: (v: string) => unknown) => {
    const v = rec[field]
    if (v === undefined) return
    try {
      if (typeof v !== 'string') throw new Error()
      fn(v)
    } catch {
      problems.push(`${field} ${JSON.stringify(v)} is malformed`)
    }
  }
  check('keepWithin', (v) => parseDuration(v))
  check('keepWalWithin', (v) => parseDuration(v))
  check('timeZone', (v) => checkTimeZone(v))
  return problems
}

/** True when the policy keeps no backup at all (no count rule above 0 and no keep-within). */
export function keepsNoBackup(p: RetentionPolicy): boolean {
  return COUNT_RULES.every(([f]) => !p[f]) && p.keepWithin === undefined
}

/** The policy as the options that give it: `keep-last 3, keep-daily 7, keep-within 2w (buckets in UTC)`. */
export function describePolicy(p: RetentionPolicy): string {
  const parts: string[] = []
  for (const [field, name] of COUNT_RULES) if (p[field]) parts.push(`${name} ${p[field]}`)
  if (p.keepWithin !== undefined) parts.push(`keep-within ${p.keepWithin}`)
  if (p.keepWalWithin !== undefined) parts.push(`keep-wal-within ${p.keepWalWithin}`)
  if (parts.length === 0) return 'no rules'
  const buckets = COUNT_RULES.slice(1).some(([f]) => p[f])
  return parts.join(', ') + (buckets ? ` (buckets in ${p.timeZone ?? 'UTC'})` : '')
}

/** The policy as command-line options, for hints: `--keep-last 3 --keep-daily 7`. */
export function policyAsOptions(p: RetentionPolicy): string[] {
  const out: string[] = []
  for (const [field, name] of COUNT_RULES) if (p[field]) out.push(`--${name}`, String(p[field]))
  if (p.keepWithin !== undefined) out.push('--keep-within', p.keepWithin)
  if (p.keepWalWithin !== undefined) out.push('--keep-wal-within', p.keepWalWithin)
  if (p.timeZone !== undefined) out.push('--tz', p.timeZone)
  return out
}
