// The WAL a restored directory needs to reach consistency on its own: every segment from the backup's start to its
// end LSN, out of the repository's catalog (the complete one, else the longest partial one zero-padded).

import { join } from 'node:path'
import { NotFoundError } from '../errors.js'
import { parseLsn } from '../pg/lsn.js'
import { walFileName } from '../pg/wal-names.js'
import { type BackupRecord, findSegmentRecord, readSegmentBytes, type Repository } from '../repo/index.js'
import { writeFileNoFollow } from './target-tree.js'

/** Writes into `pgWalDir` every segment from the backup's start to its end LSN; resolves with their names. */
export async function writeBackupWal(repo: Repository, backup: BackupRecord, pgWalDir: string, o: { signal?: AbortSignal } = {}): Promise<string[]> {
  const seg = BigInt(backup.walSegmentSizeBytes)
  const first = parseLsn(backup.startLsn) / seg
  const last = (parseLsn(backup.endLsn) - 1n) / seg
  const names: string[] = []
  // One buffer for every segment, written before the next is read (WalReadOptions.into says why).
  let buffer: Buffer | undefined
  const into = (length: number) => (buffer?.length === length ? buffer : (buffer = Buffer.allocUnsafeSlow(length)))
  for (let segno = first; segno <= last; segno++) {
    const name = walFileName(backup.timeline, segno, backup.walSegmentSizeBytes)
    const rec = await findSegmentRecord(repo, backup.systemId, name, o)
    if (!rec) {
      throw new NotFoundError(`WAL segment '${name}' needed by backup ${backup.id} is not in the repository`, {
        hint: "run 'pgkeep verify' and 'pgkeep info' to see which WAL is stored",
      })
    }
    await writeFileNoFollow(join(pgWalDir, name), await readSegmentBytes(repo, rec, { signal: o.signal, into }))
    names.push(name)
  }
  return names
}
