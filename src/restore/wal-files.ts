// WAL out of the repository's catalog: one segment by name (the complete one, else the longest partial one
// zero-padded, as pg_receivewal leaves them), and the segments a backup needs to reach consistency.

import { join } from 'node:path'
import { NotFoundError } from '../errors.js'
import { parseLsn } from '../pg/lsn.js'
import { walFileName } from '../pg/wal-names.js'
import type { BackupRecord } from '../repo/backup-record.js'
import type { Repository } from '../repo/repository.js'
import { findSegmentRecord, readSegmentBytes, type WalSegmentRecord } from '../repo/wal-catalog.js'
import { writeFileNoFollow } from './target-tree.js'

/** The stored record for segment `name`: complete if stored, else the longest partial; undefined if neither. */
export async function findWalSegment(repo: Repository, systemId: string, name: string, o: { signal?: AbortSignal } = {}): Promise<WalSegmentRecord | undefined> {
  return findSegmentRecord(repo, systemId, name, o)
}

/** The full segment bytes of a record (a partial one zero-padded), verified against its length and CRC. */
export async function readWalSegment(repo: Repository, rec: WalSegmentRecord, o: { signal?: AbortSignal } = {}): Promise<Buffer> {
  return readSegmentBytes(repo, rec, o)
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
    await writeFileNoFollow(join(pgWalDir, name), await readWalSegment(repo, rec, o))
    names.push(name)
  }
  return names
}
