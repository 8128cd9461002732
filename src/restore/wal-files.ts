// WAL out of the repository's catalog: one segment by name (the complete one, else the longest partial one
// zero-padded, as pg_receivewal leaves them), and the segments a backup needs to reach consistency.

import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { IntegrityError, NotFoundError } from '../errors.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { parseLsn } from '../pg/lsn.js'
import { walFileName } from '../pg/wal-names.js'
import type { BackupRecord } from '../repo/backup-record.js'
import type { Repository } from '../repo/repository.js'
import { listWalKeys, readWalRecord, segmentKey, WAL_RECORD_KIND, type WalSegmentRecord } from '../repo/wal-catalog.js'

/** The stored record for segment `name`: complete if stored, else the longest partial; undefined if neither. */
export async function findWalSegment(repo: Repository, systemId: string, name: string, o: { signal?: AbortSignal } = {}): Promise<WalSegmentRecord | undefined> {
  const complete = await readWalRecord<WalSegmentRecord>(repo, segmentKey(systemId, name), o)
  if (complete) return complete
  const partials = (await listWalKeys(repo, systemId, `${name}.partial.`, o)).sort()
  if (partials.length === 0) return undefined
  // Keys end in the valid length as fixed-width hex, so the last sorts longest.
  return (await repo.readRecord<WalSegmentRecord>(WAL_RECORD_KIND, partials[partials.length - 1], o)).value
}

/** The full segment bytes of a record (a partial one zero-padded), verified against its CRC. */
export async function readWalSegment(repo: Repository, rec: WalSegmentRecord, o: { signal?: AbortSignal } = {}): Promise<Buffer> {
  const out = Buffer.alloc(rec.segmentSizeBytes)
  let at = 0
  for (const [blob, length] of rec.pieces) {
    if (blob !== null) (await repo.readBlob(blob, o)).copy(out, at, 0, length)
    at += length
  }
  if (at !== rec.validBytes || crc32cHexLE(crc32c(out.subarray(0, rec.validBytes))) !== rec.crc32c) {
    throw new IntegrityError(`WAL segment '${rec.name}' read back does not match its recorded length and CRC`, {
      hint: "run 'pgkeep verify --read-data' to find the damaged objects",
    })
  }
  return out
}

/** Writes into `pgWalDir` every segment from the backup's start to its end LSN; resolves with their names. */
export async function writeBackupWal(repo: Repository, backup: BackupRecord, pgWalDir: string, o: { signal?: AbortSignal } = {}): Promise<string[]> {
  const seg = BigInt(backup.walSegmentSizeBytes)
  const first = parseLsn(backup.startLsn) / seg
  const last = (parseLsn(backup.endLsn) - 1n) / seg
  const names: string[] = []
  for (let segno = first; segno <= last; segno++) {
    const name = walFileName(backup.timeline, segno, backup.walSegmentSizeBytes)
    const rec = await findWalSegment(repo, backup.systemId, name, o)
    if (!rec) {
      throw new NotFoundError(`WAL segment '${name}' needed by backup ${backup.id} is not in the repository`, {
        hint: "run 'pgkeep verify' and 'pgkeep info' to see which WAL is stored",
      })
    }
    await writeFile(join(pgWalDir, name), await readWalSegment(repo, rec, o), { mode: 0o600 })
    names.push(name)
  }
  return names
}
