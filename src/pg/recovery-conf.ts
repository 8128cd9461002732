// Recovery settings for `postgresql.auto.conf`: restore_command, recovery_target_*, primary_conninfo, with the
// server's configuration-file quoting (src/backend/utils/misc/guc-file.l for reading;
// src/port/quotes.c escape_single_quotes_ascii as ALTER SYSTEM and pg_basebackup -R write; fe_utils/string_utils.c
// appendConnStrVal for conninfo values).

import { FormatError, UsageError } from '../errors.js'
import { type Lsn, formatLsn, parseLsn } from './lsn.js'

/** What recovery stops at: exactly one kind, as PostgreSQL allows. */
export type RecoveryTarget =
  | { type: 'immediate' }
  | { type: 'time'; time: Date | string }
  | { type: 'lsn'; lsn: Lsn | string }
  | { type: 'xid'; xid: bigint | number | string }
  | { type: 'name'; name: string }

/** recovery_target_action. */
export type RecoveryTargetAction = 'pause' | 'promote' | 'shutdown'

/** The settings pgkeep writes for a restore. Undefined fields are left out. */
export interface RecoverySettings {
  restoreCommand?: string
  target?: RecoveryTarget
  targetAction?: RecoveryTargetAction
  /** `latest` (the server default), `current`, or a timeline id. */
  targetTimeline?: 'latest' | 'current' | number
  /** recovery_target_inclusive; only meaningful with a time, LSN or xid target. */
  targetInclusive?: boolean
  primaryConninfo?: string
  primarySlotName?: string
}

/**
 * Quotes a value for a PostgreSQL configuration file: single quotes around it, `'` and `\` doubled (what
 * ALTER SYSTEM writes into postgresql.auto.conf). The config lexer cannot read a newline inside a value.
 * @throws UsageError when the value contains a newline, carriage return or NUL
 */
export function quoteConfigValue(value: string): string {
  if (/[\n\r\0]/.test(value)) {
    throw new UsageError('a configuration value cannot contain a newline or NUL', {
      hint: 'remove line breaks from the value',
    })
  }
  return `'${value.replace(/['\\]/g, (c) => c + c)}'`
}

/** One `name = 'value'` line, newline-terminated. */
export function formatConfigLine(name: string, value: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(name)) throw new UsageError(`invalid configuration parameter name '${name}'`)
  return `${name} = ${quoteConfigValue(value)}\n`
}

/**
 * Builds a libpq connection string from key/value pairs the way pg_basebackup -R does (appendConnStrVal): a value
 * made only of letters, digits, `_` and `.` is written bare, any other (or an empty one) in single quotes with `'`
 * and `\` backslash-escaped. Pairs are joined by a space, in the given order.
 */
export function formatConninfo(params: Iterable<readonly [string, string]> | Readonly<Record<string, string>>): string {
  const entries: Iterable<readonly [string, string]> = Symbol.iterator in params ? (params as Iterable<readonly [string, string]>) : Object.entries(params)
  const parts: string[] = []
  for (const [key, value] of entries) {
    if (!/^[a-z_]+$/.test(key)) throw new UsageError(`invalid connection parameter name '${key}'`)
    const bare = value !== '' && /^[A-Za-z0-9_.]+$/.test(value)
    parts.push(`${key}=${bare ? value : `'${value.replace(/['\\]/g, (c) => `\\${c}`)}'`}`)
  }
  return parts.join(' ')
}

/** A recovery target time as both pgkeep and the server read it. */
export interface RecoveryTargetTime {
  /** The instant, in milliseconds since the Unix epoch (fractions below a millisecond cut off). */
  readonly ms: number
  /** What goes into recovery_target_time: the same instant in UTC, the zone spelled out (`… 05:27:37.25+00`). */
  readonly text: string
}

/** `YYYY-MM-DD HH:MM[:SS[.ffffff]]` (or `T` between), then a zone. PostgreSQL keeps microseconds. */
const TIME_TEXT = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?(?:\s*(\S.*))?$/
const ZONE_TEXT = /^(?:(Z|UTC|GMT)|([+-])(\d{2})(?::?(\d{2}))?)$/i
const TIME_HINT = "give a date, a time and a time zone as UTC or an offset, like '2026-11-21 05:27:37+00' or '2026-11-21 06:27:37+01:00'"

const pad = (n: number, w = 2): string => String(n).padStart(w, '0')

