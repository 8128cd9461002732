// What a retention policy keeps, decided without any I/O: from a cluster's backups (and its WAL catalog names and
// timeline ancestry) to one decision per backup and per WAL file, each with its reason. expire, `info` and tests
// call the same functions; retention-plan.ts feeds them from a repository. docs/lifecycle.md states the rules.

import { compareBackups } from './backup-record.js'
import { type Lsn, parseLsn } from '../pg/lsn.js'
import { segmentsPerXlogId } from '../pg/wal-names.js'
import { COUNT_RULES, parseDuration, type RetentionPolicy, subtractDuration } from './retention-policy.js'
import { parseWalKey } from './wal-catalog.js'

/** What the rules need of a backup record. */
export interface RetentionBackup {
  readonly id: string
  readonly startedAt: string
  readonly finishedAt: string
  readonly timeline: number
  readonly startLsn: string
  readonly endLsn: string
  readonly walSegmentSizeBytes: number
}

/** The rule behind a decision: a rule of the policy, or `unreadable` for a record whose times or LSNs do not parse. */
export type KeepRule = 'last' | 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly' | 'within' | 'unreadable'

/** Why a backup stays: one rule and its words. */
export interface KeepReason {
  readonly rule: KeepRule
  /** E.g. `keep-daily 7: the newest backup of 2026-01-05`. */
  readonly text: string
}

/** What the policy does with one backup. */
export interface BackupDecision {
  readonly id: string
  readonly keep: boolean
  /** Every rule that keeps it (empty when it goes). */
  readonly keptBy: readonly KeepReason[]
  /** When it goes: why each rule of the policy passes it by. */
  readonly why: readonly string[]
}

type Bucketer = (t: LocalTime) => string
const BUCKETS: Record<'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly', { unit: string; key: Bucketer }> = {
  hourly: { unit: 'hour', key: (t) => `${ymd(t)} ${pad(t.h)}:00` },
  daily: { unit: 'day', key: (t) => ymd(t) },
  weekly: { unit: 'week', key: isoWeek },
  monthly: { unit: 'month', key: (t) => `${t.y}-${pad(t.mo)}` },
  yearly: { unit: 'year', key: (t) => String(t.y) },
}

/**
 * Applies the backup rules of `policy` to a cluster's backups (any order): restic's semantics.
 * - Backups are ranked newest first by id (their start time to the second, then random digits), the order in which
 *   restore's `latest` is the first.
 * - keep-last N keeps the first N.
 * - keep-hourly/daily/weekly/monthly/yearly N: going from the newest, a backup is kept when its bucket (its start
 *   time's hour, day, ISO week, month or year in the policy's time zone) differs from the bucket of the last backup
 *   this rule kept, until N are kept. If fewer than N buckets have a backup, the oldest backup is kept too
 *   (restic 0.16+): the longest history the counts allow.
 * - keep-within D keeps every backup that started less than D before the newest one started (strictly).
 * - A record whose start time or LSNs do not parse is always kept ('unreadable'): `forget` removes it by id.
 */
