// The state of a restore's target directory: empty or not, which cluster it holds (pg_control, or the marker of
// an interrupted pgkeep restore), whether a server runs on it; and the marker that a restore writes first and
// removes last. A directory with the marker has no global/pg_control, so no server starts on it by mistake.

import { readFile, readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { UsageError } from '../errors.js'
import { decodeControlFile } from '../pg/pg-control.js'
import { syncDirectory } from '../storage/durable-file.js'
import { openNoFollow } from './target-tree.js'

/** Present while a restore runs or after one failed; its absence plus global/pg_control marks a usable copy. */
export const RESTORE_MARKER = 'pgkeep-restore-incomplete'
export const CONTROL_FILE = 'global/pg_control'

/** What the marker holds: enough to let a later `--delta` resume over it. */
export interface RestoreMarker {
  systemId: string
  backupId: string
  startedAt: string
  /** The data directory of the restore; in a tablespace location it says whose restore left the marker. */
  pgdata?: string
}

export interface TargetState {
  exists: boolean
  empty: boolean
  /** System identifier from global/pg_control, when it is there and readable. */
  controlSystemId?: string
  /** The marker of an earlier interrupted restore. */
  marker?: RestoreMarker
}

/** Looks at a directory without changing it. */
export async function inspectTarget(dir: string): Promise<TargetState> {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return { exists: false, empty: true }
    if (code === 'ENOTDIR') throw new UsageError(`'${dir}' exists and is not a directory`)
    throw err
  }
  const state: TargetState = { exists: true, empty: names.length === 0 }
  try {
    state.controlSystemId = decodeControlFile(await readFile(join(dir, CONTROL_FILE))).systemId.toString()
  } catch {
    // Missing or unreadable: the marker may still say which cluster this is.
  }
  try {
    const m = JSON.parse(await readFile(join(dir, RESTORE_MARKER), 'utf8')) as RestoreMarker
    if (typeof m.systemId === 'string') state.marker = m
  } catch {
    // no marker
  }
  return state
}

/** True when `dir` holds the marker of a restore that did not finish. */
export async function isRestoreIncomplete(dir: string): Promise<boolean> {
  return stat(join(dir, RESTORE_MARKER)).then(
    () => true,
    () => false,
  )
}

/**
 * Refuses a directory a server is running on: postmaster.pid names a live process.
 * @throws UsageError naming the pid
 */
export async function assertNoServerRunning(dir: string): Promise<void> {
  let text: string
  try {
    text = await readFile(join(dir, 'postmaster.pid'), 'utf8')
  } catch {
    return
  }
  const pid = Number(text.split('\n')[0])
  if (!Number.isInteger(pid) || pid <= 0) return
  let alive = true
  try {
    process.kill(pid, 0)
  } catch (err) {
    alive = (err as NodeJS.ErrnoException).code === 'EPERM'
  }
  if (alive) {
    throw new UsageError(`a server (pid ${pid}) seems to be running on '${dir}'`, {
      hint: `stop it first (pg_ctl -D '${dir}' stop); if no server runs there, remove the stale postmaster.pid`,
    })
  }
}

/** Writes the marker durably (file and directory entry), never through a link. */
export async function writeMarker(dir: string, marker: RestoreMarker): Promise<void> {
  const fh = await openNoFollow(join(dir, RESTORE_MARKER), 'create')
  try {
    await fh.writeFile(JSON.stringify(marker) + '\n')
    await fh.sync()
  } finally {
    await fh.close()
  }
  await syncDirectory(dir)
}

export async function removeMarker(dir: string, sync: boolean): Promise<void> {
  await rm(join(dir, RESTORE_MARKER), { force: true })
  if (sync) await syncDirectory(dir)
}
