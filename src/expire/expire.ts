// `expire`: applies a retention policy to one cluster or all of them. It takes a snapshot of each cluster's backup
// records and WAL catalog, decides with the pure rules (repo/retention.ts), refuses a policy that would leave a
// cluster without backups, then removes the backup records no rule keeps and afterwards the WAL records no kept
// backup and no recovery window needs. It removes records only: blobs and packs stay until gc.
//
// Locking (docs/repository-format.md §10): a shared lock, so that it runs beside `wal stream` (which holds a shared
// lock forever), backups and gc (records it removes while gc runs only leave garbage for gc's next run). A backup
// that is running may need WAL older than the policy's window (its own start), so WAL is not removed while another
// session holds a live backup lock; a backup that starts meanwhile sees this lock and waits until expire is done
// before it stores any WAL.

import { UsageError } from '../errors.js'
import { OperationEvents, type OperationOptions } from '../events.js'
import {
  BACKUP_LOCK_PURPOSE,
  BACKUP_RECORD_KIND,
  backupKey,
  EXPIRE_LOCK_PURPOSE,
  describeClusters,
  describePolicy,
  type KeepReason,
  listClusters,
  type LockTiming,
  policyInForce,
  type RepoCluster,
  type Repository,
  resolveCluster,
  type RetentionPlan,
  type RetentionPolicy,
  planRetention,
  removeWalRecord,
  retentionPolicyProblems,
  type WalRun,
  walRuns,
} from '../repo/index.js'
import { removeAll, takeRemovalLock } from './remove-all.js'

export interface ExpireOptions extends OperationOptions {
  repo: Repository
  /** The cluster (name or system identifier); without it and without `allClusters`, the repository's only one. */
  cluster?: string
  /** Every cluster of the repository. */
  allClusters?: boolean
  /** The policy to apply; without it, each cluster's stored policy (its own, else the default one). */
  policy?: RetentionPolicy
  /** Decide and report, remove nothing (and take no lock). */
  dryRun?: boolean
  /** Allow a policy that keeps no backup of a cluster (every backup record goes; WAL stays). */
  allowEmpty?: boolean
  lockTiming?: LockTiming
}

/** One backup in an expire result. */
export interface ExpiredBackup {
  readonly id: string
  readonly type: 'full' | 'incremental'
  readonly startedAt: string
  readonly finishedAt: string
  readonly keep: boolean
  /** The rules that keep it. */
  readonly keptBy: readonly KeepReason[]
  /** When it goes: why each rule passes it by. */
  readonly why: readonly string[]
}

export interface ExpireClusterResult {
  readonly systemId: string
  readonly name: string
  readonly policy: RetentionPolicy
  /** Where the policy came from: the caller, the cluster's stored policy, or the repository's default one. */
  readonly policySource: 'given' | 'cluster' | 'default'
  /** Newest first. */
  readonly backups: readonly ExpiredBackup[]
  readonly wal: {
    /** The point-in-time recovery window starts at this backup's start LSN. */
    readonly windowStart?: { readonly lsn: string; readonly backupId: string }
    /** Why no WAL is expired, when none is. */
    readonly note?: string
    /** Why WAL that would go was left this time (a backup was running). */
    readonly deferred?: string
    /** The WAL files that go (went), in runs per timeline. */
    readonly removed: readonly WalRun[]
    readonly removedFiles: number
    readonly keptFiles: number
  }
  /** Records actually removed (0 in a dry run). */
  readonly removedBackups: number
  readonly removedWalFiles: number
}

export interface ExpireResult {
  readonly dryRun: boolean
  readonly clusters: readonly ExpireClusterResult[]
}

/**
 * Applies a retention policy. Phases: 'plan' (snapshot and decisions), 'backups' and 'wal' (removal, itemsDone of
 * itemsTotal). Nothing is removed when any selected cluster is refused.
 * @throws UsageError for a cluster without a policy, or a policy that keeps no backup of a cluster that has some
 *   (unless `allowEmpty`); LockedError when the lock cannot be taken or is lost
 */
