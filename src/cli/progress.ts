// How the CLI shows an operation's events (src/events.ts): progress as one line, redrawn in place on a terminal or
// printed every few seconds when asked for on a pipe (nothing at all when output is not a terminal and progress was
// not asked for); messages as `pgkeep: [warning: ]text` lines. The line names the phase in words with its number
// (`backup [3/5] copying files`), the tablespace being read, and a rate and an ETA only once they mean something:
// a few seconds into the phase, some work done, measured over the last seconds, and never absurdly far away.

import type { Writable } from 'node:stream'
import type { MessageEvent, PgkeepEvent, ProgressEvent } from '../events.js'
import { formatBytes, formatDuration } from './format.js'

/** An ETA or a rate before this much time or work is noise. */
const SETTLE_MS = 3_000
const SETTLE_SHARE = 0.03
/** The rate is measured over this window, so that a slow start (a checkpoint, a cold cache) does not linger in it. */
const RATE_WINDOW_MS = 10_000
/** An ETA beyond this is not an estimate anyone can use. */
const MAX_ETA_MS = 7 * 86_400_000

/** The phases of the operations that have fixed ones, in order, with what the line calls them. */
const PHASES: Readonly<Record<string, readonly (readonly [string, string])[]>> = {
  backup: [
    ['connect', 'connecting'],
    ['checkpoint', 'waiting for the checkpoint'],
    ['files', 'copying files'],
    ['wal', 'waiting for WAL'],
    ['finish', 'finishing'],
  ],
  restore: [
    ['files', 'writing files'],
    ['wal', 'writing WAL'],
    ['finish', 'finishing'],
  ],
}
const PHASE_WORDS: Readonly<Record<string, string>> = { cleanup: 'removing what the backup does not have' }

export interface EventView {
  /** Pass to the operation as its `onEvent`. */
  readonly onEvent: (e: PgkeepEvent) => void
  /** Clears the progress line (before other output, and at the end). */
  done(): void
}

export interface EventViewOptions {
  /** Show progress even when stderr is not a terminal (--progress). */
  progress: boolean
  /** Info messages are not printed but handed here (a command that prints them in its summary). */
  onInfo?: (m: MessageEvent) => void
  /** Extra text after the counters, from the event's detail. */
  describe?: (p: ProgressEvent) => string
}

export function eventView(out: Writable & { isTTY?: boolean }, o: EventViewOptions): EventView {
  const line = new ProgressLine(out, o.progress || out.isTTY === true)
  return {
    onEvent(e) {
      if (e.type === 'progress') {
        line.update(e, o.describe?.(e) ?? '')
        return
      }
      if (e.level === 'info' && o.onInfo) {
        o.onInfo(e)
        return
      }
      line.done()
      out.write(`pgkeep: ${e.level === 'warning' ? 'warning: ' : ''}${e.text}\n`)
    },
    done: () => line.done(),
  }
}

/** The words for a phase, with its number when the operation's phases are known: `[3/5] copying files`. */
export function describePhase(operation: string, phase: string): string {
  const list = PHASES[operation]
  const i = list?.findIndex(([name]) => name === phase) ?? -1
  if (list && i >= 0) return `[${i + 1}/${list.length}] ${list[i]![1]}`
  return PHASE_WORDS[phase] ?? phase
}

export class ProgressLine {
  private lastDraw = 0
  private drawn = false
  private phase = ''
  private phaseStarted = 0
  /** (time, bytes done) of the current phase, over the last RATE_WINDOW_MS. */
  private samples: { atMs: number; bytes: number }[] = []

  constructor(
    private readonly out: Writable & { isTTY?: boolean },
    private readonly enabled: boolean,
    private readonly clock: () => number = Date.now,
  ) {}

  update(p: ProgressEvent, extra = ''): void {
    if (!this.enabled) return
    const now = this.clock()
    const newPhase = p.phase !== this.phase
    if (newPhase) {
      this.phase = p.phase
      this.phaseStarted = now
      this.samples = []
    }
    this.samples.push({ atMs: now, bytes: p.bytesDone })
    while (this.samples.length > 2 && now - this.samples[1]!.atMs > RATE_WINDOW_MS) this.samples.shift()
    const tty = this.out.isTTY === true
    if (!newPhase && now - this.lastDraw < (tty ? 200 : 5000)) return
    this.lastDraw = now
    const text = this.format(p, now, extra)
    if (tty) {
      this.out.write(`\r${text}\x1b[K`)
      this.drawn = true
    } else {
      this.out.write(`${text}\n`)
    }
  }

  /** The line for `p` at `now`. */
  private format(p: ProgressEvent, now: number, extra: string): string {
    const total = p.bytesTotal
    const share = total ? Math.min(1, p.bytesDone / total) : 0
    const settled = now - this.phaseStarted >= SETTLE_MS && (total === null || share >= SETTLE_SHARE)
    const first = this.samples[0]!
    const span = now - first.atMs
    const rate = settled && span > 0 ? Math.max(0, ((p.bytesDone - first.bytes) * 1000) / span) : 0
    const parts = [`${p.operation} ${describePhase(p.operation, p.phase)}`]
    if (p.bytesDone > 0 || total) parts.push(`${formatBytes(p.bytesDone)}${total ? ` of ${formatBytes(total)} (${Math.floor(share * 100)}%)` : ''}`)
    if (p.itemsDone !== undefined) parts.push(`${p.itemsDone}${p.itemsTotal ? `/${p.itemsTotal}` : ''} ${p.operation === 'restore' ? 'files' : 'items'}`)
    const ts = p.detail?.tablespace
    if (typeof ts === 'string' && /^[1-9]\d*\/\d+$/.test(ts) && !ts.endsWith('/1')) parts.push(`tablespace ${ts}`)
    if (rate >= 1) parts.push(`${formatBytes(rate)}/s`)
    const etaMs = rate >= 1 && total && p.bytesDone < total ? ((total - p.bytesDone) / rate) * 1000 : undefined
    if (etaMs !== undefined && etaMs <= MAX_ETA_MS) parts.push(`ETA ${formatDuration(etaMs)}`)
    if (extra) parts.push(extra)
    return parts.join('  ')
  }

  /** Clears the line on a terminal so that the next output starts clean. */
  done(): void {
    if (this.drawn) this.out.write('\r\x1b[K')
    this.drawn = false
  }
}
