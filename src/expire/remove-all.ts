// What expire and forget share: their lock, and removing many records a few at a time.

import type { OperationEvents } from '../events.js'
import type { LockTiming, RepoLock, Repository } from '../repo/index.js'

/** How many records are removed at once (object stores: latency, not bandwidth, bounds each). */
const REMOVE_CONCURRENCY = 8

/**
 * Runs removals REMOVE_CONCURRENCY at a time, in order. After a failure no new one starts; those under way finish,
 * then the first failure is thrown (what was removed stays removed: each removal is final on its own).
 */
export async function removeAll(tasks: readonly (() => Promise<void>)[], onDone: (done: number) => void = () => {}): Promise<void> {
  let next = 0
  let done = 0
  let failed = false
  const worker = async () => {
    while (!failed && next < tasks.length) {
      try {
        await tasks[next++]!()
      } catch (err) {
        failed = true
        throw err
      }
      onDone(++done)
    }
  }
  const settled = await Promise.allSettled(Array.from({ length: Math.min(REMOVE_CONCURRENCY, tasks.length) }, worker))
  const failure = settled.find((s) => s.status === 'rejected')
  if (failure) throw failure.reason
}

/**
 * The shared lock records are removed under (docs/repository-format.md §10): neither `wal stream`, which holds a
 * shared lock as long as it runs, nor gc (which only deletes what no record references) excludes it; an exclusive
 * lock does. Changes of its state become messages.
 */
export function takeRemovalLock(
  repo: Repository,
  purpose: string,
  o: { signal?: AbortSignal; lockTiming?: LockTiming },
  events: OperationEvents,
): Promise<RepoLock> {
  return repo.acquireLock('shared', {
    purpose,
    signal: o.signal,
    ...o.lockTiming,
    onStateChange: (c) => c.state !== 'lost' && events.say(c.state === 'held' ? 'info' : 'warning', c.message),
  })
}
