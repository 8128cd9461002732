// Timeline history files for a restored pg_wal: a backup taken on timeline N > 1 carries N's history so that the
// restored server knows its ancestry even when the repository is out of reach (pg_basebackup puts them there too).

import { join } from 'node:path'
import { IntegrityError } from '../errors.js'
import { crc32c, crc32cHexLE } from '../pg/crc32c.js'
import { historyFileName } from '../pg/wal-names.js'
import type { Repository } from '../repo/index.js'
import { historyKey, readWalRecord, type WalHistoryRecord } from '../repo/index.js'
import { writeFileNoFollow } from './target-tree.js'

/**
 * Writes `<TLI>.history` of `timeline` into `pgWalDir` when the repository has it. Resolves with its name, or
 * undefined for timeline 1 (which has none) or when the repository does not hold it.
 */
export async function writeTimelineHistory(
  repo: Repository,
  systemId: string,
  timeline: number,
  pgWalDir: string,
  o: { signal?: AbortSignal } = {},
): Promise<string | undefined> {
  if (timeline <= 1) return undefined
  const rec = await readWalRecord<WalHistoryRecord>(repo, historyKey(systemId, timeline), o)
  if (!rec) return undefined
  const parts: Buffer[] = []
  for (const [blob, length] of rec.pieces) parts.push(blob === null ? Buffer.alloc(length) : (await repo.readBlob(blob, o)).subarray(0, length))
  const bytes = Buffer.concat(parts)
  if (bytes.length !== rec.sizeBytes || crc32cHexLE(crc32c(bytes)) !== rec.crc32c) {
    throw new IntegrityError(`timeline history file '${rec.name}' read back does not match its recorded length and CRC`, {
      hint: "run 'pgkeep verify --read-data' to find the damaged objects",
    })
  }
  const name = historyFileName(timeline)
  await writeFileNoFollow(join(pgWalDir, name), bytes)
  return name
}
