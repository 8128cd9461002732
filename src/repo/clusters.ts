// The clusters a repository holds, and the one place that decides which cluster a selector means. A cluster is
// known by its cluster record (written with its first backup, carrying its readable name) or, before any backup,
// by WAL stored under its system identifier. Every engine that works on one cluster (restore, `wal get`, drill)
// resolves `--cluster NAME|SYSTEMID`, or its absence, here, so they all accept and refuse the same things.

import { NotFoundError, UsageError } from '../errors.js'
import { CLUSTER_RECORD_KIND, type ClusterRecord } from './backup-record.js'
import type { Repository } from './repository.js'
import { WAL_RECORD_KIND, listWalClusters } from './wal-catalog.js'

/** A cluster of the repository. */
export interface RepoCluster {
  /** System identifier (decimal). */
  systemId: string
  /** The name recorded with its first backup; the system identifier when it has no backup yet. */
  name: string
}

/** Every cluster the repository knows (cluster records and clusters with WAL only), by system identifier. */
export async function listClusters(repo: Repository, o: { signal?: AbortSignal } = {}): Promise<RepoCluster[]> {
  const ids = new Set(await listWalClusters(repo, o))
  for await (const r of repo.listRecords(CLUSTER_RECORD_KIND, '', o)) ids.add(r.key)
  const out: RepoCluster[] = []
  for (const systemId of [...ids].sort()) out.push({ systemId, name: (await clusterName(repo, systemId, o)) ?? systemId })
  return out
}

/** The cluster with this system identifier, or undefined when the repository has neither its record nor its WAL. */
export async function findCluster(repo: Repository, systemId: string, o: { signal?: AbortSignal } = {}): Promise<RepoCluster | undefined> {
  const name = await clusterName(repo, systemId, o)
  if (name !== undefined) return { systemId, name }
  for await (const _ of repo.listRecords(WAL_RECORD_KIND, `${systemId}/`, o)) return { systemId, name: systemId }
  return undefined
}

/** How a list of clusters reads in a message: `cluster 7… ('main'), cluster 7…` (the one way outputs name a cluster). */
export function describeClusters(clusters: readonly RepoCluster[]): string {
  return clusters.map((c) => `cluster ${c.systemId}${c.name === c.systemId ? '' : ` ('${c.name}')`}`).join(', ')
}

/**
 * The cluster `selector` means: a system identifier or a cluster name (exact). Without a selector, the
 * repository's only cluster. A selector that matches nothing, a name two clusters share, and a missing selector
 * where the repository holds several clusters are usage errors naming the clusters there are; a repository with
 * no cluster at all is a NotFoundError.
 */
export async function resolveCluster(repo: Repository, selector: string | undefined, o: { signal?: AbortSignal } = {}): Promise<RepoCluster> {
  if (selector !== undefined && /^\d{1,20}$/.test(selector)) {
    // The common case (restore_command knows the system identifier from pg_control): one or two small reads.
    const found = await findCluster(repo, BigInt(selector).toString(), o)
    if (found) return found
  }
  const all = await listClusters(repo, o)
  if (all.length === 0) {
    throw new NotFoundError(`repository '${repo.location}' holds no cluster${selector === undefined ? '' : ` (looked for '${selector}')`}`, {
      hint: "check --repo; a cluster appears with its first backup ('pgkeep backup') or its first archived WAL",
    })
  }
  if (selector === undefined) {
    if (all.length === 1) return all[0]!
    throw new UsageError(`repository '${repo.location}' holds ${all.length} clusters: ${describeClusters(all)}`, {
      hint: 'say which one with --cluster NAME or --cluster SYSTEMID',
    })
  }
  const matches = all.filter((c) => c.systemId === selector || c.name === selector)
  if (matches.length === 1) return matches[0]!
  if (matches.length > 1) {
    throw new UsageError(`cluster name '${selector}' is used by ${matches.length} clusters of repository '${repo.location}': ${describeClusters(matches)}`, {
      hint: 'give the system identifier instead: --cluster SYSTEMID',
    })
  }
  throw new UsageError(`repository '${repo.location}' holds no cluster '${selector}'; it holds ${describeClusters(all)}`, {
    hint: "check --cluster and --repo ('pgkeep info' lists the clusters)",
  })
}

async function clusterName(repo: Repository, systemId: string, o: { signal?: AbortSignal }): Promise<string | undefined> {
  try {
    return (await repo.readRecord<ClusterRecord>(CLUSTER_RECORD_KIND, systemId, o)).value.name
  } catch (err) {
    if (err instanceof NotFoundError) return undefined
    throw err
  }
}
