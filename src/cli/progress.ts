// How the CLI shows an operation's events (src/events.ts): progress as one line, redrawn in place on a terminal or
// printed every few seconds when asked for on a pipe (nothing at all when output is not a terminal and progress was
// not asked for); messages as `pgkeep: [warning: ]text` lines. A rate and an ETA appear only once they mean
// something (a few seconds in and some work done), never as raw floats.

import type { Writable } from 'node:stream'
import type { MessageEvent, PgkeepEvent, ProgressEvent } from '../events.js'
import { formatBytes, formatDuration } from './format.js'

/** An ETA or a rate before this much time or work is noise. */
const SETTLE_MS = 3_000
const SETTLE_SHARE = 0.03

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

export class ProgressLine {
  private lastDraw = 0
  private drawn = false
  private phase = ''
  private phaseStarted = Date.now()

  constructor(
    private readonly out: Writable & { isTTY?: boolean },
    private readonly enabled: boolean,
  ) {}

  update(p: ProgressEvent, extra = ''): void {
    if (!this.enabled) return
    const now = Date.now()
    const newPhase = p.phase !== this.phase
    if (newPhase) {
      this.phase = p.phase
      this.phaseStarted = now
    }
    const tty = this.out.isTTY === true
    if (!newPhase && now - this.lastDraw < (tty ? 200 : 5000)) return
    this.lastDraw = now
    const ms = now - this.phaseStarted
    const total = p.bytesTotal
    const share = total ? Math.min(1, p.bytesDone / total) : 0
    const settled = ms >= SETTLE_MS && (total === null || share >= SETTLE_SHARE)
    const rate = settled ? (p.bytesDone * 1000) / ms : 0
    const parts = [`${p.operation} ${p.phase}`]
    if (p.bytesDone > 0 || total) parts.push(`${formatBytes(p.bytesDone)}${total ? ` of ${formatBytes(total)} (${Math.floor(share * 100)}%)` : ''}`)
    if (p.itemsDone !== undefined) parts.push(`${p.itemsDone}${p.itemsTotal ? `/${p.itemsTotal}` : ''} items`)
    if (rate > 0) parts.push(`${formatBytes(rate)}/s`)
    if (rate > 0 && total && p.bytesDone < total) parts.push(`ETA ${formatDuration(((total - p.bytesDone) / rate) * 1000)}`)
    if (extra) parts.push(extra)
    const text = parts.join('  ')
    if (tty) {
      this.out.write(`\r${text}\x1b[K`)
      this.drawn = true
    } else {
      this.out.write(`${text}\n`)
    }
  }

  /** Clears the line on a terminal so that the next output starts clean. */
  done(): void {
    if (this.drawn) this.out.write('\r\x1b[K')
    this.drawn = false
  }
}