/**
 * Reads a recovery target time. A zone is required: PostgreSQL reads a time without one in the server's `timezone`
 * setting, which pgkeep cannot know, so choosing a backup and checking the stored WAL would use another instant
 * than the server. The zone is UTC (`Z`, `UTC`, `GMT`) or a numeric offset (`+01`, `+0100`, `+01:00`); zone names
 * are refused, their offsets depend on the date and on the server's time zone database. The date and time must
 * exist (no 2026-02-31, no 24:00, no leap second). The text written for the server is the same instant in UTC with
 * `+00`, so that pgkeep and the server agree whatever the server's settings.
 * @throws UsageError naming what is wrong, with the accepted form in the hint
 */
export function parseRecoveryTargetTime(time: Date | string): RecoveryTargetTime {
  if (time instanceof Date) {
    const ms = time.getTime()
    if (Number.isNaN(ms)) throw new UsageError('invalid recovery target time (an invalid Date)', { hint: TIME_HINT })
    const milli = time.getUTCMilliseconds()
    return { ms, text: utcText(time, milli === 0 ? '' : pad(milli, 3)) }
  }
  const given = String(time).trim()
  const bad = (why: string): UsageError => new UsageError(`invalid recovery target time '${given}': ${why}`, { hint: TIME_HINT })
  const m = TIME_TEXT.exec(given)
  if (m === null) throw bad('expected YYYY-MM-DD HH:MM[:SS[.ffffff]] and a time zone')
  const [year, month, day, hour, minute] = [m[1], m[2], m[3], m[4], m[5]].map(Number) as [number, number, number, number, number]
  const second = m[6] === undefined ? 0 : Number(m[6])
  const fraction = m[7] ?? ''
  if (m[8] === undefined) {
    throw new UsageError(`recovery target time '${given}' has no time zone`, {
      hint: `PostgreSQL would read it in the server's timezone setting, which pgkeep cannot know; ${TIME_HINT}`,
    })
  }
  const zone = ZONE_TEXT.exec(m[8])
  if (zone === null) throw bad(`time zone '${m[8]}' is not UTC or a numeric offset (zone names are not accepted)`)
  if (year < 1) throw bad('there is no year 0')
  if (month < 1 || month > 12) throw bad(`there is no month ${month}`)
  const daysInMonth = new Date(Date.UTC(2000, month, 0)).getUTCDate() - (month === 2 && !isLeapYear(year) ? 1 : 0)
  if (day < 1 || day > daysInMonth) throw bad(`${m[1]}-${m[2]} has no day ${day}`)
  if (hour > 23 || minute > 59 || second > 59) throw bad(`${m[4]}:${m[5]}${m[6] === undefined ? '' : `:${m[6]}`} is not a time of day`)
  let offsetMinutes = 0
  if (zone[1] === undefined) {
    const hours = Number(zone[3])
    const minutes = zone[4] === undefined ? 0 : Number(zone[4])
    if (hours > 15 || minutes > 59) throw bad(`offset ${m[8]} is out of range`)
    offsetMinutes = (zone[2] === '-' ? -1 : 1) * (hours * 60 + minutes)
  }
  const at = new Date(0)
  at.setUTCFullYear(year, month - 1, day)
  at.setUTCHours(hour, minute, second, 0)
  at.setTime(at.getTime() - offsetMinutes * 60_000)
  const ms = at.getTime() + (fraction === '' ? 0 : Math.floor(Number(`0.${fraction}`) * 1000))
  return { ms, text: utcText(at, fraction) }
}

const isLeapYear = (y: number): boolean => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0

/** `YYYY-MM-DD HH:MM:SS[.fraction]+00` of a Date's whole seconds in UTC. */
function utcText(d: Date, fraction: string): string {
  return (
    `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}${fraction === '' ? '' : `.${fraction}`}+00`
  )
}

function formatTargetLsn(lsn: Lsn | string): string {
  try {
    return formatLsn(typeof lsn === 'string' ? parseLsn(lsn) : lsn)
  } catch (e) {
    throw new UsageError(`invalid recovery target LSN '${String(lsn)}'`, {
      cause: e,
      hint: "an LSN looks like '0/3000028'",
    })
  }
}

function formatTargetXid(xid: bigint | number | string): string {
  const text = String(xid)
  // recovery_target_xid takes a 32-bit xid or an epoch-qualified 64-bit one (PostgreSQL parses it with strtou64).
  if (!/^[0-9]+$/.test(text) || BigInt(text) > 0xffff_ffff_ffff_ffffn || BigInt(text) < 3n) {
    throw new UsageError(`invalid recovery target xid '${text}'`, { hint: 'a transaction id is a decimal integer ≥ 3' })
  }
  return text
}