export function decideBackups(backups: readonly RetentionBackup[], policy: RetentionPolicy): BackupDecision[] {
  const ranked = [...backups].sort((a, b) => compareBackups(b, a))
  const kept = new Map<string, KeepReason[]>(ranked.map((b) => [b.id, []]))
  const why = new Map<string, string[]>(ranked.map((b) => [b.id, []]))
  const readable = ranked.filter((b) => {
    if (isReadable(b)) return true
    kept.get(b.id)!.push({ rule: 'unreadable', text: 'its record has times or LSNs that do not parse: never expired by a policy' })
    return false
  })
  const tz = policy.timeZone ?? 'UTC'
  const at = new Map(readable.map((b) => [b.id, Date.parse(b.startedAt)]))

  if (policy.keepLast) {
    const n = policy.keepLast
    readable.forEach((b, i) => {
      if (i < n) kept.get(b.id)!.push({ rule: 'last', text: `keep-last ${n}: the ${ordinal(i + 1)} newest backup` })
      else why.get(b.id)!.push(`keep-last ${n}: it is the ${ordinal(i + 1)} newest`)
    })
  }
  for (const [field, name] of COUNT_RULES.slice(1)) {
    const n = policy[field]
    if (!n) continue
    const rule = field.slice(4).toLowerCase() as keyof typeof BUCKETS
    const { unit, key } = BUCKETS[rule]
    let left = n
    let last: string | undefined
    readable.forEach((b, i) => {
      const bucket = key(localTime(at.get(b.id)!, tz))
      const oldest = i === readable.length - 1
      if (left > 0 && bucket !== last) {
        kept.get(b.id)!.push({ rule, text: `${name} ${n}: the newest backup of ${unit} ${bucket}` })
        left--
        last = bucket
      } else if (left > 0 && oldest) {
        kept
          .get(b.id)!
          .push({ rule, text: `${name} ${n}: the oldest backup, kept because only ${units(n - left, unit)} ${n - left === 1 ? 'has' : 'have'} a backup` })
        left--
      } else {
        why
          .get(b.id)!
          .push(
            left === 0
              ? `${name} ${n}: ${units(n, `newer ${unit}`)} already ${n === 1 ? 'has' : 'have'} a backup kept`
              : `${name} ${n}: ${unit} ${bucket} has a newer backup`,
          )
      }
    })
  }
  if (policy.keepWithin !== undefined && readable.length > 0) {
    const d = parseDuration(policy.keepWithin, 'keep-within')
    const newest = at.get(readable[0]!.id)!
    const since = subtractDuration(newest, d)
    for (const b of readable) {
      if (at.get(b.id)! > since) kept.get(b.id)!.push({ rule: 'within', text: `keep-within ${d.text}: started within ${d.text} of the newest backup` })
      else why.get(b.id)!.push(`keep-within ${d.text}: started more than ${d.text} before the newest backup`)
    }
  }
  return ranked.map((b) => {
    const keptBy = kept.get(b.id)!
    return { id: b.id, keep: keptBy.length > 0, keptBy, why: keptBy.length > 0 ? [] : why.get(b.id)! }
  })
}

function isReadable(b: RetentionBackup): boolean {
  if (Number.isNaN(Date.parse(b.startedAt)) || Number.isNaN(Date.parse(b.finishedAt))) return false
  try {
    return parseLsn(b.startLsn) <= parseLsn(b.endLsn) && Number.isInteger(b.timeline) && b.timeline >= 1
  } catch {
    return false
  }
}

/** Why a WAL file stays or goes. */
export type WalReason =
  /** A kept backup needs it to restore (its start to end LSN on its timeline). */
  | 'backup'
  /** It lies in the point-in-time recovery window. */
  | 'window'
  /** A timeline history file of a timeline related to kept WAL or backups. */
  | 'history'
  /** No backup is kept, or the kept backups disagree on the WAL segment size: WAL is not expired at all. */
  | 'not-expired'
  /** Not a WAL catalog key this version knows: never touched. */
  | 'unknown'
  /** It goes: before the window, needed by no kept backup (or a history file of an unrelated timeline). */
  | 'expired'

/** What the policy does with one WAL catalog record. */
export interface WalDecision {
  /** The record key (`<systemId>/<name>`). */
  readonly key: string
  readonly keep: boolean
  readonly reason: WalReason
  /** For 'backup': the backup that needs it. */
  readonly backupId?: string
}

/** The WAL side of a plan. */
export interface WalRetention {
  /**
   * Where the point-in-time recovery window starts: the start LSN of `backupId`; WAL from there on is kept on every
   * timeline. Undefined when WAL is not expired (`note` says why).
   */
  readonly windowStart?: { readonly lsn: string; readonly backupId: string }
  readonly files: readonly WalDecision[]
  /** Why no WAL is expired, when none is. */
  readonly note?: string
}

export interface WalRetentionInput {
  /** The cluster's backups (all of them, as given to decideBackups). */
  readonly backups: readonly RetentionBackup[]
  readonly decisions: readonly BackupDecision[]
  /** Keys of the cluster's WAL catalog records (`<systemId>/<name>`). */
  readonly keys: readonly string[]
  /**
   * The ancestors of each timeline that has a stored history file (the timelines its history lists), or undefined
   * for one whose history file could not be read. Timeline 1 has none.
   */
  readonly ancestors: ReadonlyMap<number, readonly number[] | undefined>
  readonly keepWalWithin?: string
  /** The moment keep-wal-within counts back from (ms): when the snapshot was taken. */
  readonly now: number
}

