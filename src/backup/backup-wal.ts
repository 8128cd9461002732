// The WAL of one backup: streamed on its own replication connection into the repository's WAL catalog from the
// start of the backup's first segment, until the backup's end LSN is known and reached, then the partial last
// segment is stored too. The flush position reported to the server follows what is durable (invariant 6).

import { formatLsn, type Lsn, type ReplicationConnection, type ReplicationStream, startReplication } from '../../protocol/index.js'
import { IntegrityError } from '../errors.js'
import type { Repository } from '../repo/index.js'
import { WalSegmentWriter } from '../repo/index.js'

export interface BackupWalOptions {
  slot: string
  systemId: string
  timeline: number
  segmentSizeBytes: number
  /** The backup's start LSN; streaming begins at the start of its segment. */
  startLsn: Lsn
  signal?: AbortSignal
}

export class BackupWal {
  private endLsn: Lsn | undefined
  /** Settles when the WAL up to the end LSN is durable, or when streaming fails. */
  readonly done: Promise<void>

  private constructor(
    private readonly stream: ReplicationStream,
    private readonly writer: WalSegmentWriter,
  ) {
    this.done = this.run()
  }

  static async start(conn: ReplicationConnection, walRepo: Repository, o: BackupWalOptions): Promise<BackupWal> {
    const segStart = o.startLsn - (o.startLsn % BigInt(o.segmentSizeBytes))
    const writer = new WalSegmentWriter(walRepo, {
      systemId: BigInt(o.systemId),
      timeline: o.timeline,
      segmentSizeBytes: o.segmentSizeBytes,
      startLsn: segStart,
      signal: o.signal,
    })
    // transientData: run() is done with an event's bytes when it asks for the next (the writer copies them), so the
    // connection reads into the same memory again. Otherwise every 256 KiB of WAL was new memory, and the end of a
    // backup brings up to a segment at once: the server's switch to the next segment sends the rest of the current one.
    const stream = await startReplication(conn, { slot: o.slot, startLsn: segStart, timeline: o.timeline, transientData: true, signal: o.signal })
    return new BackupWal(stream, writer)
  }

  /** End of the WAL durable in the repository so far. */
  get durableLsn(): Lsn {
    return this.writer.durableLsn
  }

  /** Streams until `endLsn`, stores the last partial segment, and resolves when all of it is durable. */
  async finishAt(endLsn: Lsn): Promise<void> {
    this.endLsn = endLsn
    this.stream.sendStatus(true) // wakes the loop even when no WAL is flowing
    await this.done
  }

  private async run(): Promise<void> {
    const reached = () => this.endLsn !== undefined && this.writer.receivedLsn >= this.endLsn
    for await (const ev of this.stream) {
      if (ev.type === 'xlogdata') {
        await this.writer.write(ev.walStart, ev.data)
        this.stream.confirmFlushed(this.writer.durableLsn)
      }
      if (reached()) break
    }
    if (!reached()) {
      throw new IntegrityError(`WAL streaming ended at ${formatLsn(this.writer.receivedLsn)} before the backup's end`, {
        hint: 'the server may have switched timelines (promotion) during the backup; run the backup again',
      })
    }
    await this.writer.storePartial()
    this.stream.confirmFlushed(this.writer.durableLsn)
  }
}
