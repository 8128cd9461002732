// Reading one WAL file out of the catalog by the name PostgreSQL asks for: a segment (its complete record, else
// its longest partial one, zero-padded), a `.partial` name, a timeline history file or a backup history file.

import { isFetchableWalName, isHistoryFileName, isPartialWalName, isWalSegmentName } from '../pg/wal-names.js'
import type { Repository } from '../repo/index.js'
import { backupHistoryKey, readSegmentByName, readWalContent, readWalRecord, segmentKey, type WalFileRecord, type WalReadOptions } from '../repo/index.js'
import { UsageError } from '../errors.js'

/**
 * The bytes of WAL file `name` of cluster `systemId`, verified; undefined when the repository does not have it.
 * A segment stored only as partial is served zero-padded under its plain name: PostgreSQL asks restore_command
 * only for plain names, and this is what lets a recovery replay the WAL a streamer had when it stopped.
 * `o.into` and `o.reader` serve segments; a history or backup history file is small and read on its own.
 */
export async function fetchWalFile(repo: Repository, systemId: string, name: string, o: WalReadOptions = {}): Promise<Buffer | undefined> {
  if (!isFetchableWalName(name)) {
    throw new UsageError(`'${name}' is not a WAL file name`, {
      hint: "expected a segment ('000000010000000000000003'), '<segment>.partial', '%08X.history' or a backup history file",
    })
  }
  if (isWalSegmentName(name) || isPartialWalName(name)) {
    return readSegmentByName(repo, systemId, name.slice(0, 24), { ...o, partialOnly: isPartialWalName(name) })
  }
  const key = isHistoryFileName(name) ? segmentKey(systemId, name) : backupHistoryKey(systemId, name)
  const rec = await readWalRecord<WalFileRecord>(repo, key, o)
  return rec ? readWalContent(repo, rec, { signal: o.signal }) : undefined
}
