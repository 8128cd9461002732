// `wal stream`: continuous WAL archiving from a physical replication slot into the repository. A socket loop and a
// storing loop joined by a bounded queue; flush reports only for durable WAL (invariant 6); timeline switches
// followed; resumes after the newest stored WAL; reconnects after a lost connection; stops cleanly on abort, and
// at once (with the lock's LockedError, reporting nothing more) when its repository lock is lost.
// Longer than 400 lines on purpose: the socket loop, the storing loop, reconnection and timeline following share
// the streamer's state (writer, queue, positions); status() reads it all.

import {
  ConnectionError,
  connect,
  createReplicationSlot,
  identifySystem,
  type Lsn,
  readReplicationSlot,
  type ReplicationConnection,
  type ReplicationStream,
  formatLsn,
  ServerError,
  show,
  startReplication,
  timelineHistory,
} from '../../protocol/index.js'
import { UsageError } from '../errors.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { parseSizeSetting } from '../pg/lsn.js'
import { anySignal, sleep } from '../storage/abort.js'
import type { OperationOptions } from '../events.js'
import type { ServerTarget } from '../server-target.js'
import { historyKey, type LockTiming, readWalRecord, type RepoLock, type Repository, type WalHistoryRecord, writeWalRecord } from '../repo/index.js'
import { findResumePoint, type ResumePoint } from './resume-point.js'
import { type StoredSegment, WalSegmentWriter } from '../repo/index.js'
import { WalQueue } from './wal-queue.js'

/** Options of {@link WalStreamer}. */
export interface WalStreamOptions extends OperationOptions {
  repo: Repository
  /** The server to stream from (a role with the REPLICATION attribute). */
  server: ServerTarget
  /** Physical replication slot to stream from. */
  slot: string
  /** Create the slot (reserving WAL) when it does not exist. */
  createSlot?: boolean
  /** Synchronous standby mode: make each received batch durable and report it at once. */
  synchronous?: boolean
  /** Interval of standby status updates (default 10 s). */
  statusIntervalMs?: number
  /** Received WAL waiting to be stored before the socket is paused (default 64 MiB). */
  maxQueueBytes?: number
  /** Completed segments being stored while the next fills (default 2). */
  maxPendingSegments?: number
  /** Keep retrying after a lost connection (default true); the first connection must succeed. */
  reconnect?: boolean
  /** Timing of the streamer's shared repository lock (defaults: stale after 30 min, refreshed every 5 min). */
  lockTiming?: LockTiming
}

/**
 * The codes of the streamer's messages (MessageEvent.code), each with its `data`: `started` (systemId, timeline,
 * startLsn, resumedFrom, slot, serverVersion, applicationName), `slot-created` (slot), `segment-stored` (timeline
 * and the StoredSegment's fields), `history-stored` (timeline, result), `timeline-switch` (from, to, switchLsn),
 * `reconnecting` (error, delayMs), `lock` (state: at-risk or held). LSNs in `data` are text.
 */
export type WalStreamMessageCode = 'started' | 'slot-created' | 'segment-stored' | 'history-stored' | 'timeline-switch' | 'reconnecting' | 'lock'

/** A snapshot of the streamer's progress (for `lag and rate on demand`). */
export interface WalStreamStatus {
  timeline: number | undefined
  receivedLsn: Lsn | undefined
  durableLsn: Lsn | undefined
  /** The server's WAL flush position as last reported to us. */
  serverWalEnd: Lsn | undefined
  /** serverWalEnd − durableLsn. */
  lagBytes: number | undefined
  queuedBytes: number
  /** WAL received per second over the last ~10 s. */
  receiveBytesPerSec: number
  segmentsStored: number
}

/** Where streaming stopped. */
export interface WalStreamResult {
  timeline: number
  /** End of the WAL durable in the repository when streaming stopped. */
  durableLsn: Lsn
}

const SLOT_BUSY_RETRIES = 10
const SLOT_BUSY_DELAY_MS = 500
const MAX_RECONNECT_DELAY_MS = 30_000

