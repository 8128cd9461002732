// START_REPLICATION … PHYSICAL: a stream of WAL with keepalives, standby status updates on a timer (sent even while
// the consumer is slow and the socket paused), clean stop with CopyDone, and end-of-timeline handling.

import { ConnectionError, ProtocolError, ServerError } from '../errors.js'
import { formatLsn, type Lsn, parseLsn } from '../lsn.js'
import { decodeReplicationMessage, encodeStandbyStatusUpdate } from '../messages/replication.js'
import type { ReplicationConnection } from '../session/connection.js'
import { frontend } from '../wire/frontend.js'
import { checkSlotName, requiredText } from './text.js'

export interface StartReplicationOptions {
  /** Stream from this physical slot (its restart_lsn then follows the flush positions we report). */
  slot?: string
  /** Where to start; streaming clients pick the start of a segment. */
  startLsn: Lsn
  /** Timeline to stream; the server's current one when omitted. */
  timeline?: number
  /** Interval of standby status updates (default 10 s, pg_receivewal's default). */
  statusIntervalMs?: number
  /** Report each `confirmFlushed` to the server at once (synchronous standby mode). */
  immediateFlushReports?: boolean
  /**
   * The bytes of an `xlogdata` event are valid only until the next event is asked for: the consumer copies what it
   * keeps, and the connection reads into the same memory again instead of new memory for every 256 KiB
   * (ReplicationConnection.releaseReceived; BaseBackupOptions.transientData is the same for BASE_BACKUP). Default
   * false: the consumer owns the bytes.
   */
  transientData?: boolean
  signal?: AbortSignal
}

export type ReplicationEvent =
  | {
      type: 'xlogdata'
      /** LSN of the first byte of `data`. */
      walStart: Lsn
      /** The server's WAL flush position when it sent this. */
      serverWalEnd: Lsn
      sentAtUs: bigint
      /** Raw WAL bytes; may cross a segment boundary; owned by the consumer (see `transientData`). */
      data: Buffer
    }
  | { type: 'keepalive'; serverWalEnd: Lsn; sentAtUs: bigint }

/** Why a stream ended without an error. */
export type ReplicationEnd = { reason: 'stopped' } | { reason: 'timeline-ended'; nextTimeline: number; nextTimelineStartLsn: Lsn }

/**
 * An active WAL stream. Iterate it once with `for await`; call `confirmFlushed` as WAL becomes durable; end it
 * with `stop()` (or by breaking out of the loop). After the iteration finished, `end` says why.
 */
export class ReplicationStream implements AsyncIterable<ReplicationEvent> {
  /** End of the last WAL byte handed to the consumer (+1). */
  receivedLsn: Lsn
  /** End of the last WAL byte the consumer declared durable (+1); 0 until it does. */
  flushedLsn: Lsn = 0n
  end: ReplicationEnd | undefined
  private copyDoneSent = false
  private timer: NodeJS.Timeout | undefined
  private readonly events: AsyncGenerator<ReplicationEvent>
  private finished = false
  /** The command ended with an ErrorResponse (already read through ReadyForQuery). */
  private commandEnded = false

  /** @internal use startReplication() */
  constructor(
    private readonly c: ReplicationConnection,
    private readonly o: StartReplicationOptions,
    private readonly release: () => void,
    immediateEnd?: ReplicationEnd,
  ) {
    this.receivedLsn = o.startLsn
    if (immediateEnd) {
      this.end = immediateEnd
      this.finished = true
      release()
    } else {
      this.timer = setInterval(() => this.sendStatus(false), o.statusIntervalMs ?? 10_000)
      this.timer.unref()
    }
    this.events = this.run()
  }

  [Symbol.asyncIterator](): AsyncIterator<ReplicationEvent> {
    return this.events
  }

  /** Declares WAL up to `lsn` (exclusive) durable; the reported flush position never moves backwards. */
  confirmFlushed(lsn: Lsn): void {
    if (lsn <= this.flushedLsn) return
    this.flushedLsn = lsn
    if (this.o.immediateFlushReports) this.sendStatus(false)
  }

  /** Sends a standby status update now. */
  sendStatus(replyRequested: boolean): void {
    if (this.finished || this.copyDoneSent || this.c.isClosed) return
    this.c.send(frontend.copyData(encodeStandbyStatusUpdate({ written: this.receivedLsn, flushed: this.flushedLsn, applied: 0n, replyRequested })))
  }

  /** Ends streaming: sends CopyDone, drains what the server still sends, and resolves with why it ended. */
  async stop(): Promise<ReplicationEnd> {
    if (!this.finished) {
      this.sendCopyDone()
      for (let r = await this.events.next(); !r.done; r = await this.events.next()) {
        /* WAL after our CopyDone is dropped: the caller asked to stop */
      }
    }
    return this.end ?? { reason: 'stopped' }
  }

  private sendCopyDone(): void {
    if (this.copyDoneSent || this.c.isClosed) return
    // A last status update first, so the slot keeps what we flushed.
    this.sendStatus(false)
    this.copyDoneSent = true
    this.c.send(frontend.copyDone())
  }

