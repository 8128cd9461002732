// `global/pg_control`: the cluster's control file (ControlFileData, PostgreSQL src/include/catalog/pg_control.h),
// decoded for a 64-bit little-endian server of major 13–19, with its CRC-32C checked.

import { FormatError } from '../errors.js'
import { crc32c } from './crc32c.js'
import type { Lsn } from './lsn.js'
import type { TimelineId } from './wal-names.js'

/** The size of the file on disk (PG_CONTROL_FILE_SIZE); the struct itself is about 300 bytes. */
export const PG_CONTROL_FILE_SIZE_BYTES = 8192

/**
 * Byte offsets of the fields of one PG_CONTROL_VERSION (64-bit, little-endian). The fields up to
 * checkPointCopy.fullPageWrites sit at the same place in every version; the rest moved in 18 (default_char_signedness
 * before the nonce) and in 19 (CheckPoint gained logicalDecodingEnabled and a 64-bit nextMultiOffset;
 * slru_pages_per_segment and data_checksum_version_init were added).
 */
interface ControlLayout {
  nextXid: number
  nextOid: number
  nextMulti: number
  /** 19 widened MultiXactOffset to 64 bits. */
  nextMultiOffset: { off: number; bytes: 4 | 8 }
  oldestXid: number
  checkpointTime: number
  oldestCommitTsXid: number
  oldestActiveXid: number
  /** unloggedLSN: the fields from here to track_commit_timestamp keep their relative places. */
  unloggedLsn: number
  maxAlign: number
  floatFormat: number
  blcksz: number
  relsegSize: number
  /** 19+. */
  slruPagesPerSegment?: number
  /** xlog_blcksz; xlog_seg_size, nameDataLen, indexMaxKeys, toast_max_chunk_size and loblksize follow it. */
  xlogBlcksz: number
  float8ByVal: number
  /** 19+: data_checksum_version at initdb time. */
  dataChecksumVersionInit?: number
  dataChecksumVersion: number
  /** 18+. */
  defaultCharSignedness?: number
  /** 19+: CheckPoint.logicalDecodingEnabled. */
  logicalDecodingEnabled?: number
  crc: number
}

const LAYOUT_13: ControlLayout = {
  nextXid: 64,
  nextOid: 72,
  nextMulti: 76,
  nextMultiOffset: { off: 80, bytes: 4 },
  oldestXid: 84,
  checkpointTime: 104,
  oldestCommitTsXid: 112,
  oldestActiveXid: 120,
  unloggedLsn: 128,
  maxAlign: 204,
  floatFormat: 208,
  blcksz: 216,
  relsegSize: 220,
  xlogBlcksz: 224,
  float8ByVal: 248,
  dataChecksumVersion: 252,
  crc: 288,
}

/**
 * The layout of each PG_CONTROL_VERSION this module can read: 1300 (13–16), 1700 (17; the same layout, confirmed
 * on a real 17.10 file read by pg_controldata 15), 1800 (18), 1905 (19; offsets taken with offsetof() over the
 * pg_control.h of Debian's postgresql-server-dev-19 19~rc1 and confirmed on a real 19rc1 file).
 */
const LAYOUTS: Readonly<Record<number, ControlLayout>> = {
  1300: LAYOUT_13,
  1700: LAYOUT_13,
  1800: { ...LAYOUT_13, defaultCharSignedness: 256, crc: 292 },
  1905: {
    nextXid: 72,
    nextOid: 80,
    nextMulti: 84,
    nextMultiOffset: { off: 88, bytes: 8 },
    oldestXid: 96,
    checkpointTime: 112,
    oldestCommitTsXid: 120,
    oldestActiveXid: 128,
    unloggedLsn: 136,
    maxAlign: 212,
    floatFormat: 216,
    blcksz: 224,
    relsegSize: 228,
    slruPagesPerSegment: 232,
    xlogBlcksz: 236,
    float8ByVal: 260,
    dataChecksumVersionInit: 264,
    dataChecksumVersion: 268,
    defaultCharSignedness: 272,
    logicalDecodingEnabled: 64,
    crc: 308,
  },
}

