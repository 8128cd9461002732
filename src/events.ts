// What every operation tells its caller while it runs, in one shape: progress (a phase and counters) and messages
// (things a person should read: fallbacks, warnings). Operations take `onEvent` and `signal` (OperationOptions);
// the CLI renders events, a library user gets them as plain objects. Progress is throttled here, once for all.

/** The operations that report events. */
export type OperationName = 'backup' | 'restore' | 'verify' | 'wal-stream' | 'wal-push' | 'wal-get' | 'expire' | 'forget' | 'gc' | 'copy' | 'drill' | 'check'

/** How far an operation is. Each operation documents its phases. */
export interface ProgressEvent {
  readonly type: 'progress'
  readonly operation: OperationName
  /** What it is doing now, e.g. 'checkpoint', 'files', 'wal', 'finish'. */
  readonly phase: string
  /** Bytes of the phase's work done, and in all when known. */
  readonly bytesDone: number
  readonly bytesTotal: number | null
  /** Items (files, blobs, segments, packs) done and in all, when the operation counts them. */
  readonly itemsDone?: number
  readonly itemsTotal?: number | null
  /** Further facts of the operation, e.g. `{ storedBytes: 123, tablespace: '1/2' }`. */
  readonly detail?: Readonly<Record<string, string | number | null>>
}

/** Something a person should read; `code` and `data` say the same for programs. */
export interface MessageEvent {
  readonly type: 'message'
  readonly operation: OperationName
  readonly level: 'info' | 'warning'
  readonly text: string
  /** What happened, stable for programs to match, e.g. 'segment-stored', 'full-instead-of-incremental'. */
  readonly code?: string
  /** The facts of the message, for programs. */
  readonly data?: Readonly<Record<string, unknown>>
}

export type PgkeepEvent = ProgressEvent | MessageEvent

export type EventListener = (event: PgkeepEvent) => void

/** Options every operation takes. */
export interface OperationOptions {
  /** Stops the operation; it then rejects with an AbortedError (or the signal's reason). */
  signal?: AbortSignal
  /** Receives progress and messages; it must not throw. */
  onEvent?: EventListener
}

const PROGRESS_INTERVAL_MS = 250

/** An operation's side of the events: messages go out at once, progress at most every 250 ms. */
export class OperationEvents {
  #phase = ''
  #lastProgress = 0
  #pending: Omit<ProgressEvent, 'type' | 'operation' | 'phase'> | undefined

  constructor(
    readonly operation: OperationName,
    private readonly listener: EventListener | undefined,
  ) {}

  say(level: MessageEvent['level'], text: string, code?: string, data?: MessageEvent['data']): void {
    this.listener?.({ type: 'message', operation: this.operation, level, text, ...(code ? { code } : {}), ...(data ? { data } : {}) })
  }

  /** Enters a phase: reported at once, with the counters given. */
  phase(phase: string, counters: Omit<ProgressEvent, 'type' | 'operation' | 'phase'> = { bytesDone: 0, bytesTotal: null }): void {
    this.#phase = phase
    this.#emit(counters)
  }

  /** New counters for the current phase: reported when the last report is old enough, or with `force`. */
  progress(counters: Omit<ProgressEvent, 'type' | 'operation' | 'phase'>, force = false): void {
    if (!this.listener) return
    if (!force && Date.now() - this.#lastProgress < PROGRESS_INTERVAL_MS) {
      this.#pending = counters
      return
    }
    this.#emit(counters)
  }

  /** Reports counters held back by the throttle (at the end of a phase). */
  flush(): void {
    if (this.#pending) this.#emit(this.#pending)
  }

  #emit(counters: Omit<ProgressEvent, 'type' | 'operation' | 'phase'>): void {
    this.#pending = undefined
    this.#lastProgress = Date.now()
    this.listener?.({ type: 'progress', operation: this.operation, phase: this.#phase, ...counters })
  }
}