export async function expireBackups(options: ExpireOptions): Promise<ExpireResult> {
  const { repo, signal } = options
  const events = new OperationEvents('expire', options.onEvent)
  if (options.policy !== undefined) checkGivenPolicy(options.policy)
  const lock = options.dryRun ? undefined : await takeRemovalLock(repo, EXPIRE_LOCK_PURPOSE, options, events)
  try {
    // After our lock is written (see the header): a backup running now may need WAL the policy would remove.
    const running = await repo.liveLocksFor(BACKUP_LOCK_PURPOSE, { except: lock, signal })
    const deferred =
      running.length > 0
        ? `a backup is running (${running[0]!.description}), so no WAL is removed this time: it may need WAL older than the window; the next expire removes it`
        : undefined
    if (deferred) events.say('info', deferred)

    events.phase('plan')
    const clusters = options.allClusters ? await listClusters(repo, { signal }) : [await resolveCluster(repo, options.cluster, { signal })]
    const plans: { plan: RetentionPlan; source: ExpireClusterResult['policySource'] }[] = []
    const withoutPolicy: RepoCluster[] = []
    for (const cluster of clusters) {
      const chosen = await policyFor(repo, cluster, options.policy, signal)
      if (chosen) plans.push({ plan: await planRetention(repo, cluster, chosen.policy, { signal }), source: chosen.source })
      // A cluster without backups has nothing a policy removes (its WAL stays until it has a kept backup).
      else if (await hasBackups(repo, cluster, signal)) withoutPolicy.push(cluster)
      else events.say('info', `cluster ${describeClusters([cluster])} has no backups and no stored policy: skipped`)
    }
    if (withoutPolicy.length > 0) {
      throw new UsageError(`no retention policy is stored for ${describeClusters(withoutPolicy)}, and no rules were given`, {
        hint: "give rules (--keep-last N, --keep-daily N, …) or store a policy with 'pgkeep policy set --repo URL [--cluster …] --keep-…'",
      })
    }
    if (!options.allowEmpty) for (const { plan } of plans) refuseEmpty(plan)

    const results: ExpireClusterResult[] = []
    for (const { plan, source } of plans) {
      const goingWal = plan.wal.files.filter((f) => !f.keep)
      const removed = options.dryRun ? { backups: 0, wal: 0 } : await removePlanned(repo, plan, { keepWal: deferred !== undefined, signal, events })
      results.push({
        systemId: plan.cluster.systemId,
        name: plan.cluster.name,
        policy: plan.policy,
        policySource: source,
        backups: plan.backups.map(({ record: r, decision: d }) => ({
          id: r.id,
          type: r.type,
          startedAt: r.startedAt,
          finishedAt: r.finishedAt,
          keep: d.keep,
          keptBy: d.keptBy,
          why: d.why,
        })),
        wal: {
          windowStart: plan.wal.windowStart,
          note: plan.wal.note,
          deferred: goingWal.length > 0 ? deferred : undefined,
          removed: walRuns(plan.wal.files, false),
          removedFiles: goingWal.length,
          keptFiles: plan.wal.files.length - goingWal.length,
        },
        removedBackups: removed.backups,
        removedWalFiles: removed.wal,
      })
    }
    return { dryRun: options.dryRun === true, clusters: results }
  } finally {
    await lock?.release().catch(() => {})
  }
}

/**
 * Removes what `plan` marks, and only that: backup records first (a crash between the steps leaves WAL that nothing
 * needs, never a backup without its WAL), then WAL records unless `keepWal`. Records written after the plan's
 * snapshot are not in it, so they stay whatever they are. The caller holds the lock (expireBackups).
 */
export async function removePlanned(
  repo: Repository,
  plan: RetentionPlan,
  o: { keepWal?: boolean; signal?: AbortSignal; events?: OperationEvents } = {},
): Promise<{ backups: number; wal: number }> {
  const { signal, events } = o
  const going = plan.backups.filter((b) => !b.decision.keep)
  events?.phase('backups', { bytesDone: 0, bytesTotal: null, itemsDone: 0, itemsTotal: going.length })
  await removeAll(
    going.map((b) => () => repo.removeRecord(BACKUP_RECORD_KIND, backupKey(plan.cluster.systemId, b.record.id), { signal })),
    (done) => events?.progress({ bytesDone: 0, bytesTotal: null, itemsDone: done, itemsTotal: going.length }),
  )
  if (o.keepWal) {
    events?.flush()
    return { backups: going.length, wal: 0 }
  }
  const wal = plan.wal.files.filter((f) => !f.keep)
  events?.phase('wal', { bytesDone: 0, bytesTotal: null, itemsDone: 0, itemsTotal: wal.length })
  await removeAll(
    wal.map((f) => () => removeWalRecord(repo, f.key, { signal })),
    (done) => events?.progress({ bytesDone: 0, bytesTotal: null, itemsDone: done, itemsTotal: wal.length }),
  )
  events?.flush()
  return { backups: going.length, wal: wal.length }
}

function checkGivenPolicy(policy: RetentionPolicy): void {
  const problems = retentionPolicyProblems(policy)
  if (problems.length > 0) throw new UsageError(`invalid retention policy: ${problems[0]}`, { hint: 'see docs/lifecycle.md for the rules' })
}

async function policyFor(
  repo: Repository,
  cluster: RepoCluster,
  given: RetentionPolicy | undefined,
  signal: AbortSignal | undefined,
): Promise<{ policy: RetentionPolicy; source: ExpireClusterResult['policySource'] } | undefined> {
  if (given) return { policy: given, source: 'given' }
  const stored = await policyInForce(repo, cluster.systemId, { signal })
  return stored && { policy: stored.policy, source: stored.scope === cluster.systemId ? 'cluster' : 'default' }
}

async function hasBackups(repo: Repository, cluster: RepoCluster, signal: AbortSignal | undefined): Promise<boolean> {
  for await (const _ of repo.listRecords(BACKUP_RECORD_KIND, `${cluster.systemId}/`, { signal })) return true
  return false
}

/** A policy must keep at least one backup of a cluster that has backups, unless the caller allows it. */
function refuseEmpty(plan: RetentionPlan): void {
  if (plan.backups.length === 0 || plan.backups.some((b) => b.decision.keep)) return
  const name = plan.cluster.name === plan.cluster.systemId ? plan.cluster.systemId : `'${plan.cluster.name}'`
  throw new UsageError(`the policy (${describePolicy(plan.policy)}) keeps no backup of cluster ${name}: all ${plan.backups.length} would be removed`, {
    hint: 'add --keep-last 1 (or more) to keep the newest backup; only if you mean to remove every backup of the cluster, add --allow-empty',
  })
}