/** Streams WAL into the repository until `signal` aborts. Construct, then `run()` once. */
export class WalStreamer {
  private writer: WalSegmentWriter | undefined
  private stream: ReplicationStream | undefined
  private queue: WalQueue | undefined
  private serverWalEnd: Lsn | undefined
  private systemId: bigint | undefined
  private segSize = 0
  private segmentsStored = 0
  private inSyncPoint = false
  private readonly samples: { atMs: number; lsn: Lsn }[] = []

  constructor(private readonly o: WalStreamOptions) {}

  status(): WalStreamStatus {
    const w = this.writer
    const now = Date.now()
    const first = this.samples.find((s) => now - s.atMs <= 10_000)
    const rate = first && w && now > first.atMs ? Number(w.receivedLsn - first.lsn) / ((now - first.atMs) / 1000) : 0
    return {
      timeline: w?.timeline,
      receivedLsn: w?.receivedLsn,
      durableLsn: w?.durableLsn,
      serverWalEnd: this.serverWalEnd,
      lagBytes: w && this.serverWalEnd !== undefined ? Math.max(0, Number(this.serverWalEnd - w.durableLsn)) : undefined,
      queuedBytes: this.queue?.sizeBytes ?? 0,
      receiveBytesPerSec: rate,
      segmentsStored: this.segmentsStored,
    }
  }

  async run(): Promise<WalStreamResult> {
    const { repo, signal } = this.o
    signal?.throwIfAborted()
    const lock: RepoLock = await repo.acquireLock('shared', {
      purpose: `wal stream (slot ${this.o.slot})`,
      signal,
      ...this.o.lockTiming,
      onStateChange: (c) => {
        if (c.state === 'held' || c.state === 'at-risk') this.#say(c.state === 'at-risk' ? 'warning' : 'info', c.message, 'lock', { state: c.state })
      },
    })
    try {
      let connected = false
      let delayMs = 1000
      for (;;) {
        try {
          const done = await this.session(lock, () => {
            connected = true
            delayMs = 1000
          })
          if (done) return done
        } catch (err) {
          // A lost lock ends streaming: WAL received since is not stored and its flush position never reported.
          lock.assertHeld()
          if (signal?.aborted) return this.result()
          if (!connected || this.o.reconnect === false || !isTransient(err)) throw err
          const message = (err as Error).message
          this.#say('warning', `connection lost (${message}); reconnecting in ${Math.round(delayMs / 1000)} s`, 'reconnecting', { error: message, delayMs })
          try {
            await sleep(delayMs, anySignal(signal, lock.signal))
          } catch {
            lock.assertHeld()
            return this.result()
          }
          delayMs = Math.min(MAX_RECONNECT_DELAY_MS, delayMs * 2)
        }
        if (signal?.aborted) return this.result()
      }
    } finally {
      await lock.release().catch(() => {})
    }
  }

  private result(): WalStreamResult {
    return { timeline: this.writer?.timeline ?? 0, durableLsn: this.writer?.durableLsn ?? 0n }
  }