/** DBState names (pg_control.h), indexed by value. */
export const DB_STATE_NAMES = [
  'starting up',
  'shut down',
  'shut down in recovery',
  'shutting down',
  'in crash recovery',
  'in archive recovery',
  'in production',
] as const

/** WalLevel names (xlog.h), indexed by value. */
export const WAL_LEVEL_NAMES = ['minimal', 'replica', 'logical'] as const

/** floatFormat: a known double that catches a foreign byte order or float format. */
const FLOAT_FORMAT = 1234567.0

/** The decoded control file. LSNs and 64-bit ids are bigint; times are Unix seconds. */
export interface ControlFile {
  systemId: bigint
  /** PG_CONTROL_VERSION: 1300 (13–16), 1700 (17), 1800 (18) or 1905 (19). */
  controlVersion: number
  /** CATALOG_VERSION_NO, e.g. 202406281 for 17 (the `PG_<maj>_<cat>` tablespace directory uses it). */
  catalogVersion: number
  /** DBState value; see {@link DB_STATE_NAMES}. */
  state: number
  stateName: string
  /** When pg_control was last updated (Unix seconds). */
  modifiedAtSec: number
  /** LSN of the latest checkpoint record. */
  checkpointLsn: Lsn
  /** Redo pointer of the latest checkpoint. */
  redoLsn: Lsn
  timeline: TimelineId
  prevTimeline: TimelineId
  fullPageWrites: boolean
  /** FullTransactionId of the next transaction (epoch << 32 | xid). */
  nextFullXid: bigint
  nextOid: number
  nextMultiXactId: number
  nextMultiOffset: number
  oldestXid: number
  oldestXidDbOid: number
  oldestMultiXactId: number
  oldestMultiDbOid: number
  /** Time of the latest checkpoint (Unix seconds). */
  checkpointTimeSec: number
  oldestCommitTsXid: number
  newestCommitTsXid: number
  oldestActiveXid: number
  unloggedLsn: Lsn
  minRecoveryPoint: Lsn
  minRecoveryPointTimeline: TimelineId
  backupStartPoint: Lsn
  backupEndPoint: Lsn
  backupEndRequired: boolean
  /** wal_level of the server when pg_control was written; see {@link WAL_LEVEL_NAMES}. */
  walLevel: number
  walLevelName: string
  walLogHints: boolean
  maxConnections: number
  maxWorkerProcesses: number
  maxWalSenders: number
  maxPreparedXacts: number
  maxLocksPerXact: number
  trackCommitTimestamp: boolean
  maxAlign: number
  /** BLCKSZ. */
  blockSizeBytes: number
  /** RELSEG_SIZE, in blocks. */
  relsegSizeBlocks: number
  /** XLOG_BLCKSZ. */
  walBlockSizeBytes: number
  /** wal_segment_size. */
  walSegSizeBytes: number
  nameDataLen: number
  indexMaxKeys: number
  toastMaxChunkSize: number
  largeObjectChunkSize: number
  float8ByVal: boolean
  /** 0 when data checksums are off, else the checksum version (1). */
  dataChecksumVersion: number
  /** PostgreSQL 19+: data_checksum_version as initdb set it (undefined before 19). */
  dataChecksumVersionInit: number | undefined
  /** PostgreSQL 19+: SLRU_PAGES_PER_SEGMENT of the build (undefined before 19). */
  slruPagesPerSegment: number | undefined
  /** PostgreSQL 19+: whether logical decoding was enabled at the latest checkpoint (undefined before 19). */
  logicalDecodingEnabled: boolean | undefined
  /** PostgreSQL 18+: whether `char` is signed by default on the cluster (undefined before 18). */
  defaultCharSignedness: boolean | undefined
  /** The stored CRC-32C (it was checked). */
  crc: number
}

