// Which cluster a WAL file belongs to, for files that do not say (history and backup history files) and for
// `wal get`: given explicitly, else read from the pg_control of the data directory the file sits in (archive and
// restore commands run there), else the only cluster the repository knows.

import { readFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { UsageError } from '../errors.js'
import { decodeControlFile } from '../pg/pg-control.js'
import { CLUSTER_RECORD_KIND } from '../repo/backup-record.js'
import type { Repository } from '../repo/repository.js'
import { listWalClusters } from '../repo/wal-catalog.js'

/** Where the cluster of a WAL file may be learned from, in order. */
export interface ClusterIdOptions {
  /** `--cluster SYSTEMID`. */
  explicit?: string
  /** A path inside `pg_wal` of a data directory (%p of archive_command or restore_command). */
  walPath?: string
  signal?: AbortSignal
}

/** Validates a system identifier given on the command line (a u64 in decimal). */
export function parseSystemId(text: string): string {
  if (!/^\d{1,20}$/.test(text) || BigInt(text) > 0xffff_ffff_ffff_ffffn || BigInt(text) === 0n) {
    throw new UsageError(`invalid system identifier '${text}'`, { hint: "it is the decimal number 'pgkeep check' or pg_controldata shows" })
  }
  return BigInt(text).toString()
}

/** The system identifier in `<data dir>/global/pg_control`, where the data directory holds `pg_wal/<file>`; undefined when unreadable. */
export async function systemIdNearWalPath(walPath: string): Promise<string | undefined> {
  const dataDir = dirname(dirname(resolve(walPath)))
  try {
    return decodeControlFile(await readFile(join(dataDir, 'global', 'pg_control'))).systemId.toString()
  } catch {
    return undefined
  }
}

/** Resolves the cluster without the repository: explicit, else pg_control near the WAL path; undefined if neither. */
export async function localClusterId(o: ClusterIdOptions): Promise<string | undefined> {
  if (o.explicit !== undefined) return parseSystemId(o.explicit)
  return o.walPath !== undefined ? systemIdNearWalPath(o.walPath) : undefined
}

/** {@link localClusterId}, else the only cluster with WAL or backups in the repository; a UsageError otherwise. */
export async function resolveClusterId(repo: Repository, o: ClusterIdOptions): Promise<string> {
  const local = await localClusterId(o)
  if (local !== undefined) return local
  const ids = new Set(await listWalClusters(repo, { signal: o.signal }))
  for await (const r of repo.listRecords(CLUSTER_RECORD_KIND, '', { signal: o.signal })) ids.add(r.key)
  if (ids.size === 1) return [...ids][0]!
  throw new UsageError(
    ids.size === 0
      ? 'cannot tell which cluster this WAL file belongs to: the repository holds no cluster yet'
      : `cannot tell which cluster this WAL file belongs to: the repository holds ${ids.size} clusters (${[...ids].join(', ')})`,
    { hint: "give --cluster SYSTEMID (see 'pgkeep info'), or run the command in the cluster's data directory as PostgreSQL does" },
  )
}
