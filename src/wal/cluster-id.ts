// Which cluster a WAL file belongs to. `wal push` of a file that does not say (history and backup history files):
// given explicitly, else read from the pg_control of the data directory the file sits in (archive_command runs
// there), else the only cluster the repository knows. `wal get`: the cluster the repository resolves for
// --cluster (a name or system identifier) or, without it, for pg_control's system identifier; a cluster the
// repository does not know is an error, never "not there" (which would end recovery early).

import { UsageError } from '../errors.js'
import { listClusters, resolveCluster, type RepoCluster } from '../repo/index.js'
import type { Repository } from '../repo/index.js'
import { assertSameCluster, systemIdNearWalPath } from './local-cluster.js'

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

/** {@link ClusterIdOptions} for `wal push`: explicit, else pg_control near the WAL path, else the repository's only cluster. */
export async function resolveClusterId(repo: Repository, o: ClusterIdOptions): Promise<string> {
  if (o.explicit !== undefined) return parseSystemId(o.explicit)
  const local = o.walPath !== undefined ? await systemIdNearWalPath(o.walPath) : undefined
  if (local !== undefined) return local
  const clusters = await listClusters(repo, { signal: o.signal })
  if (clusters.length === 1) return clusters[0]!.systemId
  throw new UsageError(
    clusters.length === 0
      ? 'cannot tell which cluster this WAL file belongs to: the repository holds no cluster yet'
      : `cannot tell which cluster this WAL file belongs to: the repository holds ${clusters.length} clusters (${clusters.map((c) => c.systemId).join(', ')})`,
    { hint: "give --cluster SYSTEMID (see 'pgkeep info'), or run the command in the cluster's data directory as PostgreSQL does" },
  )
}

/**
 * The cluster `wal get` serves: `selector` (--cluster, a name or system identifier) resolved by the repository,
 * else the cluster of the data directory (`localSystemId`, from pg_control), else the repository's only cluster.
 * A selector naming another cluster than the data directory's is refused: its WAL would not fit.
 * @throws UsageError or NotFoundError when the repository does not know the cluster (never "not there")
 */
export async function resolveWalGetCluster(repo: Repository, o: { selector?: string; localSystemId?: string; signal?: AbortSignal }): Promise<RepoCluster> {
  const cluster = await resolveCluster(repo, o.selector ?? o.localSystemId, { signal: o.signal })
  assertSameCluster(cluster.systemId, o)
  return cluster
}