  private async *run(): AsyncGenerator<ReplicationEvent> {
    if (this.finished) return
    const onAbort = () => this.c.destroy(this.o.signal?.reason)
    this.o.signal?.addEventListener('abort', onAbort, { once: true })
    // With transientData, coming back to read the next message means every event yielded so far was consumed.
    const settle = this.o.transientData ? () => this.c.releaseReceived() : () => {}
    try {
      for (;;) {
        settle()
        const msg = await this.c.read()
        if (msg.type === 'CopyData') {
          const m = decodeReplicationMessage(msg.data)
          if (m.type === 'XLogData') {
            // Every message continues exactly where the previous one ended; the first starts at startLsn.
            if (m.walStart !== this.receivedLsn) {
              throw new ProtocolError(`WAL stream gap: expected ${formatLsn(this.receivedLsn)}, got ${formatLsn(m.walStart)}`)
            }
            this.receivedLsn = m.walStart + BigInt(m.data.length)
            yield { type: 'xlogdata', walStart: m.walStart, serverWalEnd: m.walEnd, sentAtUs: m.sentAtUs, data: m.data }
          } else {
            if (m.replyRequested) this.sendStatus(false)
            yield { type: 'keepalive', serverWalEnd: m.walEnd, sentAtUs: m.sentAtUs }
          }
        } else if (msg.type === 'CopyDone') {
          // The server ended the copy: end of a historic timeline, or the answer to our CopyDone. Either way we must
          // answer with CopyDone (if not sent yet), then the command's results follow.
          this.sendCopyDone()
          this.end = await this.readEnd()
          return
        } else if (msg.type === 'ErrorResponse') {
          // The server left COPY mode (e.g. "requested WAL segment … has already been removed", raised once it
          // tries to read that WAL): failWith reads up to ReadyForQuery, so there is nothing left to drain below.
          this.commandEnded = true
          await this.c.failWith(msg.fields).catch((err) => {
            throw decorate(err)
          })
        } else if (msg.type === 'CommandComplete') {
          // `C "COPY 0"` while streaming: the server is shutting down and closes the connection next.
          throw new ConnectionError('server ended WAL streaming because it is shutting down', {
            hint: 'streaming resumes once the server is back; run the command again',
          })
        } else {
          throw new ProtocolError(`unexpected ${msg.type} during START_REPLICATION`)
        }
      }
    } finally {
      this.o.signal?.removeEventListener('abort', onAbort)
      if (!this.end && !this.commandEnded && !this.c.isClosed) {
        // The consumer left the loop early (break, throw): stop cleanly so the connection stays usable.
        try {
          this.sendCopyDone()
          for (let msg = await this.c.read(); msg.type !== 'CopyDone'; msg = await this.c.read()) {
            if (msg.type === 'ErrorResponse') await this.c.failWith(msg.fields)
          }
          this.end = await this.readEnd()
        } catch {
          this.c.destroy()
        }
      }
      this.finish()
    }
  }

  /** After the copy ended: an optional (next_tli, next_tli_startpos) result set, CommandCompletes, ReadyForQuery. */
  private async readEnd(): Promise<ReplicationEnd> {
    const sets = await this.c.collectResults()
    const row = sets[0]?.rows[0]
    if (row) {
      return {
        reason: 'timeline-ended',
        nextTimeline: Number(requiredText(row[0], 'next_tli')),
        nextTimelineStartLsn: parseLsn(requiredText(row[1], 'next_tli_startpos')),
      }
    }
    return { reason: 'stopped' }
  }

  private finish(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    if (!this.finished) {
      this.finished = true
      this.release()
    }
  }
}

/** Starts streaming WAL. Rejects with ServerError when the server refuses (slot in use, WAL removed, …). */
export async function startReplication(c: ReplicationConnection, o: StartReplicationOptions): Promise<ReplicationStream> {
  const release = c.begin('START_REPLICATION')
  try {
    o.signal?.throwIfAborted()
    const slot = o.slot ? `SLOT ${checkSlotName(o.slot)} ` : ''
    const tli = o.timeline !== undefined ? ` TIMELINE ${o.timeline >>> 0}` : ''
    c.send(frontend.query(`START_REPLICATION ${slot}PHYSICAL ${formatLsn(o.startLsn)}${tli}`))
    const first = await c.read()
    if (first.type === 'CopyBothResponse') return new ReplicationStream(c, o, release)
    if (first.type === 'ErrorResponse') await c.failWith(first.fields)
    if (first.type === 'RowDescription') {
      // The start point is exactly the end of an old timeline: no COPY, just the next timeline (protocol.md §3.2).
      const sets = await c.collectResults(first)
      const row = sets[0]?.rows[0]
      if (!row) throw new ProtocolError('START_REPLICATION ended without streaming and without a next timeline')
      return new ReplicationStream(c, o, release, {
        reason: 'timeline-ended',
        nextTimeline: Number(requiredText(row[0], 'next_tli')),
        nextTimelineStartLsn: parseLsn(requiredText(row[1], 'next_tli_startpos')),
      })
    }
    throw new ProtocolError(`unexpected ${first.type} in response to START_REPLICATION`)
  } catch (err) {
    release()
    throw decorate(err)
  }
}

/** Adds hints to the server's well-known START_REPLICATION errors. */
function decorate(err: unknown): unknown {
  if (!(err instanceof ServerError) || err.hint) return err
  const fields = { sqlState: err.sqlState, message: err.message, detail: err.detail, severity: err.severity }
  if (err.sqlState === '58P01' || /has already been removed/.test(err.message)) {
    return new ServerError(fields, {
      hint: 'the server recycled WAL this stream needs: use a replication slot so it keeps WAL until it is stored, then take a new base backup',
    })
  }
  if (err.sqlState === '55006') {
    return new ServerError(fields, { hint: 'another process streams from this slot; stop it or use a different --slot' })
  }
  if (err.sqlState === '42704') {
    return new ServerError(fields, { hint: 'create the slot first (for example with --create-slot)' })
  }
  return err
}
