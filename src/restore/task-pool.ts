// A fixed number of workers over a lazily pulled source of tasks, where a task may add sub-tasks (the pieces of a
// large file) that any idle worker takes before pulling more from the source. Nothing is buffered ahead: at most
// `jobs` tasks run, sub-tasks wait in a queue bounded by what the running tasks split off.

/** Adds sub-tasks; they run before the next task is pulled from the source. */
export type Spawn<T> = (tasks: readonly T[]) => void

/**
 * Runs `run` over every task of `source` and every sub-task spawned, with at most `jobs` running at once.
 * Rejects with the first failure once the running tasks settle; no new task starts after a failure or an abort.
 */
export async function runTaskPool<T>(
  source: AsyncIterator<T>,
  jobs: number,
  run: (task: T, spawn: Spawn<T>) => Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  const queue: T[] = []
  let sourceDone = false
  let pulling = false
  let active = 0
  let failure: { error: unknown } | undefined
  // Workers waiting for a change (a task done, a pull settled, pieces spawned). A promise is made only for a worker
  // that waits, not at every change: most changes (a small file written) find nobody waiting.
  let waiting: (() => void)[] = []
  const changed = () => new Promise<void>((r) => waiting.push(r))
  const notify = () => {
    if (waiting.length === 0) return
    const wake = waiting
    waiting = []
    for (const w of wake) w()
  }
  const spawn: Spawn<T> = (tasks) => {
    queue.push(...tasks)
    notify()
  }

  const worker = async (): Promise<void> => {
    for (;;) {
      if (failure || signal?.aborted) return
      let task = queue.shift()
      if (task === undefined && !sourceDone && !pulling) {
        // One worker pulls at a time, so the others keep watching the queue for spawned pieces meanwhile.
        pulling = true
        try {
          const r = await source.next()
          if (r.done) sourceDone = true
          else task = r.value
        } catch (error) {
          failure ??= { error }
          sourceDone = true
        } finally {
          pulling = false
          notify()
        }
        if (failure) return
      }
      if (task === undefined) {
        if (sourceDone && !pulling && active === 0 && queue.length === 0) {
          notify()
          return
        }
        await changed()
        continue
      }
      active++
      try {
        await run(task, spawn)
      } catch (error) {
        failure ??= { error }
      } finally {
        active--
        notify()
      }
    }
  }

  const onAbort = () => notify()
  signal?.addEventListener('abort', onAbort)
  try {
    await Promise.all(Array.from({ length: Math.max(1, jobs) }, () => worker()))
  } finally {
    signal?.removeEventListener('abort', onAbort)
    if (failure || signal?.aborted) await source.return?.(undefined).catch(() => {})
  }
  if (failure) throw failure.error
  signal?.throwIfAborted()
}