/**
 * Decodes pg_control. Layout (64-bit, little-endian; offsets measured on real 14–19 files; see {@link LAYOUTS}):
 * ```
 *   0 u64 system_identifier        8 u32 pg_control_version    12 u32 catalog_version_no
 *  16 i32 state                   24 i64 time                 32 u64 checkPoint
 *  40 CheckPoint checkPointCopy (88 bytes; 96 in 19):
 *     40 u64 redo  48 u32 ThisTimeLineID  52 u32 PrevTimeLineID  56 u8 fullPageWrites  (18+: 60 i32 wal_level)
 *     13–18: 64 u64 nextXid  72 u32 nextOid  76 u32 nextMulti  80 u32 nextMultiOffset  84 u32 oldestXid
 *            88 u32 oldestXidDB  92 u32 oldestMulti  96 u32 oldestMultiDB  104 i64 time
 *            112 u32 oldestCommitTsXid  116 u32 newestCommitTsXid  120 u32 oldestActiveXid
 *     19:    64 u8 logicalDecodingEnabled  72 u64 nextXid  80 u32 nextOid  84 u32 nextMulti
 *            88 u64 nextMultiOffset  96 u32 oldestXid ... 112 i64 time ... 128 u32 oldestActiveXid
 * 13–18 (19: +8) 128 u64 unloggedLSN  136 u64 minRecoveryPoint  144 u32 minRecoveryPointTLI
 * 152 u64 backupStartPoint  160 u64 backupEndPoint  168 u8 backupEndRequired  172 i32 wal_level  176 u8 wal_log_hints
 * 180 i32 MaxConnections  184 max_worker_processes  188 max_wal_senders  192 max_prepared_xacts
 * 196 max_locks_per_xact  200 u8 track_commit_timestamp  204 u32 maxAlign  208 f64 floatFormat
 * 216 u32 blcksz  220 relseg_size  (19: 232 slru_pages_per_segment)  224 xlog_blcksz  228 xlog_seg_size
 * 232 nameDataLen  236 indexMaxKeys  240 toast_max_chunk_size  244 loblksize  248 u8 float8ByVal
 * 252 u32 data_checksum_version
 * 13–17 (versions 1300, 1700): 256 mock_authentication_nonce[32], 288 u32 crc
 * 18:    256 u8 default_char_signedness, 257 mock_authentication_nonce[32], 292 u32 crc
 * 19:    (from maxAlign on, +8; then +12 from xlog_blcksz) 260 u8 float8ByVal 264 u32 data_checksum_version_init
 *        268 u32 data_checksum_version  272 u8 default_char_signedness  273 nonce[32]  308 u32 crc
 * ```
 * The CRC is CRC-32C over the bytes before it.
 * @throws FormatError when the file is too short, the version is unknown, the CRC does not match, or the file
 *   comes from a server with another byte order or float format
 */
