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
  const entries: Iterable<readonly [string, string]> =
    Symbol.iterator in params ? (params as Iterable<readonly [string, string]>) : Object.entries(params)
  const parts: string[] = []
  for (const [key, value] of entries) {
    if (!/^[a-z_]+$/.test(key)) throw new UsageError(`invalid connection parameter name '${key}'`)
    const bare = value !== '' && /^[A-Za-z0-9_.]+$/.test(value)
    parts.push(`${key}=${bare ? value : `'${value.replace(/['\\]/g, (c) => `\\${c}`)}'`}`)
  }
  return parts.join(' ')
}

const TIME_TEXT =
  /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?)?(?:\s*(?:Z|[+-]\d{2}(?::?\d{2})?|[A-Za-z][A-Za-z0-9_/+-]*))?$/

function formatTargetTime(time: Date | string): string {
  if (time instanceof Date) {
    if (Number.isNaN(time.getTime())) throw new UsageError('invalid recovery target time')
    const p = (n: number, w = 2): string => String(n).padStart(w, '0')
    const ms = time.getUTCMilliseconds()
    return (
      `${p(time.getUTCFullYear(), 4)}-${p(time.getUTCMonth() + 1)}-${p(time.getUTCDate())} ` +
      `${p(time.getUTCHours())}:${p(time.getUTCMinutes())}:${p(time.getUTCSeconds())}${ms === 0 ? '' : `.${p(ms, 3)}`}+00`
    )
  }
  const m = TIME_TEXT.exec(time.trim())
  const bad = (): UsageError =>
    new UsageError(`invalid recovery target time '${time}'`, {
      hint: "use ISO 8601 with a time zone, like '2026-11-21 05:27:37+00'",
    })
  if (m === null) throw bad()
  const [month, day, hour, minute, second] = [m[2], m[3], m[4], m[5], m[6]].map((x) => (x === undefined ? 0 : Number(x)))
  if (month! < 1 || month! > 12 || day! < 1 || day! > 31 || hour! > 24 || minute! > 59 || second! > 60) throw bad()
  return time.trim()
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
        lines.push(formatConfigLine('recovery_target_time', formatTargetTime(target.time)))
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