/**
 * Decides every WAL record of a cluster:
 * - WAL a kept backup needs (segments from its start to its end LSN on its timeline) stays.
 * - The point-in-time recovery window: every segment (complete, partial, backup history file) on any timeline that
 *   ends after the window start stays. The window starts at the smallest start LSN among the kept backups; with
 *   keep-wal-within D, among the kept backups that finished after now − D and the newest kept backup that finished
 *   at or before it (so that any moment of the last D can be reached from a backup before it).
 * - A timeline history file stays while its timeline is an ancestor of, equal to, or a descendant of a timeline
 *   with kept WAL or a kept backup, and when it is the newest timeline's; all stay when any history file could not
 *   be read.
 * - With no backup kept, or kept backups that disagree on the segment size, no WAL is expired.
 */
export function decideWal(input: WalRetentionInput): WalRetention {
  const keepAll = (note: string): WalRetention => ({
    note,
    files: input.keys.map((key) => ({ key, keep: true, reason: parseWalKey(key) ? 'not-expired' : 'unknown' })),
  })
  const keptIds = new Set(input.decisions.filter((d) => d.keep).map((d) => d.id))
  const kept = input.backups.filter((b) => keptIds.has(b.id) && isReadable(b))
  if (kept.length === 0) return keepAll('no backup is kept, so no WAL is expired')
  if (kept.length !== keptIds.size) return keepAll('a kept backup has a record that does not parse, so no WAL is expired')
  const segSize = kept[0]!.walSegmentSizeBytes
  if (kept.some((b) => b.walSegmentSizeBytes !== segSize)) return keepAll('the kept backups disagree on the WAL segment size, so no WAL is expired')
  const perId = segmentsPerXlogId(segSize)
  const seg = BigInt(segSize)

  const base = windowBase(kept, input.keepWalWithin, input.now)
  const windowFirstSegno = parseLsn(base.startLsn) / seg
  const needs = kept.map((b) => ({ id: b.id, tli: b.timeline, first: parseLsn(b.startLsn) / seg, last: lastSegno(b, seg) }))

  const files: WalDecision[] = []
  const histories: string[] = []
  const liveTimelines = new Set(kept.map((b) => b.timeline))
  for (const key of input.keys) {
    const k = parseWalKey(key)
    if (!k) {
      files.push({ key, keep: true, reason: 'unknown' })
      continue
    }
    if (k.kind === 'history') {
      histories.push(key)
      continue
    }
    const segno = BigInt(`0x${k.name.slice(8, 16)}`) * perId + BigInt(`0x${k.name.slice(16, 24)}`)
    const need = needs.find((n) => n.tli === k.tli && n.first <= segno && segno <= n.last)
    if (segno >= windowFirstSegno) files.push({ key, keep: true, reason: 'window' })
    else if (need) files.push({ key, keep: true, reason: 'backup', backupId: need.id })
    else {
      files.push({ key, keep: false, reason: 'expired' })
      continue
    }
    liveTimelines.add(k.tli)
  }
  const unreadable = [...input.ancestors.values()].some((a) => a === undefined)
  const ancestorsOf = (tli: number): readonly number[] => input.ancestors.get(tli) ?? []
  const related = (tli: number) =>
    unreadable || [...liveTimelines].some((live) => live === tli || ancestorsOf(live).includes(tli) || ancestorsOf(tli).includes(live))
  // The newest timeline is where a running server most likely is: its history stays whatever else is kept.
  const newest = Math.max(0, ...histories.map((key) => parseWalKey(key)!.tli))
  for (const key of histories) {
    const tli = parseWalKey(key)!.tli
    files.push(tli === newest || related(tli) ? { key, keep: true, reason: 'history' } : { key, keep: false, reason: 'expired' })
  }
  return { windowStart: { lsn: base.startLsn, backupId: base.id }, files }
}

