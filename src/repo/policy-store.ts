// Retention policies stored in the repository (docs/backup-format.md §7): `records/policy/<scope>/<id>`, where scope
// is a cluster's system identifier or `default` (every cluster without its own). Records are immutable, so setting a
// policy writes a new record and then removes the older ones of its scope; the greatest key (ids sort by time) is
// the policy in force, so a crash between the two steps leaves the new policy in force.

import { randomBytes } from 'node:crypto'
import { IntegrityError } from '../errors.js'
import { printableName } from '../pg/data-dir-entry.js'
import type { Repository } from './repository.js'
import { type RetentionPolicy, retentionPolicyProblems } from './retention-policy.js'

export const POLICY_RECORD_KIND = 'policy'
/** The scope of the policy for every cluster that has none of its own. */
export const DEFAULT_POLICY_SCOPE = 'default'
export const POLICY_FORMAT_VERSION = 1

/** A policy as stored. */
export interface StoredPolicy {
  /** A system identifier, or `default`. */
  readonly scope: string
  readonly policy: RetentionPolicy
  readonly setAt: string
  /** Its record key. */
  readonly key: string
}

interface PolicyValue {
  formatVersion: typeof POLICY_FORMAT_VERSION
  scope: string
  policy: RetentionPolicy
  setAt: string
}

const SCOPE = /^(default|[1-9][0-9]{0,19})$/

function assertScope(scope: string): void {
  if (!SCOPE.test(scope))
    throw new IntegrityError(`invalid policy scope '${printableName(scope)}'`, { hint: "a scope is a cluster's system identifier or 'default'" })
}

async function scopeKeys(repo: Repository, scope: string, o: { signal?: AbortSignal }): Promise<string[]> {
  const keys: string[] = []
  for await (const r of repo.listRecords(POLICY_RECORD_KIND, `${scope}/`, o)) keys.push(r.key)
  return keys.sort()
}

/**
 * The policy stored for `scope` (a system identifier or `default`), or undefined. A stored policy is input like any
 * other: one that breaks the rules is an IntegrityError, never applied in part.
 */
export async function readStoredPolicy(repo: Repository, scope: string, o: { signal?: AbortSignal } = {}): Promise<StoredPolicy | undefined> {
  assertScope(scope)
  const key = (await scopeKeys(repo, scope, o)).at(-1)
  if (key === undefined) return undefined
  const v = (await repo.readRecord<PolicyValue>(POLICY_RECORD_KIND, key, o)).value
  const problems =
    v?.formatVersion === POLICY_FORMAT_VERSION ? retentionPolicyProblems(v.policy) : [`its format version ${String(v?.formatVersion)} is unknown`]
  if (problems.length > 0 || v.scope !== scope || typeof v.setAt !== 'string') {
    throw new IntegrityError(`the retention policy stored as '${key}' is not usable: ${problems[0] ?? 'its scope or time is malformed'}`, {
      hint: "set it again with 'pgkeep policy set' (a newer pgkeep may have written it: then use that version)",
    })
  }
  return { scope, policy: v.policy, setAt: v.setAt, key }
}

/** The policy in force for a cluster: its own, else the default one, else undefined. */
export async function policyInForce(repo: Repository, systemId: string, o: { signal?: AbortSignal } = {}): Promise<StoredPolicy | undefined> {
  return (await readStoredPolicy(repo, systemId, o)) ?? (await readStoredPolicy(repo, DEFAULT_POLICY_SCOPE, o))
}

/** Every stored policy (the one in force per scope). */
export async function listStoredPolicies(repo: Repository, o: { signal?: AbortSignal } = {}): Promise<StoredPolicy[]> {
  const scopes = new Set<string>()
  for await (const r of repo.listRecords(POLICY_RECORD_KIND, '', o)) {
    const scope = r.key.split('/')[0]!
    if (SCOPE.test(scope)) scopes.add(scope)
  }
  const out: StoredPolicy[] = []
  for (const scope of [...scopes].sort()) {
    const p = await readStoredPolicy(repo, scope, o)
    if (p) out.push(p)
  }
  return out
}

/**
 * Stores `policy` for `scope`: writes a new record, then removes the older records of the scope. The caller checks
 * the policy first (parseRetentionPolicy / retentionPolicyProblems); this refuses a malformed one too.
 */
export async function storePolicy(repo: Repository, scope: string, policy: RetentionPolicy, o: { signal?: AbortSignal } = {}): Promise<StoredPolicy> {
  assertScope(scope)
  const problems = retentionPolicyProblems(policy)
  if (problems.length > 0) throw new IntegrityError(`refusing to store a malformed retention policy: ${problems[0]}`)
  const before = await scopeKeys(repo, scope, o)
  const setAt = new Date()
  // Millisecond time, then random digits: keys sort by when they were set.
  const key = `${scope}/${setAt.toISOString().replace(/[-:]/g, '')}-${randomBytes(3).toString('hex')}`
  const value: PolicyValue = { formatVersion: POLICY_FORMAT_VERSION, scope, policy, setAt: setAt.toISOString() }
  await repo.writeRecord(POLICY_RECORD_KIND, key, value, o)
  // Only older keys: one that sorts after ours was set by someone else meanwhile, and is in force.
  for (const old of before) if (old < key) await repo.removeRecord(POLICY_RECORD_KIND, old, o)
  return { scope, policy, setAt: value.setAt, key }
}

/** Removes every policy record of `scope`; resolves with how many there were. */
export async function clearStoredPolicy(repo: Repository, scope: string, o: { signal?: AbortSignal } = {}): Promise<number> {
  assertScope(scope)
  const keys = await scopeKeys(repo, scope, o)
  for (const key of keys) await repo.removeRecord(POLICY_RECORD_KIND, key, o)
  return keys.length
}
