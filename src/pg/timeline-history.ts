// Timeline history files (`%08X.history`): their text format and the questions a restore asks of them
// (PostgreSQL src/backend/access/transam/timeline.c: readTimeLineHistory, writeTimeLineHistory, tliOfPointInHistory).

import { FormatError } from '../errors.js'
import { formatLsn, type Lsn, parseLsn } from './lsn.js'
import type { TimelineId } from './wal-names.js'

/**
 * One line of a history file: timeline `parentTli` ended at `switchLsn`, where its child began. The file of
 * timeline N lists every ancestor of N, oldest first.
 */
export interface TimelineHistoryEntry {
  parentTli: TimelineId
  switchLsn: Lsn
  /** Why the timeline switched ("no recovery target specified", "at restore point …"); free text. */
  reason: string
}

/** A timeline and the WAL range it covers: `[beginLsn, endLsn)`; `endLsn` is undefined for the newest one. */
export interface TimelineRange {
  tli: TimelineId
  beginLsn: Lsn
  endLsn: Lsn | undefined
}

/**
 * Parses a history file. Like readTimeLineHistory: leading white space is skipped, empty lines and `#` comment
 * lines are ignored (the server writes an empty line between inherited entries), each other line is
 * `parentTLI<TAB>switchLSN<TAB>reason`, and timeline ids must increase.
 * @throws FormatError on a malformed line or non-increasing timelines
 */
export function parseTimelineHistory(content: string | Uint8Array): TimelineHistoryEntry[] {
  const text = typeof content === 'string' ? content : new TextDecoder().decode(content)
  const entries: TimelineHistoryEntry[] = []
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^[ \t\r\f\v]+/, '')
    if (line === '' || line.startsWith('#')) continue
    // sscanf("%u\t%X/%X") in PostgreSQL; the reason is whatever follows the next separator.
    const m = /^(\d+)\s+([0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8})(?:\s(.*))?$/.exec(line.replace(/\r$/, ''))
    if (m === null) {
      throw new FormatError(`syntax error in timeline history file: '${raw}'`, {
        hint: 'expected lines of parentTLI<TAB>switchLSN<TAB>reason',
      })
    }
    const parentTli = Number(m[1])
    if (parentTli < 1 || parentTli > 0xffff_ffff) throw new FormatError(`invalid timeline id in history file: '${raw}'`)
    const prev = entries[entries.length - 1]
    if (prev !== undefined && parentTli <= prev.parentTli) {
      throw new FormatError('invalid data in timeline history file: timeline ids must be in increasing sequence')
    }
    entries.push({ parentTli, switchLsn: parseLsn(m[2]!), reason: m[3] ?? '' })
  }
  return entries
}

/**
 * Formats entries the way the server writes a history file: each entry is `%u\t%X/%X\t%s\n`, and entries are
 * separated by an empty line, because writeTimeLineHistory copies the parent's file and appends "\n" + new line.
 */
export function formatTimelineHistory(entries: readonly TimelineHistoryEntry[]): string {
  return entries
    .map((e) => {
      if (/[\n]/.test(e.reason)) throw new FormatError('a timeline switch reason cannot contain a newline')
      return `${e.parentTli}\t${formatLsn(e.switchLsn)}\t${e.reason}\n`
    })
    .join('\n')
}

/**
 * The timelines of a history as ranges, oldest first, ending with `tli` itself (the history file's own timeline).
 * @throws FormatError when `tli` is not above every parent in the history
 */
export function timelineRanges(history: readonly TimelineHistoryEntry[], tli: TimelineId): TimelineRange[] {
  const ranges: TimelineRange[] = []
  let begin: Lsn = 0n
  for (const e of history) {
    ranges.push({ tli: e.parentTli, beginLsn: begin, endLsn: e.switchLsn })
    begin = e.switchLsn
  }
  const last = history[history.length - 1]
  if (last !== undefined && last.parentTli >= tli) {
    throw new FormatError(`timeline ${tli} is not a child of timeline ${last.parentTli} in its history`)
  }
  ranges.push({ tli, beginLsn: begin, endLsn: undefined })
  return ranges
}

/**
 * The timeline that was current at `lsn`, following the history of timeline `tli` (tliOfPointInHistory): a
 * switch LSN belongs to the child timeline.
 */
export function timelineOfLsn(history: readonly TimelineHistoryEntry[], lsn: Lsn, tli: TimelineId): TimelineId {
  for (const e of history) if (lsn < e.switchLsn) return e.parentTli
  return tli
}

/**
 * The LSN at which timeline `ancestor` ended in the history of the current timeline (tliSwitchPoint), or
 * undefined when `ancestor` is the current timeline itself.
 * @throws FormatError when `ancestor` is not in the history
 */
export function timelineSwitchPoint(history: readonly TimelineHistoryEntry[], ancestor: TimelineId, tli: TimelineId): Lsn | undefined {
  if (ancestor === tli) return undefined
  const e = history.find((h) => h.parentTli === ancestor)
  if (e === undefined) {
    throw new FormatError(`timeline ${ancestor} is not in the history of timeline ${tli}`, {
      hint: 'the requested timeline is not an ancestor of the current one',
    })
  }
  return e.switchLsn
}
