// The replication protocol client: the only entry src/ may import from protocol/.
// Connect (TCP, Unix socket, TLS; trust, password, md5, SCRAM), then run replication commands on the connection.

export * from './errors.js'
export { type Lsn, formatLsn, parseLsn, tryParseLsn, isLsn } from './lsn.js'
export {
  type ConnectOptions,
  type HostPort,
  type ResolveOptions,
  type SslMode,
  SSL_MODES,
  describeHost,
  lookupPgpass,
  parseConninfo,
  resolveConnectOptions,
} from './session/conninfo.js'
export { ReplicationConnection, type OpenOptions, type ResultSet } from './session/connection.js'
export {
  type ResultLimits,
  MAX_TIMELINE_HISTORY_BYTES,
  SMALL_RESULT,
  TABLESPACE_LIST_RESULT,
  TIMELINE_HISTORY_RESULT,
} from './session/result-limits.js'
export { FRAME_LIMITS } from './wire/frame-reader.js'
export { identifySystem, show, timelineHistory, type SystemIdentity, type TimelineHistoryFile } from './commands/system.js'
export {
  createReplicationSlot,
  dropReplicationSlot,
  readReplicationSlot,
  type CreateSlotOptions,
  type CreatedSlot,
  type SlotInfo,
} from './commands/slots.js'
export {
  startReplication,
  ReplicationStream,
  type ReplicationEnd,
  type ReplicationEvent,
  type StartReplicationOptions,
} from './commands/start-replication.js'
export {
  baseBackup,
  baseBackupCommand,
  MANIFEST_CHECKSUM_ALGORITHMS,
  type BaseBackupEvent,
  type BaseBackupOptions,
  type ManifestChecksumAlgorithm,
  type TablespaceRow,
} from './commands/base-backup.js'
export { uploadManifest } from './commands/upload-manifest.js'
export { pgTimestampToDate } from './messages/replication.js'

import { type OpenOptions, ReplicationConnection } from './session/connection.js'
import { type ResolveOptions, resolveConnectOptions } from './session/conninfo.js'

/** Resolves a conninfo string (URI or key=value) like libpq and opens a physical replication connection. */
export function connect(conninfo: string | undefined, o: ResolveOptions & OpenOptions = {}): Promise<ReplicationConnection> {
  return ReplicationConnection.open(resolveConnectOptions(conninfo, o), o)
}
