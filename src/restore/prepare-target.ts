// The first phase of a restore: decide where it writes and prove that it may, before anything is written. The data
// directory must be missing or empty, or, with --delta, hold a copy of the same cluster that no server runs on.
// Each tablespace goes where a mapping says, else (delta) where the target's own pg_tblspc/<oid> link points,
// else to its original location. A location must be empty or missing, or be the target's own tablespace (the
// location its own link points to, holding this major's version directory), or carry the marker of an
// interrupted restore into this same target. Nothing that a running server on this host owns is ever a target.

import { lstat, readdir, readlink } from 'node:fs/promises'
import { join, normalize, resolve } from 'node:path'
import { UsageError } from '../errors.js'
import type { BackupRecord } from '../repo/index.js'
import { findRunningServers, ownerOf, type RunningServers } from './running-servers.js'
import { resolveTablespaceLocations, type TablespaceMapping } from './tablespace-mapping.js'
import { assertNoServerRunning, inspectTarget, type TargetState } from './target-directory.js'

export interface PreparedTarget {
  readonly pgdata: string
  /** Tablespace oid → the location it is restored into. */
  readonly locations: Map<number, string>
  /** What the data directory held before. */
  readonly state: TargetState
}

export interface PrepareTargetOptions {
  pgdata: string
  backup: BackupRecord
  mappings: readonly TablespaceMapping[]
  delta: boolean
  /** The servers running on this host (found from /proc when not given). */
  running?: RunningServers
}

const MAP_HINT = (oid: number) => `map the tablespace to a new, empty directory with --tablespace-mapping ${oid}=/path/to/new/dir`

/** Resolves and checks the data directory and every tablespace location; writes nothing. */
export async function prepareTarget(o: PrepareTargetOptions): Promise<PreparedTarget> {
  const { pgdata, backup } = o
  const state = await inspectTarget(pgdata)
  if (!state.empty) {
    if (!o.delta) {
      throw new UsageError(`data directory '${pgdata}' exists and is not empty`, {
        hint: 'restore into an empty or new directory (--delta updates a copy of the same cluster that an earlier restore made)',
      })
    }
    const holds = state.controlSystemId ?? state.marker?.systemId
    if (holds === undefined) {
      throw new UsageError(`'${pgdata}' is not a data directory pgkeep can update: it has no readable global/pg_control`, {
        hint: 'restore into an empty or new directory',
      })
    }
    if (holds !== backup.systemId) {
      throw new UsageError(`'${pgdata}' holds cluster ${holds}, but backup ${backup.id} is of cluster ${backup.systemId}`, {
        hint: 'a delta restore updates a copy of the same cluster; restore into an empty directory instead',
      })
    }
    await assertNoServerRunning(pgdata)
  }
  const ownLinks = o.delta && state.exists ? await readOwnLinks(pgdata, backup) : new Map<number, string>()
  const locations = resolveTablespaceLocations(backup.tablespaces, o.mappings, pgdata, ownLinks)

  const running = o.running ?? (await findRunningServers())
  const refuseIfRunning = (path: string, what: string, hint: string) => {
    const owner = ownerOf(path, running)
    if (owner) {
      throw new UsageError(`${what} '${path}' overlaps ${owner.what} of the server running with pid ${owner.server.pid}`, { hint })
    }
  }
  refuseIfRunning(pgdata, 'data directory', 'restore into a directory that no running server uses')
  for (const [oid, location] of locations) {
    refuseIfRunning(location, `the location of tablespace ${oid}`, MAP_HINT(oid))
    await assertLocationIsOurs(oid, location, ownLinks.get(oid) === location, pgdata, backup)
  }
  return { pgdata, locations, state }
}

/** Where the target's pg_tblspc/<oid> links point, for the backup's tablespaces (absolute, normalised). */
async function readOwnLinks(pgdata: string, backup: BackupRecord): Promise<Map<number, string>> {
  const dir = join(pgdata, 'pg_tblspc')
  const out = new Map<number, string>()
  for (const t of backup.tablespaces) {
    const target = await readlink(join(dir, String(t.oid))).catch(() => undefined)
    if (target === undefined) continue
    const location = normalize(resolve(dir, target))
    out.set(t.oid, location.length > 1 && location.endsWith('/') ? location.slice(0, -1) : location)
  }
  return out
}

/**
 * A tablespace location may be written when it is missing or empty, when it carries the marker of an interrupted
 * restore into this same data directory, or when it is where the target's own link points and holds this major's
 * tablespace directory (an earlier restore of this cluster). Anything else may be someone else's data.
 */
async function assertLocationIsOurs(oid: number, location: string, isOwnLink: boolean, pgdata: string, backup: BackupRecord): Promise<void> {
  const st = await lstat(location).catch(() => undefined)
  if (!st) return
  if (!st.isDirectory()) {
    throw new UsageError(`the location of tablespace ${oid} '${location}' exists and is not a directory`, { hint: MAP_HINT(oid) })
  }
  const state = await inspectTarget(location)
  if (state.empty) return
  if (state.marker?.pgdata === pgdata && state.marker.systemId === backup.systemId) return
  if (isOwnLink) {
    const prefix = `PG_${backup.server.major}_`
    const names = await readdir(location)
    if (names.some((n) => n.startsWith(prefix))) return
    throw new UsageError(`tablespace ${oid}: '${pgdata}' links to '${location}', which holds no ${prefix}… directory of PostgreSQL ${backup.server.major}`, {
      hint: MAP_HINT(oid),
    })
  }
  throw new UsageError(`the location of tablespace ${oid} '${location}' is not empty, and it is not where '${pgdata}'s own pg_tblspc/${oid} link points`, {
    hint: `it may hold another server's data, so pgkeep will not write there; ${MAP_HINT(oid)}`,
  })
}