  /** One connection: streams timeline after timeline; resolves with the result once aborted. */
  private async session(lock: RepoLock, onStreaming: () => void): Promise<WalStreamResult | undefined> {
    const { repo, signal } = this.o
    const server = this.o.server
    const conn = await connect(server.conninfo, {
      env: server.env ? { ...server.env } : undefined,
      overrides: server.overrides,
      fallbackApplicationName: this.o.slot,
      signal,
    })
    // Losing the lock cuts the connection at once: the socket and storing loops stop, nothing more is confirmed.
    const onLost = () => conn.destroy(lock.signal.reason as Error)
    lock.signal.addEventListener('abort', onLost, { once: true })
    try {
      lock.assertHeld()
      const id = await identifySystem(conn, { signal })
      const segSize = parseSizeSetting(await show(conn, 'wal_segment_size', { signal }))
      if (this.systemId !== undefined && (id.systemId !== this.systemId || segSize !== this.segSize)) {
        throw new UsageError(`the server now has system identifier ${id.systemId}, not ${this.systemId}`, {
          hint: 'the connection string points at another cluster; each cluster needs its own streamer',
        })
      }
      this.systemId = id.systemId
      this.segSize = segSize
      const slot = await this.ensureSlot(conn)
      let resumedFrom: ResumePoint['source'] | 'reconnect' = 'reconnect'
      if (!this.writer) {
        const point = await findResumePoint(repo, {
          systemId: id.systemId,
          segmentSizeBytes: segSize,
          slot,
          server: { timeline: id.timeline, xlogPos: id.xlogPos },
          signal,
        })
        this.writer = this.newWriter(point.timeline, point.startLsn)
        resumedFrom = point.source
      }
      let announced = false
      for (;;) {
        const writer = this.writer
        await this.ensureHistory(conn, writer.timeline)
        const stream = await this.startStream(conn, writer)
        onStreaming()
        if (!announced) {
          announced = true
          const serverVersion = conn.parameters.get('server_version') ?? String(conn.serverVersionNum)
          const applicationName = conn.parameters.get('application_name') ?? this.o.slot
          this.#say(
            'info',
            `streaming cluster ${id.systemId} (PostgreSQL ${serverVersion}) from slot ${this.o.slot} as '${applicationName}', ` +
              `timeline ${writer.timeline} from ${formatLsn(writer.receivedLsn)} (${describeSource(resumedFrom)})`,
            'started',
            {
              systemId: id.systemId.toString(),
              timeline: writer.timeline,
              startLsn: formatLsn(writer.receivedLsn),
              resumedFrom,
              slot: this.o.slot,
              serverVersion,
              applicationName,
            },
          )
        }
        const ended = await this.pump(conn, stream, writer)
        if (ended === 'aborted') return this.result()
        const end = stream.end
        if (end?.reason !== 'timeline-ended') {
          throw new ConnectionError('the server ended WAL streaming', { hint: 'streaming resumes once the server accepts connections again' })
        }
        // The old timeline ends at the switch point: its last segment is stored as partial (pg_receivewal keeps it as
        // `.partial` too); the new timeline starts again at the beginning of the segment holding the switch point.
        await writer.storePartial()
        await writer.close()
        const next = this.newWriter(end.nextTimeline, end.nextTimelineStartLsn - (end.nextTimelineStartLsn % BigInt(segSize)))
        const switchLsn = formatLsn(end.nextTimelineStartLsn)
        this.#say('info', `timeline ${writer.timeline} ended at ${switchLsn}; following timeline ${end.nextTimeline}`, 'timeline-switch', {
          from: writer.timeline,
          to: end.nextTimeline,
          switchLsn,
        })
        this.writer = next
      }
    } finally {
      lock.signal.removeEventListener('abort', onLost)
      this.stream = undefined
      await conn.close().catch(() => conn.destroy())
    }
  }

  private newWriter(timeline: number, startLsn: Lsn): WalSegmentWriter {
    return new WalSegmentWriter(this.o.repo, {
      systemId: this.systemId!,
      timeline,
      segmentSizeBytes: this.segSize,
      startLsn,
      maxPendingSegments: this.o.maxPendingSegments,
      onStored: (segment) => {
        // Reported in stream order; the slot may now release this WAL.
        this.stream?.confirmFlushed(segment.endLsn)
        if (!segment.partial) this.segmentsStored++
        if (!this.inSyncPoint) this.#stored(timeline, segment)
      },
    })
  }

  /** The slot's restart position (15+), creating the slot first when asked to. */
  private async ensureSlot(conn: ReplicationConnection): Promise<{ restartLsn: Lsn; timeline: number } | undefined> {
    const { slot, signal } = this.o
    if (conn.serverMajor >= 15) {
      let info = await readReplicationSlot(conn, slot, { signal })
      if (info === null && this.o.createSlot) {
        await createReplicationSlot(conn, slot, { reserveWal: true, signal })
        this.#say('info', `created replication slot ${slot}`, 'slot-created', { slot })
        info = await readReplicationSlot(conn, slot, { signal })
      }
      if (info === null) {
        throw new ServerError(
          { sqlState: '42704', message: `replication slot "${slot}" does not exist` },
          {
            hint: `create it with --create-slot, or SELECT pg_create_physical_replication_slot('${slot}', true)`,
          },
        )
      }
      if (info.slotType !== 'physical') {
        throw new UsageError(`replication slot "${slot}" is a ${info.slotType} slot`, { hint: 'wal stream needs a physical slot; choose another --slot' })
      }
      return info.restartLsn !== null ? { restartLsn: info.restartLsn, timeline: info.restartTimeline ?? 1 } : undefined
    }
    if (this.o.createSlot) {
      try {
        await createReplicationSlot(conn, slot, { reserveWal: true, signal })
        this.#say('info', `created replication slot ${slot}`, 'slot-created', { slot })
      } catch (err) {
        if (!(err instanceof ServerError && err.sqlState === '42710')) throw err // 42710: it exists already
      }
    }
    return undefined
  }

  /** Stores the history file of `timeline` (timelines above 1 have one) unless it is stored already. */
  private async ensureHistory(conn: ReplicationConnection, timeline: number): Promise<void> {
    if (timeline <= 1) return
    const key = historyKey(this.systemId!, timeline)
    if (await readWalRecord(this.o.repo, key, { signal: this.o.signal })) return
    const file = await timelineHistory(conn, timeline, { signal: this.o.signal })
    const pieces =
      file.content.length > 0
        ? [[(await this.o.repo.putBlob('data', file.content, { signal: this.o.signal })).id, file.content.length] as [string, number]]
        : []
    const record: WalHistoryRecord = {
      name: file.fileName,
      timeline,
      sizeBytes: file.content.length,
      crc32c: crc32cHexLE(crc32c(file.content)),
      pieces,
    }
    const result = await writeWalRecord(this.o.repo, key, record, { signal: this.o.signal })
    this.#say('info', `stored the history file of timeline ${timeline}${result === 'exists' ? ' (already stored)' : ''}`, 'history-stored', {
      timeline,
      result,
    })
  }

  /** START_REPLICATION at the writer's position; a slot still held by a killed predecessor is retried briefly. */
  private async startStream(conn: ReplicationConnection, writer: WalSegmentWriter): Promise<ReplicationStream> {
    for (let attempt = 0; ; attempt++) {
      try {
        const stream = await startReplication(conn, {
          slot: this.o.slot,
          startLsn: writer.receivedLsn,
          timeline: writer.timeline,
          statusIntervalMs: this.o.statusIntervalMs,
          immediateFlushReports: this.o.synchronous,
        })
        this.stream = stream
        // Tell the server at once what is durable (a resumed writer may already hold WAL).
        if (writer.durableLsn > 0n) stream.confirmFlushed(writer.durableLsn)
        return stream
      } catch (err) {
        // 55006: the walsender of a killed predecessor has not noticed yet that its client is gone.
        if (!(err instanceof ServerError && err.sqlState === '55006') || attempt >= SLOT_BUSY_RETRIES) throw err
        await sleep(SLOT_BUSY_DELAY_MS, this.o.signal)
      }
    }
  }

  /**
   * Runs the socket loop and the storing loop until the stream ends ('ended') or the signal aborts ('aborted',
   * after storing what was received as a partial segment and stopping the stream cleanly).
   */
  private async pump(conn: ReplicationConnection, stream: ReplicationStream, writer: WalSegmentWriter): Promise<'ended' | 'aborted'> {
    const { signal } = this.o
    const queue = new WalQueue(this.o.maxQueueBytes ?? 64 << 20)
    this.queue = queue
    const it = stream[Symbol.asyncIterator]()
    let stopping = signal?.aborted ?? false
    const onAbort = () => {
      stopping = true
      // Wakes the socket loop: the server answers at once with a keepalive, even when no WAL flows.
      stream.sendStatus(true)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    const reader = (async (): Promise<'ended' | 'stopping'> => {
      try {
        while (!stopping) {
          const r = await it.next()
          if (r.done) return 'ended'
          const ev = r.value
          if (this.serverWalEnd === undefined || ev.serverWalEnd > this.serverWalEnd) this.serverWalEnd = ev.serverWalEnd
          if (ev.type === 'xlogdata' && ev.data.length > 0) {
            if (!(await queue.push({ walStart: ev.walStart, data: ev.data }))) return 'stopping'
          } else if (ev.type === 'keepalive') {
            // Keepalives come when the server wants an answer: at half of wal_sender_timeout when idle, and while it
            // shuts down, when it waits until our flush position reaches what it sent (walsender.c WalSndDone).
            // So the WAL received is made durable now, as pg_receivewal flushes its file on such a request.
            queue.requestFlush()
          }
        }
        return 'stopping'
      } finally {
        queue.close()
      }
    })()
    const storer = (async () => {
      for (let batch = await queue.takeAll(); batch; batch = await queue.takeAll()) {
        for (const c of batch.chunks) await writer.write(c.walStart, c.data)
        this.sample(writer.receivedLsn)
        const syncPoint = this.o.synchronous || (batch.flushRequested && writer.durableLsn < writer.receivedLsn)
        if (syncPoint) {
          this.inSyncPoint = true
          try {
            await writer.storeSyncPoint()
          } finally {
            this.inSyncPoint = false
          }
        }
        stream.confirmFlushed(writer.durableLsn)
        // Answer a request at once (synchronous mode reports every confirmation immediately anyway).
        if (batch.flushRequested && !this.o.synchronous) stream.sendStatus(false)
      }
    })()
    // A storing failure must not leave the socket loop waiting for WAL: end the connection.
    storer.catch((err) => conn.destroy(err))
    try {
      const [r, s] = await Promise.allSettled([reader, storer])
      if (s.status === 'rejected') throw s.reason
      if (r.status === 'rejected') throw r.reason
      if (r.value === 'ended') return 'ended'
      // Stopping on request: what was received becomes durable before the stream says goodbye.
      await writer.storePartial()
      stream.confirmFlushed(writer.durableLsn)
      await writer.close()
      await stream.stop()
      return 'aborted'
    } finally {
      signal?.removeEventListener('abort', onAbort)
      this.queue = undefined
    }
  }

  #say(level: 'info' | 'warning', text: string, code: WalStreamMessageCode, data: Record<string, unknown>): void {
    this.o.onEvent?.({ type: 'message', operation: 'wal-stream', level, text, code, data })
  }

  #stored(timeline: number, segment: StoredSegment): void {
    const text = segment.partial
      ? `stored partial segment ${segment.name} (${segment.validBytes} bytes)${segment.result === 'exists' ? ', already stored' : ''}`
      : `stored segment ${segment.name}${segment.result === 'exists' ? ' (already stored)' : ''}`
    this.#say('info', text, 'segment-stored', { timeline, ...segment, endLsn: formatLsn(segment.endLsn) })
    this.o.onEvent?.({
      type: 'progress',
      operation: 'wal-stream',
      phase: 'streaming',
      bytesDone: 0,
      bytesTotal: null,
      detail: { durableLsn: formatLsn(segment.endLsn), timeline },
    })
  }

  private sample(lsn: Lsn): void {
    const now = Date.now()
    this.samples.push({ atMs: now, lsn })
    while (this.samples.length > 1 && now - this.samples[0]!.atMs > 15_000) this.samples.shift()
  }
}

/** Lost connections and server restarts: worth another attempt. */
function isTransient(err: unknown): boolean {
  if (err instanceof ConnectionError) return true
  // 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now; class 08 connection exceptions.
  return err instanceof ServerError && (/^57P0[123]$/.test(err.sqlState) || err.sqlState.startsWith('08'))
}

/** How the streamer found where to start, for people. */
function describeSource(s: ResumePoint['source'] | 'reconnect'): string {
  switch (s) {
    case 'catalog':
      return 'after the newest WAL in the repository'
    case 'catalog-gap':
      return 'the first segment missing in the repository after the slot position'
    case 'slot':
      return "the slot's position"
    case 'server':
      return "the server's current position"
    default:
      return s
  }
}
