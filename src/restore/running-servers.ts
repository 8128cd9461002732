// The PostgreSQL servers running on this host, and the directories they own: their data directories and the
// locations their pg_tblspc links point to. Restore refuses to write into any of them (invariant 8: a restore next
// to a live server must never touch its files). A postmaster is found by what it leaves, not by its name (the
// binary may run under a loader or another name): its working directory is its data directory (it changes into
// it at start), and that directory's postmaster.pid names its pid on the first line.

import { readFile, readdir, readlink } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { overlaps } from './path-relations.js'

export interface RunningServer {
  readonly pid: number
  readonly dataDirectory: string
  /** Where its pg_tblspc links point (absolute, normalised). */
  readonly tablespaceLocations: readonly string[]
}

export interface RunningServers {
  readonly servers: readonly RunningServer[]
  /** Processes whose working directory could not be read (another user's, without privileges). */
  readonly unreadable: number
}

/** Scans /proc for running postmasters. On a system without /proc it finds none. */
export async function findRunningServers(): Promise<RunningServers> {
  let pids: string[]
  try {
    pids = (await readdir('/proc')).filter((n) => /^[1-9][0-9]*$/.test(n))
  } catch {
    return { servers: [], unreadable: 0 }
  }
  const byDir = new Map<string, RunningServer>()
  let unreadable = 0
  for (const pid of pids) {
    let cwd: string
    try {
      cwd = await readlink(`/proc/${pid}/cwd`)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') unreadable++
      continue
    }
    if (byDir.has(cwd)) continue
    const first = await readFile(join(cwd, 'postmaster.pid'), 'utf8').then(
      (t) => t.split('\n', 1)[0],
      () => undefined,
    )
    if (first?.trim() !== pid) continue
    byDir.set(cwd, { pid: Number(pid), dataDirectory: cwd, tablespaceLocations: await tablespaceLinks(cwd) })
  }
  return { servers: [...byDir.values()], unreadable }
}

async function tablespaceLinks(dataDirectory: string): Promise<string[]> {
  const dir = join(dataDirectory, 'pg_tblspc')
  const names = await readdir(dir).catch(() => [] as string[])
  const out: string[] = []
  for (const name of names) {
    const target = await readlink(join(dir, name)).catch(() => undefined)
    if (target !== undefined) out.push(resolve(dir, target))
  }
  return out
}

/** The running server that owns `path` (its data directory or a tablespace location overlaps it), if any. */
export function ownerOf(path: string, running: RunningServers): { server: RunningServer; what: string } | undefined {
  for (const server of running.servers) {
    if (overlaps(path, server.dataDirectory)) return { server, what: `the data directory '${server.dataDirectory}'` }
    const ts = server.tablespaceLocations.find((l) => overlaps(path, l))
    if (ts !== undefined) return { server, what: `the tablespace location '${ts}'` }
  }
  return undefined
}