export function decodeControlFile(bytes: Uint8Array): ControlFile {
  const tooShort = () => new FormatError(`pg_control is too short: ${bytes.byteLength} bytes`, { hint: `pg_control is ${PG_CONTROL_FILE_SIZE_BYTES} bytes` })
  if (bytes.byteLength < 16) throw tooShort()
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const u32 = (off: number): number => v.getUint32(off, true)
  const i32 = (off: number): number => v.getInt32(off, true)
  const u64 = (off: number): bigint => v.getBigUint64(off, true)
  const bool = (off: number): boolean => v.getUint8(off) !== 0
  const i64sec = (off: number): number => Number(v.getBigInt64(off, true))

  const controlVersion = u32(8)
  const L = LAYOUTS[controlVersion]
  if (L === undefined) {
    const swapped = v.getUint32(8, false)
    throw new FormatError(`unsupported pg_control version ${controlVersion}`, {
      hint:
        LAYOUTS[swapped] !== undefined
          ? 'the file was written by a big-endian server, which pgkeep does not support'
          : 'pgkeep reads pg_control of PostgreSQL 13 to 19',
    })
  }
  if (bytes.byteLength < L.crc + 4) throw tooShort()
  const stored = u32(L.crc)
  const computed = crc32c(bytes.subarray(0, L.crc))
  if (stored !== computed) {
    throw new FormatError(`pg_control CRC mismatch: stored ${stored.toString(16).padStart(8, '0')}, computed ${computed.toString(16).padStart(8, '0')}`, {
      hint: 'the file is corrupt or was copied while being written',
    })
  }
  if (v.getFloat64(L.floatFormat, true) !== FLOAT_FORMAT) {
    throw new FormatError('pg_control float format check failed', {
      hint: 'the file was written by a server with another float format or alignment, which pgkeep does not support',
    })
  }
  const state = i32(16)
  // From unloggedLSN to track_commit_timestamp the fields keep their relative places in every version.
  const u = L.unloggedLsn
  const walLevel = i32(u + 44)
  const x = L.xlogBlcksz
  return {
    systemId: u64(0),
    controlVersion,
    catalogVersion: u32(12),
    state,
    stateName: DB_STATE_NAMES[state] ?? `unknown (${state})`,
    modifiedAtSec: i64sec(24),
    checkpointLsn: u64(32),
    redoLsn: u64(40),
    timeline: u32(48),
    prevTimeline: u32(52),
    fullPageWrites: bool(56),
    nextFullXid: u64(L.nextXid),
    nextOid: u32(L.nextOid),
    nextMultiXactId: u32(L.nextMulti),
    nextMultiOffset: L.nextMultiOffset.bytes === 8 ? Number(u64(L.nextMultiOffset.off)) : u32(L.nextMultiOffset.off),
    oldestXid: u32(L.oldestXid),
    oldestXidDbOid: u32(L.oldestXid + 4),
    oldestMultiXactId: u32(L.oldestXid + 8),
    oldestMultiDbOid: u32(L.oldestXid + 12),
    checkpointTimeSec: i64sec(L.checkpointTime),
    oldestCommitTsXid: u32(L.oldestCommitTsXid),
    newestCommitTsXid: u32(L.oldestCommitTsXid + 4),
    oldestActiveXid: u32(L.oldestActiveXid),
    unloggedLsn: u64(u),
    minRecoveryPoint: u64(u + 8),
    minRecoveryPointTimeline: u32(u + 16),
    backupStartPoint: u64(u + 24),
    backupEndPoint: u64(u + 32),
    backupEndRequired: bool(u + 40),
    walLevel,
    walLevelName: WAL_LEVEL_NAMES[walLevel] ?? `unknown (${walLevel})`,
    walLogHints: bool(u + 48),
    maxConnections: i32(u + 52),
    maxWorkerProcesses: i32(u + 56),
    maxWalSenders: i32(u + 60),
    maxPreparedXacts: i32(u + 64),
    maxLocksPerXact: i32(u + 68),
    trackCommitTimestamp: bool(u + 72),
    maxAlign: u32(L.maxAlign),
    blockSizeBytes: u32(L.blcksz),
    relsegSizeBlocks: u32(L.relsegSize),
    walBlockSizeBytes: u32(x),
    walSegSizeBytes: u32(x + 4),
    nameDataLen: u32(x + 8),
    indexMaxKeys: u32(x + 12),
    toastMaxChunkSize: u32(x + 16),
    largeObjectChunkSize: u32(x + 20),
    float8ByVal: bool(L.float8ByVal),
    dataChecksumVersion: u32(L.dataChecksumVersion),
    dataChecksumVersionInit: L.dataChecksumVersionInit === undefined ? undefined : u32(L.dataChecksumVersionInit),
    slruPagesPerSegment: L.slruPagesPerSegment === undefined ? undefined : u32(L.slruPagesPerSegment),
    logicalDecodingEnabled: L.logicalDecodingEnabled === undefined ? undefined : bool(L.logicalDecodingEnabled),
    defaultCharSignedness: L.defaultCharSignedness === undefined ? undefined : bool(L.defaultCharSignedness),
    crc: stored,
  }
}
