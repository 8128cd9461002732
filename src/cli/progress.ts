// A one-line progress display: redrawn in place on a terminal, or a plain line every few seconds when asked for
// on a pipe. Nothing at all when output is not a terminal and progress was not asked for.

import type { Writable } from 'node:stream'
import { formatBytes, formatDuration } from './format.js'

export class ProgressLine {
  private lastDraw = 0
  private drawn = false
  private readonly started = Date.now()

  constructor(
    private readonly out: Writable & { isTTY?: boolean },
    private readonly enabled: boolean,
    private readonly label: string,
  ) {}

  static for(out: Writable & { isTTY?: boolean }, requested: boolean, label: string): ProgressLine {
    return new ProgressLine(out, requested || out.isTTY === true, label)
  }

  update(done: number, total: number | null, extra = ''): void {
    if (!this.enabled) return
    const now = Date.now()
    const tty = this.out.isTTY === true
    if (now - this.lastDraw < (tty ? 200 : 5000)) return
    this.lastDraw = now
    const secs = (now - this.started) / 1000
    const rate = secs > 0 ? done / secs : 0
    const pct = total ? ` of ${formatBytes(total)} ${Math.min(100, Math.floor((100 * done) / total))}%` : ''
    const eta = total && rate > 0 && done < total ? `  ETA ${formatDuration(((total - done) / rate) * 1000)}` : ''
    const line = `${this.label} ${formatBytes(done)}${pct}  ${formatBytes(rate)}/s${eta}${extra ? '  ' + extra : ''}`
    if (tty) {
      this.out.write(`\r${line}\x1b[K`)
      this.drawn = true
    } else {
      this.out.write(line + '\n')
    }
  }

  /** Clears the line on a terminal so that the next output starts clean. */
  done(): void {
    if (this.drawn) this.out.write('\r\x1b[K')
    this.drawn = false
  }
}
