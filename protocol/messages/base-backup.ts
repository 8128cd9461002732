// The typed CopyData messages of BASE_BACKUP on PostgreSQL 15+ (protocol-replication.html, "BASE_BACKUP"):
// 'n' new archive, 'd' archive or manifest data, 'p' progress, 'm' manifest follows.

import { ProtocolError } from '../errors.js'
import { ByteReader } from '../wire/byte-reader.js'

export type BaseBackupMessage =
  | { type: 'NewArchive'; name: string; location: string }
  | { type: 'Data'; data: Buffer }
  | { type: 'Progress'; bytesDone: bigint }
  | { type: 'ManifestFollows' }

export function decodeBaseBackupMessage(payload: Buffer): BaseBackupMessage {
  switch (payload[0]) {
    case 0x64: // 'd' Byte[n]
      return { type: 'Data', data: payload.subarray(1) }
    case 0x6e: {
      // 'n' String archive name | String tablespace location ('' for the main data directory)
      const r = new ByteReader(payload.subarray(1))
      return { type: 'NewArchive', name: r.cstring(), location: r.cstring() }
    }
    case 0x70: // 'p' Int64 bytes done, cumulative over the whole backup
      return { type: 'Progress', bytesDone: new ByteReader(payload.subarray(1)).i64() }
    case 0x6d: // 'm'
      return { type: 'ManifestFollows' }
    default:
      throw new ProtocolError(`unexpected BASE_BACKUP message tag 0x${(payload[0] ?? 0).toString(16)}`)
  }
}
