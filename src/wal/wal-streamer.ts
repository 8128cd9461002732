// `wal stream`: continuous WAL archiving from a physical replication slot into the repository. A socket loop and a
// storing loop joined by a bounded queue; flush reports only for durable WAL (invariant 6); timeline switches
// followed; resumes after the newest stored WAL; reconnects after a lost connection; stops cleanly on abort, and
// at once (with the lock's LockedError, reporting nothing more) when its repository lock is lost.

import {
  ConnectionError,
  connect,
  createReplicationSlot,
  identifySystem,
  type Lsn,
  readReplicationSlot,
  type ReplicationConnection,
  type ReplicationStream,
  type ResolveOptions,
  ServerError,
  show,
  startReplication,
  timelineHistory,
} from '../../protocol/index.js'
import { AbortedError, UsageError } from '../errors.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { parseSizeSetting } from '../pg/lsn.js'
import { anySignal } from '../storage/abort.js'
import type { LockHoldState, LockTiming, RepoLock } from '../repo/index.js'
import type { Repository } from '../repo/index.js'
import { historyKey, readWalRecord, type WalHistoryRecord, writeWalRecord } from '../repo/index.js'
import { findResumePoint, type ResumePoint } from './resume-point.js'
import { type StoredSegment, WalSegmentWriter } from '../repo/index.js'
import { WalQueue } from './wal-queue.js'

/** Options of {@link WalStreamer}. */
export interface WalStreamOptions {
  repo: Repository
  /** libpq connection string or URI (the replication role); undefined uses PG* variables and defaults. */
  conninfo?: string
  /** Environment for PG* variables and ~/.pgpass, and command-line overrides (-h, -p, -U). */
  connection?: ResolveOptions
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
  /** Stops streaming: received WAL is stored (the last segment as partial), then run() resolves. */
  signal?: AbortSignal
  onEvent?: (e: WalStreamEvent) => void
}

/** What the streamer reports while it runs (the CLI prints these). */
export type WalStreamEvent =
  | {
      type: 'started'
      systemId: string
      timeline: number
      startLsn: Lsn
      resumedFrom: ResumePoint['source'] | 'reconnect'
      slot: string
      serverVersion: string
      applicationName: string
    }
  | { type: 'slot-created'; slot: string }
  | { type: 'stored'; timeline: number; segment: StoredSegment }
  | { type: 'history-stored'; timeline: number; result: 'stored' | 'exists' }
  | { type: 'timeline-switch'; from: number; to: number; switchLsn: Lsn }
  | { type: 'reconnecting'; error: Error; delayMs: number }
  /** The repository lock could not be refreshed (at-risk: storing waits) or is held again; losing it ends run(). */
  | { type: 'lock'; state: Exclude<LockHoldState, 'lost' | 'released'>; message: string }

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
        if (c.state === 'held' || c.state === 'at-risk') this.o.onEvent?.({ type: 'lock', state: c.state, message: c.message })
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
          this.o.onEvent?.({ type: 'reconnecting', error: err as Error, delayMs })
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
    const conn = await connect(this.o.conninfo, {
      ...this.o.connection,
      fallbackApplicationName: this.o.connection?.fallbackApplicationName ?? this.o.slot,
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
          this.o.onEvent?.({
            type: 'started',
            systemId: id.systemId.toString(),
            timeline: writer.timeline,
            startLsn: writer.receivedLsn,
            resumedFrom,
            slot: this.o.slot,
            serverVersion: conn.parameters.get('server_version') ?? String(conn.serverVersionNum),
            applicationName: conn.parameters.get('application_name') ?? this.o.slot,
          })
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
        this.o.onEvent?.({ type: 'timeline-switch', from: writer.timeline, to: end.nextTimeline, switchLsn: end.nextTimelineStartLsn })
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
        if (!this.inSyncPoint) this.o.onEvent?.({ type: 'stored', timeline, segment })
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
        this.o.onEvent?.({ type: 'slot-created', slot })
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
        this.o.onEvent?.({ type: 'slot-created', slot })
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
    this.o.onEvent?.({ type: 'history-stored', timeline, result })
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

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new AbortedError('aborted'))
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = () => {
      clearTimeout(t)
      reject(signal!.reason ?? new AbortedError('aborted'))
    }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