/** The kept backup whose start opens the point-in-time recovery window. */
function windowBase(kept: readonly RetentionBackup[], keepWalWithin: string | undefined, now: number): RetentionBackup {
  const byStart = (list: readonly RetentionBackup[]) => list.reduce((a, b) => (parseLsn(b.startLsn) < parseLsn(a.startLsn) ? b : a))
  if (keepWalWithin === undefined) return byStart(kept)
  const since = subtractDuration(now, parseDuration(keepWalWithin, 'keep-wal-within'))
  const finished = (b: RetentionBackup) => Date.parse(b.finishedAt)
  const before = kept.filter((b) => finished(b) <= since)
  // The newest backup that finished before the window opens: recovery to the window's first moment starts there.
  const anchor = before.length > 0 ? before.reduce((a, b) => (finished(b) > finished(a) || (finished(b) === finished(a) && b.id > a.id) ? b : a)) : undefined
  const inside = kept.filter((b) => finished(b) > since)
  return byStart(anchor ? [anchor, ...inside] : inside)
}

/** The last segment a backup needs: the one holding the byte before its end LSN. */
function lastSegno(b: RetentionBackup, seg: bigint): bigint {
  const end: Lsn = parseLsn(b.endLsn)
  const start: Lsn = parseLsn(b.startLsn)
  return (end > start ? end - 1n : start) / seg
}

/** Local wall-clock fields of a moment in a time zone. */
export interface LocalTime {
  readonly y: number
  readonly mo: number
  readonly d: number
  readonly h: number
}

const formatters = new Map<string, Intl.DateTimeFormat>()

/** The year, month, day and hour of `ms` in `tz` (`UTC`, a fixed offset `+02:00`, or an IANA name). */
export function localTime(ms: number, tz: string): LocalTime {
  const offset = /^([+-])(\d{2}):?(\d{2})$/.exec(tz)
  if (tz === 'UTC' || offset) {
    const shift = offset ? (offset[1] === '-' ? -1 : 1) * (Number(offset[2]) * 60 + Number(offset[3])) * 60_000 : 0
    const t = new Date(ms + shift)
    return { y: t.getUTCFullYear(), mo: t.getUTCMonth() + 1, d: t.getUTCDate(), h: t.getUTCHours() }
  }
  let f = formatters.get(tz)
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: tz, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric' })
    formatters.set(tz, f)
  }
  const parts = Object.fromEntries(f.formatToParts(new Date(ms)).map((p) => [p.type, p.value]))
  return { y: Number(parts.year), mo: Number(parts.month), d: Number(parts.day), h: Number(parts.hour) % 24 }
}

const pad = (n: number) => String(n).padStart(2, '0')
const ymd = (t: LocalTime) => `${t.y}-${pad(t.mo)}-${pad(t.d)}`

/** The ISO 8601 week of a local date: `2026-W01` (weeks start on Monday; week 1 holds the year's first Thursday). */
function isoWeek(t: LocalTime): string {
  const day = Date.UTC(t.y, t.mo - 1, t.d)
  const weekday = (new Date(day).getUTCDay() + 6) % 7 // Monday 0
  const thursday = new Date(day + (3 - weekday) * 86_400_000)
  const year = thursday.getUTCFullYear()
  const week = 1 + Math.floor((thursday.getTime() - Date.UTC(year, 0, 1)) / (7 * 86_400_000))
  return `${year}-W${pad(week)}`
}

/** `1 day`, `3 days`. */
const units = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'}`

function ordinal(n: number): string {
  const s = n % 100 >= 11 && n % 100 <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th')
  return `${n}${s}`
}

/** A run of removed or kept WAL files of one timeline, for people: first and last name and how many. */
export interface WalRun {
  readonly timeline: number
  readonly first: string
  readonly last: string
  readonly count: number
}

/** Groups WAL decisions into runs of consecutive keys per timeline with the same verdict (keys sorted). */
export function walRuns(files: readonly WalDecision[], keep: boolean): WalRun[] {
  const runs: WalRun[] = []
  const all = [...files].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
  let cur: { timeline: number; first: string; last: string; count: number } | undefined
  for (const f of all) {
    const k = parseWalKey(f.key)
    if (f.keep !== keep || !k) {
      if (cur) runs.push(cur)
      cur = undefined
      continue
    }
    const name = f.key.slice(f.key.indexOf('/') + 1)
    if (cur && cur.timeline === k.tli) {
      cur.last = name
      cur.count++
    } else {
      if (cur) runs.push(cur)
      cur = { timeline: k.tli, first: name, last: name, count: 1 }
    }
  }
  if (cur) runs.push(cur)
  return runs
}
