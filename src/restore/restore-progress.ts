// A restore's counters, reported as progress events (src/events.ts): bytes of the backup covered and bytes written
// (a delta restore writes less than it covers), files done.

import type { OperationEvents } from '../events.js'

export class RestoreProgress {
  #covered = 0
  #written = 0
  #filesDone = 0

  constructor(
    private readonly events: OperationEvents,
    private readonly totalBytes: number,
    private readonly totalFiles: number,
    /** Told of the bytes written as they are (WritebackAhead). */
    private readonly onWritten?: (bytes: number) => void,
  ) {}

  get written(): number {
    return this.#written
  }

  phase(name: 'cleanup' | 'files' | 'wal' | 'finish'): void {
    this.events.phase(name, this.#counters())
  }

  add(coveredBytes: number, writtenBytes: number): void {
    this.#covered += coveredBytes
    this.#written += writtenBytes
    if (writtenBytes > 0) this.onWritten?.(writtenBytes)
    this.events.progress(this.#counters())
  }

  fileDone(): void {
    this.#filesDone++
  }

  flush(): void {
    this.events.progress(this.#counters(), true)
  }

  #counters() {
    return {
      bytesDone: this.#covered,
      bytesTotal: this.totalBytes,
      itemsDone: this.#filesDone,
      itemsTotal: this.totalFiles,
      detail: { bytesWritten: this.#written },
    }
  }
}
