// The messages inside CopyData during START_REPLICATION (protocol-replication.html, "START_REPLICATION"):
// server → client XLogData 'w' and PrimaryKeepalive 'k'; client → server StandbyStatusUpdate 'r'.

import { ProtocolError } from '../errors.js'
import type { Lsn } from '../lsn.js'
import { ByteReader } from '../wire/byte-reader.js'

const Tag = { XLogData: 0x77, PrimaryKeepalive: 0x6b, StandbyStatusUpdate: 0x72 } as const

/** Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC). */
const PG_EPOCH_OFFSET_US = 946_684_800_000_000n

export type ReplicationMessage =
  | { type: 'XLogData'; walStart: Lsn; walEnd: Lsn; sentAtUs: bigint; data: Buffer }
  | { type: 'PrimaryKeepalive'; walEnd: Lsn; sentAtUs: bigint; replyRequested: boolean }

export function decodeReplicationMessage(payload: Buffer): ReplicationMessage {
  const r = new ByteReader(payload)
  const tag = r.u8()
  if (tag === Tag.XLogData) {
    // XLogData 'w': Int64 dataStart | Int64 walEnd | Int64 sendTime (µs since 2000-01-01) | Byte[n]
    return { type: 'XLogData', walStart: r.u64(), walEnd: r.u64(), sentAtUs: r.i64(), data: r.rest() }
  }
  if (tag === Tag.PrimaryKeepalive) {
    // Primary keepalive 'k': Int64 walEnd | Int64 sendTime | Byte1 replyRequested
    return { type: 'PrimaryKeepalive', walEnd: r.u64(), sentAtUs: r.i64(), replyRequested: r.u8() === 1 }
  }
  throw new ProtocolError(`unexpected replication message tag 0x${tag.toString(16)}`)
}

export interface StandbyStatus {
  /** Last byte received + 1. */
  written: Lsn
  /** Last byte durably stored + 1; 0 keeps a physical slot where it is. */
  flushed: Lsn
  /** Last byte applied + 1; a backup tool applies nothing and sends 0. */
  applied: Lsn
  replyRequested: boolean
  nowMs?: number
}

/** Standby status update 'r': Int64 write | Int64 flush | Int64 apply | Int64 clientTime | Byte1 replyRequested. */
export function encodeStandbyStatusUpdate(s: StandbyStatus): Buffer {
  const b = Buffer.allocUnsafe(34)
  b[0] = Tag.StandbyStatusUpdate
  b.writeBigUInt64BE(s.written, 1)
  b.writeBigUInt64BE(s.flushed, 9)
  b.writeBigUInt64BE(s.applied, 17)
  b.writeBigInt64BE(BigInt(s.nowMs ?? Date.now()) * 1000n - PG_EPOCH_OFFSET_US, 25)
  b[33] = s.replyRequested ? 1 : 0
  return b
}

/** Converts a PostgreSQL timestamp (µs since 2000-01-01) to a Date. */
export const pgTimestampToDate = (us: bigint): Date => new Date(Number((us + PG_EPOCH_OFFSET_US) / 1000n))
