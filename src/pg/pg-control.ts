// `global/pg_control`: the cluster's control file (ControlFileData, PostgreSQL src/include/catalog/pg_control.h),
// decoded for a 64-bit little-endian server of major 13–18, with its CRC-32C checked.

import { FormatError } from '../errors.js'
import { crc32c } from './crc32c.js'
import type { Lsn } from './lsn.js'
import type { TimelineId } from './wal-names.js'

/** The size of the file on disk (PG_CONTROL_FILE_SIZE); the struct itself is about 300 bytes. */
export const PG_CONTROL_FILE_SIZE_BYTES = 8192

/**
 * Where the CRC sits for each PG_CONTROL_VERSION this module can read: 1300 (13–16), 1700 (17; the same layout,
 * confirmed on a real 17.10 file read by pg_controldata 15), 1800 (18).
 */
const CRC_OFFSET_BY_VERSION: Readonly<Record<number, number>> = { 1300: 288, 1700: 288, 1800: 292 }

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
  /** PG_CONTROL_VERSION: 1300 (13–16), 1700 (17) or 1800 (18). */
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
  /** PostgreSQL 18+: whether `char` is signed by default on the cluster (undefined before 18). */
  defaultCharSignedness: boolean | undefined
  /** The stored CRC-32C (it was checked). */
  crc: number
}

/**
 * Decodes pg_control. Layout (64-bit, little-endian; offsets measured on real 14–18 files):
 * ```
 *   0 u64 system_identifier        8 u32 pg_control_version    12 u32 catalog_version_no
 *  16 i32 state                   24 i64 time                 32 u64 checkPoint
 *  40 CheckPoint checkPointCopy (88 bytes):
 *     40 u64 redo  48 u32 ThisTimeLineID  52 u32 PrevTimeLineID  56 u8 fullPageWrites  (18: 60 i32 wal_level)
 *     64 u64 nextXid  72 u32 nextOid  76 u32 nextMulti  80 u32 nextMultiOffset  84 u32 oldestXid
 *     88 u32 oldestXidDB  92 u32 oldestMulti  96 u32 oldestMultiDB  104 i64 time
 *    112 u32 oldestCommitTsXid  116 u32 newestCommitTsXid  120 u32 oldestActiveXid
 * 128 u64 unloggedLSN  136 u64 minRecoveryPoint  144 u32 minRecoveryPointTLI  152 u64 backupStartPoint
 * 160 u64 backupEndPoint  168 u8 backupEndRequired  172 i32 wal_level  176 u8 wal_log_hints
 * 180 i32 MaxConnections  184 max_worker_processes  188 max_wal_senders  192 max_prepared_xacts
 * 196 max_locks_per_xact  200 u8 track_commit_timestamp  204 u32 maxAlign  208 f64 floatFormat
 * 216 u32 blcksz  220 relseg_size  224 xlog_blcksz  228 xlog_seg_size  232 nameDataLen  236 indexMaxKeys
 * 240 toast_max_chunk_size  244 loblksize  248 u8 float8ByVal  252 u32 data_checksum_version
 * 13–17 (versions 1300, 1700): 256 mock_authentication_nonce[32], 288 u32 crc
 * 18:    256 u8 default_char_signedness, 257 mock_authentication_nonce[32], 292 u32 crc
 * ```
 * The CRC is CRC-32C over the bytes before it.
 * @throws FormatError when the file is too short, the version is unknown, the CRC does not match, or the file
 *   comes from a server with another byte order or float format
 */
export function decodeControlFile(bytes: Uint8Array): ControlFile {
  if (bytes.byteLength < 296) {
    throw new FormatError(`pg_control is too short: ${bytes.byteLength} bytes`, {
      hint: `pg_control is ${PG_CONTROL_FILE_SIZE_BYTES} bytes`,
    })
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const u32 = (off: number): number => v.getUint32(off, true)
  const i32 = (off: number): number => v.getInt32(off, true)
  const u64 = (off: number): bigint => v.getBigUint64(off, true)
  const bool = (off: number): boolean => v.getUint8(off) !== 0
  const i64sec = (off: number): number => Number(v.getBigInt64(off, true))

  const controlVersion = u32(8)
  const crcOffset = CRC_OFFSET_BY_VERSION[controlVersion]
  if (crcOffset === undefined) {
    const swapped = v.getUint32(8, false)
    throw new FormatError(`unsupported pg_control version ${controlVersion}`, {
      hint:
        CRC_OFFSET_BY_VERSION[swapped] !== undefined
          ? 'the file was written by a big-endian server, which pgkeep does not support'
          : 'pgkeep reads pg_control of PostgreSQL 13 to 18',
    })
  }
  const stored = u32(crcOffset)
  const computed = crc32c(bytes.subarray(0, crcOffset))
  if (stored !== computed) {
    throw new FormatError(
      `pg_control CRC mismatch: stored ${stored.toString(16).padStart(8, '0')}, computed ${computed.toString(16).padStart(8, '0')}`,
      { hint: 'the file is corrupt or was copied while being written' },
    )
  }
  if (v.getFloat64(208, true) !== FLOAT_FORMAT) {
    throw new FormatError('pg_control float format check failed', {
      hint: 'the file was written by a server with another float format or alignment, which pgkeep does not support',
    })
  }
  const state = i32(16)
  const walLevel = i32(172)
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
    nextFullXid: u64(64),
    nextOid: u32(72),
    nextMultiXactId: u32(76),
    nextMultiOffset: u32(80),
    oldestXid: u32(84),
    oldestXidDbOid: u32(88),
    oldestMultiXactId: u32(92),
    oldestMultiDbOid: u32(96),
    checkpointTimeSec: i64sec(104),
    oldestCommitTsXid: u32(112),
    newestCommitTsXid: u32(116),
    oldestActiveXid: u32(120),
    unloggedLsn: u64(128),
    minRecoveryPoint: u64(136),
    minRecoveryPointTimeline: u32(144),
    backupStartPoint: u64(152),
    backupEndPoint: u64(160),
    backupEndRequired: bool(168),
    walLevel,
    walLevelName: WAL_LEVEL_NAMES[walLevel] ?? `unknown (${walLevel})`,
    walLogHints: bool(176),
    maxConnections: i32(180),
    maxWorkerProcesses: i32(184),
    maxWalSenders: i32(188),
    maxPreparedXacts: i32(192),
    maxLocksPerXact: i32(196),
    trackCommitTimestamp: bool(200),
    maxAlign: u32(204),
    blockSizeBytes: u32(216),
    relsegSizeBlocks: u32(220),
    walBlockSizeBytes: u32(224),
    walSegSizeBytes: u32(228),
    nameDataLen: u32(232),
    indexMaxKeys: u32(236),
    toastMaxChunkSize: u32(240),
    largeObjectChunkSize: u32(244),
    float8ByVal: bool(248),
    dataChecksumVersion: u32(252),
    defaultCharSignedness: controlVersion >= 1800 ? bool(256) : undefined,
    crc: stored,
  }
}