/**
 * Formats the recovery settings as postgresql.auto.conf lines, in a fixed order: restore_command,
 * recovery_target_timeline, the target, recovery_target_inclusive, recovery_target_action, primary_conninfo,
 * primary_slot_name.
 * @throws UsageError on an invalid value (bad LSN, xid, time, action, timeline, slot name, too long target name),
 *   or an option that needs a target without one
 */
export function formatRecoverySettings(s: RecoverySettings): string {
  const lines: string[] = []
  if (s.restoreCommand !== undefined) {
    if (s.restoreCommand.trim() === '') throw new UsageError('restore_command is empty')
    lines.push(formatConfigLine('restore_command', s.restoreCommand))
  }
  if (s.targetTimeline !== undefined) {
    const t = s.targetTimeline
    if (t !== 'latest' && t !== 'current' && !(Number.isInteger(t) && t >= 1 && t <= 0xffff_ffff)) {
      throw new UsageError(`invalid recovery target timeline '${String(t)}'`, {
        hint: "use 'latest', 'current' or a timeline id",
      })
    }
    lines.push(formatConfigLine('recovery_target_timeline', String(t)))
  }
  const target = s.target
  if (target !== undefined) {
    switch (target.type) {
      case 'immediate':
        lines.push(formatConfigLine('recovery_target', 'immediate'))
        break
      case 'time':
        lines.push(formatConfigLine('recovery_target_time', parseRecoveryTargetTime(target.time).text))
        break
      case 'lsn':
        lines.push(formatConfigLine('recovery_target_lsn', formatTargetLsn(target.lsn)))
        break
      case 'xid':
        lines.push(formatConfigLine('recovery_target_xid', formatTargetXid(target.xid)))
        break
      case 'name':
        // MAXFNAMELEN - 1: restore point names are at most 63 bytes.
        if (target.name === '' || Buffer.byteLength(target.name, 'utf8') > 63) {
          throw new UsageError(`invalid recovery target name '${target.name}'`, {
            hint: 'a restore point name has 1 to 63 bytes',
          })
        }
        lines.push(formatConfigLine('recovery_target_name', target.name))
        break
      default:
        throw new UsageError(`unknown recovery target type '${String((target as { type: unknown }).type)}'`)
    }
  }
  if (s.targetInclusive !== undefined) {
    if (target === undefined || !['time', 'lsn', 'xid'].includes(target.type)) {
      throw new UsageError('recovery_target_inclusive applies only to a time, LSN or xid target')
    }
    lines.push(formatConfigLine('recovery_target_inclusive', s.targetInclusive ? 'on' : 'off'))
  }
  if (s.targetAction !== undefined) {
    if (!['pause', 'promote', 'shutdown'].includes(s.targetAction)) {
      throw new UsageError(`invalid recovery target action '${String(s.targetAction)}'`, {
        hint: "use 'pause', 'promote' or 'shutdown'",
      })
    }
    if (target === undefined) throw new UsageError('a recovery target action needs a recovery target')
    lines.push(formatConfigLine('recovery_target_action', s.targetAction))
  }
  if (s.primaryConninfo !== undefined) lines.push(formatConfigLine('primary_conninfo', s.primaryConninfo))
  if (s.primarySlotName !== undefined) {
    if (!/^[a-z0-9_]{1,63}$/.test(s.primarySlotName)) {
      throw new UsageError(`invalid replication slot name '${s.primarySlotName}'`, {
        hint: 'slot names use only lower-case letters, digits and underscores, at most 63',
      })
    }
    lines.push(formatConfigLine('primary_slot_name', s.primarySlotName))
  }
  return lines.join('')
}

/**
 * Reads a quoted configuration value back (the inverse of {@link quoteConfigValue}, following guc-file.l
 * DeescapeQuotedString: `''` and `\\` become one character; `\b \f \n \r \t` and octal escapes are decoded).
 * @throws FormatError when the text is not a single-quoted value
 */
export function unquoteConfigValue(quoted: string): string {
  if (!/^'(?:[^'\\\n]|\\.|'')*'$/s.test(quoted)) throw new FormatError(`not a quoted configuration value: ${quoted}`)
  const body = quoted.slice(1, -1)
  let out = ''
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!
    if (c === "'") {
      out += "'"
      i++
    } else if (c === '\\') {
      const n = body[++i]!
      const oct = /^[0-7]{1,3}/.exec(body.slice(i))
      if (oct !== null) {
        out += String.fromCharCode(Number.parseInt(oct[0], 8))
        i += oct[0].length - 1
      } else out += ({ b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' } as Record<string, string>)[n] ?? n
    } else out += c
  }
  return out
}
