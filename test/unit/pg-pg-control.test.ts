// src/pg/pg-control.ts against real pg_control files of PostgreSQL 14–19, compared with what each server reported
// through pg_control_system/checkpoint/init/recovery() at the moment the file was copied, and (14–17) with
// pg_controldata 15's reading of the same file, (19) with pg_controldata 19's.

import { describe, expect, it } from 'vitest'
import { FormatError } from '../../src/errors.js'
import { crc32c } from '../../src/pg/crc32c.js'
import { parseLsn } from '../../src/pg/lsn.js'
import { decodeControlFile } from '../../src/pg/pg-control.js'
import { MAJORS, controldata, facts, fixture, need } from '../fixtures/pg/fixtures.js'

const bool = (v: string): boolean => v === 't' || v === 'on' || v === 'yes'

describe('decodeControlFile', () => {
  for (const major of MAJORS) {
    it(`PostgreSQL ${major}: matches the server's own view`, () => {
      const f = facts(major)
      const c = decodeControlFile(fixture(`pg_control-${major}.gz`))
      expect(c.systemId).toBe(BigInt(need(f, 'system_identifier')))
      expect(c.systemId > BigInt(Number.MAX_SAFE_INTEGER)).toBe(true)
      expect(c.controlVersion).toBe(Number(need(f, 'pg_control_version')))
      // protocol.md said 1300 for 13–17: a real 17.10 says 1700.
      expect(c.controlVersion).toBe(major >= 19 ? 1905 : major === 18 ? 1800 : major === 17 ? 1700 : 1300)
      expect(c.catalogVersion).toBe(Number(need(f, 'catalog_version_no')))
      expect(`PG_${major}_${c.catalogVersion}`).toBe(need(f, 'tablespace_dir'))
      expect(c.modifiedAtSec).toBe(Date.parse(need(f, 'pg_control_last_modified').replace(' ', 'T').replace('+00', 'Z')) / 1000)
      expect(c.checkpointLsn).toBe(parseLsn(need(f, 'checkpoint_lsn')))
      expect(c.redoLsn).toBe(parseLsn(need(f, 'redo_lsn')))
      expect(c.timeline).toBe(Number(need(f, 'timeline_id')))
      expect(c.prevTimeline).toBe(Number(need(f, 'prev_timeline_id')))
      expect(c.fullPageWrites).toBe(bool(need(f, 'full_page_writes')))
      const [epoch, xid] = need(f, 'next_xid').split(':').map(BigInt)
      expect(c.nextFullXid).toBe((epoch! << 32n) | xid!)
      expect(c.nextOid).toBe(Number(need(f, 'next_oid')))
      expect(c.nextMultiXactId).toBe(Number(need(f, 'next_multixact_id')))
      expect(c.nextMultiOffset).toBe(Number(need(f, 'next_multi_offset')))
      expect(c.oldestXid).toBe(Number(need(f, 'oldest_xid')))
      expect(c.oldestXidDbOid).toBe(Number(need(f, 'oldest_xid_dbid')))
      expect(c.oldestActiveXid).toBe(Number(need(f, 'oldest_active_xid')))
      expect(c.oldestMultiXactId).toBe(Number(need(f, 'oldest_multi_xid')))
      expect(c.oldestMultiDbOid).toBe(Number(need(f, 'oldest_multi_dbid')))
      expect(c.oldestCommitTsXid).toBe(Number(need(f, 'oldest_commit_ts_xid')))
      expect(c.newestCommitTsXid).toBe(Number(need(f, 'newest_commit_ts_xid')))
      expect(c.checkpointTimeSec).toBe(Date.parse(need(f, 'checkpoint_time').replace(' ', 'T').replace('+00', 'Z')) / 1000)
      expect(c.minRecoveryPoint).toBe(parseLsn(need(f, 'min_recovery_end_lsn')))
      expect(c.minRecoveryPointTimeline).toBe(Number(need(f, 'min_recovery_end_timeline')))
      expect(c.backupStartPoint).toBe(parseLsn(need(f, 'backup_start_lsn')))
      expect(c.backupEndPoint).toBe(parseLsn(need(f, 'backup_end_lsn')))
      expect(c.backupEndRequired).toBe(bool(need(f, 'end_of_backup_record_required')))
      expect(c.maxAlign).toBe(Number(need(f, 'max_data_alignment')))
      expect(c.blockSizeBytes).toBe(Number(need(f, 'database_block_size')))
      expect(c.relsegSizeBlocks).toBe(Number(need(f, 'blocks_per_segment')))
      expect(c.walBlockSizeBytes).toBe(Number(need(f, 'wal_block_size')))
      expect(c.walSegSizeBytes).toBe(Number(need(f, 'bytes_per_wal_segment')))
      expect(c.nameDataLen).toBe(Number(need(f, 'max_identifier_length')))
      expect(c.indexMaxKeys).toBe(Number(need(f, 'max_index_columns')))
      expect(c.toastMaxChunkSize).toBe(Number(need(f, 'max_toast_chunk_size')))
      expect(c.largeObjectChunkSize).toBe(Number(need(f, 'large_object_chunk_size')))
      expect(c.float8ByVal).toBe(bool(need(f, 'float8_pass_by_value')))
      expect(c.dataChecksumVersion).toBe(Number(need(f, 'data_page_checksum_version')))
      expect(c.walLevelName).toBe(need(f, 'wal_level'))
      // The server was running when the file was copied.
      expect(c.stateName).toBe('in production')
      if (major >= 18) expect(c.defaultCharSignedness).toBe(bool(need(f, 'default_char_signedness')))
      else expect(c.defaultCharSignedness).toBeUndefined()
      if (major >= 19) {
        expect(c.logicalDecodingEnabled).toBe(bool(need(f, 'logical_decoding')))
        expect(c.dataChecksumVersionInit).toBe(1)
      } else {
        expect(c.logicalDecodingEnabled).toBeUndefined()
        expect(c.dataChecksumVersionInit).toBeUndefined()
        expect(c.slruPagesPerSegment).toBeUndefined()
      }
    })
  }

  for (const major of MAJORS.filter((m) => m !== 18)) {
    it(`PostgreSQL ${major}: matches pg_controldata (fields SQL does not show)`, () => {
      const d = controldata(major)
      const c = decodeControlFile(fixture(`pg_control-${major}.gz`))
      expect(c.systemId.toString()).toBe(need(d, 'Database system identifier'))
      expect(c.stateName).toBe(need(d, 'Database cluster state'))
      expect(c.walLevelName).toBe(need(d, 'wal_level setting'))
      expect(c.walLogHints).toBe(bool(need(d, 'wal_log_hints setting')))
      expect(c.maxConnections).toBe(Number(need(d, 'max_connections setting')))
      expect(c.maxWorkerProcesses).toBe(Number(need(d, 'max_worker_processes setting')))
      expect(c.maxWalSenders).toBe(Number(need(d, 'max_wal_senders setting')))
      expect(c.maxPreparedXacts).toBe(Number(need(d, 'max_prepared_xacts setting')))
      expect(c.maxLocksPerXact).toBe(Number(need(d, 'max_locks_per_xact setting')))
      expect(c.trackCommitTimestamp).toBe(bool(need(d, 'track_commit_timestamp setting')))
      expect(c.unloggedLsn).toBe(parseLsn(need(d, 'Fake LSN counter for unlogged rels')))
      expect(c.walSegSizeBytes).toBe(Number(need(d, 'Bytes per WAL segment')))
      expect(c.largeObjectChunkSize).toBe(Number(need(d, 'Size of a large-object chunk')))
      expect(c.dataChecksumVersion).toBe(Number(need(d, 'Data page checksum version')))
      if (major >= 19) {
        expect(c.slruPagesPerSegment).toBe(Number(need(d, 'Pages per SLRU segment')))
        expect(c.logicalDecodingEnabled).toBe(need(d, "Latest checkpoint's logical decoding") === 'on')
        expect(c.nextMultiOffset).toBe(Number(need(d, "Latest checkpoint's NextMultiOffset")))
      }
    })
  }

  it('rejects a bad CRC, an unknown version, a big-endian file and a short file', () => {
    const good = fixture('pg_control-15.gz')
    const flipped = Uint8Array.from(good)
    flipped[40] = flipped[40]! ^ 1
    expect(() => decodeControlFile(flipped)).toThrow(/CRC mismatch/)
    const v = new DataView(flipped.buffer)
    // A version this module does not know, with a matching CRC at the 13–17 offset.
    const unknown = Uint8Array.from(good)
    new DataView(unknown.buffer).setUint32(8, 1201, true)
    new DataView(unknown.buffer).setUint32(288, crc32c(unknown.subarray(0, 288)), true)
    expect(() => decodeControlFile(unknown)).toThrow(/unsupported pg_control version 1201/)
    v.setUint32(8, 1300, false)
    try {
      decodeControlFile(flipped)
      expect.unreachable()
    } catch (e) {
      expect(e).toBeInstanceOf(FormatError)
      expect((e as FormatError).hint).toMatch(/big-endian/)
    }
    expect(() => decodeControlFile(good.subarray(0, 200))).toThrow(FormatError)
    // The 18 layout read as 13–17 would put the CRC elsewhere: each version's CRC offset is what makes it valid.
    const g18 = fixture('pg_control-18.gz')
    expect(new DataView(g18.buffer).getUint32(292, true)).toBe(crc32c(g18.subarray(0, 292)))
    expect(new DataView(good.buffer).getUint32(288, true)).toBe(crc32c(good.subarray(0, 288)))
    const g19 = fixture('pg_control-19.gz')
    expect(new DataView(g19.buffer).getUint32(308, true)).toBe(crc32c(g19.subarray(0, 308)))
    expect(() => decodeControlFile(g19.subarray(0, 300))).toThrow(/too short/)
  })
})
