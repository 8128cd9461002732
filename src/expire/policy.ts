// Storing retention policies in the repository (repo/policy-store.ts): one per cluster, and a default for every
// cluster without its own. `expire` without rules and `backup --expire` apply them. A stored policy must keep at
// least one backup: an unattended expire never empties a cluster.

import { UsageError } from '../errors.js'
import type { OperationOptions } from '../events.js'
import {
  clearStoredPolicy,
  DEFAULT_POLICY_SCOPE,
  describePolicy,
  keepsNoBackup,
  type LockTiming,
  type Repository,
  resolveCluster,
  type RetentionPolicy,
  retentionPolicyProblems,
  type StoredPolicy,
  storePolicy,
} from '../repo/index.js'

export interface PolicyOptions extends OperationOptions {
  repo: Repository
  /** The cluster (name or system identifier) whose policy this is; undefined: the default for every cluster. */
  cluster?: string
  lockTiming?: LockTiming
}

/**
 * Stores `policy` for a cluster, or as the default. Replaces the policy stored before for the same scope.
 * @throws UsageError for a malformed policy or one that keeps no backup
 */
export async function setRetentionPolicy(options: PolicyOptions & { policy: RetentionPolicy }): Promise<StoredPolicy> {
  const problems = retentionPolicyProblems(options.policy)
  if (problems.length > 0) throw new UsageError(`invalid retention policy: ${problems[0]}`, { hint: 'see docs/lifecycle.md for the rules' })
  if (keepsNoBackup(options.policy)) {
    throw new UsageError(`a stored policy must keep backups, and ${describePolicy(options.policy)} keeps none`, {
      hint: 'add --keep-last N (and any of --keep-hourly/daily/weekly/monthly/yearly N, --keep-within DURATION)',
    })
  }
  return underLock(options, (scope) => storePolicy(options.repo, scope, options.policy, { signal: options.signal }))
}

/**
 * Removes the policy stored for a cluster, or the default one; resolves with its scope (a system identifier or
 * `default`) and how many records went (0: none was set).
 */
export async function clearRetentionPolicy(options: PolicyOptions): Promise<{ scope: string; removed: number }> {
  return underLock(options, async (scope) => ({ scope, removed: await clearStoredPolicy(options.repo, scope, { signal: options.signal }) }))
}

async function underLock<T>(options: PolicyOptions, fn: (scope: string) => Promise<T>): Promise<T> {
  const scope =
    options.cluster === undefined ? DEFAULT_POLICY_SCOPE : (await resolveCluster(options.repo, options.cluster, { signal: options.signal })).systemId
  const lock = await options.repo.acquireLock('shared', { purpose: 'policy', signal: options.signal, ...options.lockTiming })
  try {
    return await fn(scope)
  } finally {
    await lock.release().catch(() => {})
  }
}
