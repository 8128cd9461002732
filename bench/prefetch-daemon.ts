// `pgkeep wal get` leaves a detached prefetch process behind (its spool beside the destination): the WAL rows of
// the benchmark stop it after each run, so that it neither writes into a directory being removed nor runs into
// the next measurement.

import { readFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * Stops the prefetch process the first `wal get` into `dest` started (its spool is beside the destination) and
 * waits until it is gone, so that it neither writes into a directory being removed nor runs into the next run.
 */
export async function stopPrefetchDaemon(dest: string): Promise<void> {
  let pid: number | undefined
  try {
    pid = (JSON.parse(await readFile(join(dest, '.pgkeep-prefetch', 'daemon.json'), 'utf8')) as { pid?: number }).pid
  } catch {
    return // none was started
  }
  if (typeof pid !== 'number' || pid <= 1) return
  // A zombie (exited, not yet reaped by PID 1, which adopted the detached process) counts as gone.
  const alive = () => {
    try {
      return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
    } catch {
      return false
    }
  }
  if (alive()) process.kill(pid, 'SIGTERM')
  for (let i = 0; alive(); i++) {
    if (i === 100) process.kill(pid, 'SIGKILL')
    if (i > 200) throw new Error(`the wal get prefetch process ${pid} does not exit`)
    await new Promise((r) => setTimeout(r, 50))
  }
}
