// Whether every other session has acknowledged a condemnation record (docs/repository-format.md §10a): the
// condition, besides the grace period and a fresh look at what the records reference, for deleting its packs.
// Sessions are known by their lock objects: each carries the keys it acknowledges in `gcAcks`.

import type { Storage } from '../storage/storage.js'
import { ALL_ACKNOWLEDGED, listLocks, type LockStatus } from './lock.js'

/** The answer of {@link checkAcknowledgements}. */
export interface Acknowledgements {
  /** Keys every other session acknowledges. */
  readonly acknowledged: ReadonlySet<string>
  /** Sessions that hold keys back, for the report: the lock's description and the keys. */
  readonly waitingFor: readonly { lock: string; keys: string[] }[]
  /** Expired locks removed because they did not acknowledge a key (their holders can no longer write). */
  readonly broken: readonly LockStatus[]
}

/**
 * Which of `keys` every session other than `ownSession` acknowledges. On the way it removes dead locks (their
 * process is gone), and breaks expired locks that do not acknowledge every key, as an exclusive acquirer would
 * (§10): a holder that comes back finds its lock gone and stops, so it can no longer write anything that needs the
 * packs. Then it lists the locks again, because an expired holder may have re-taken its lock between the listing
 * and the removal; its new object is then in the second listing and judged like any other. Unreadable locks hold
 * back every key (they may be a newer pgkeep's).
 */
export async function checkAcknowledgements(storage: Storage, ownSession: string, keys: readonly string[], signal?: AbortSignal): Promise<Acknowledgements> {
  const broken: LockStatus[] = []
  const missing = (l: LockStatus) => {
    const acks = l.info?.gcAcks ?? []
    return acks.includes(ALL_ACKNOWLEDGED) ? [] : keys.filter((k) => !acks.includes(k))
  }
  for (const l of await listLocks(storage, { signal })) {
    if (l.info?.session === ownSession) continue
    if (l.state === 'dead' || (l.state === 'expired' && missing(l).length > 0)) {
      await storage.remove(l.key, { signal })
      if (l.state === 'expired') broken.push(l)
    }
  }
  const held = new Set<string>()
  const waitingFor: { lock: string; keys: string[] }[] = []
  for (const l of await listLocks(storage, { signal })) {
    if (l.info?.session === ownSession || l.state === 'dead') continue
    const back = l.state === 'unreadable' ? [...keys] : missing(l)
    if (back.length === 0) continue
    for (const k of back) held.add(k)
    waitingFor.push({ lock: l.description, keys: back })
  }
  return { acknowledged: new Set(keys.filter((k) => !held.has(k))), waitingFor, broken }
}
