// Before a delta restore writes anything, everything in the data directory and in the tablespaces' version
// directories that the backup does not have is removed (old WAL in pg_wal included), and so is anything of the
// wrong type. It walks only the data directory and, inside each tablespace location, the directories the backup
// has there: other versions' directories beside them and anything a symlink points to are left alone (a link is
// removed as a link, never followed; prepare-target.ts has proven every location to be the target's own).

import { lstat, readdir, readlink, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { FileEntry } from '../repo/index.js'

export interface CleanupOptions {
  pgdata: string
  /** Tablespace oid → directory it is restored into. */
  tablespaces: ReadonlyMap<number, string>
  /** The backup's entry for a data-directory-relative path. */
  lookup(path: string): Promise<FileEntry | undefined>
  /** Top-level names to leave alone (the restore's own marker and temporary files). */
  keep: ReadonlySet<string>
  signal?: AbortSignal
}

export interface CleanupResult {
  /** Files, links and directories removed (a directory counts once, whatever it held). */
  removed: number
  removedPaths: string[]
  /** Where pg_wal pointed when it was a link (initdb -X): the link was removed, its target left alone. */
  walLinkRemoved?: string
}

/** Removes what the backup does not have. Only the first 100 paths are reported. */
export async function removeExtraneous(o: CleanupOptions): Promise<CleanupResult> {
  const result: CleanupResult = { removed: 0, removedPaths: [] }
  const remove = async (abs: string, rel: string) => {
    await rm(abs, { recursive: true, force: true })
    result.removed++
    if (result.removedPaths.length < 100) result.removedPaths.push(rel)
  }

  const walk = async (absDir: string, relDir: string): Promise<void> => {
    const names = (await readdir(absDir)).sort()
    for (const name of names) {
      o.signal?.throwIfAborted()
      const rel = relDir === '' ? name : `${relDir}/${name}`
      const abs = join(absDir, name)
      if (relDir === '' && o.keep.has(name)) continue
      const st = await lstat(abs)
      if (relDir === 'pg_tblspc' && /^[0-9]+$/.test(name) && o.tablespaces.has(Number(name))) {
        // The link is recreated to point at the mapped location; its target is walked below, not through it.
        if (st.isSymbolicLink()) continue
        await remove(abs, rel)
        continue
      }
      const entry = await o.lookup(rel)
      if (!entry) {
        await remove(abs, rel)
        continue
      }
      if (entry.type === 'directory') {
        if (st.isDirectory()) await walk(abs, rel)
        else {
          // pg_wal kept elsewhere through a link (initdb -X) is restored as a directory: what the link led to may
          // be shared or live, so it is not ours to clean.
          if (rel === 'pg_wal' && st.isSymbolicLink()) result.walLinkRemoved = await readlink(abs)
          await remove(abs, rel)
        }
      } else if (entry.type === 'file') {
        if (!st.isFile()) await remove(abs, rel)
      } else {
        // Symlinks elsewhere than pg_tblspc/<oid> are not part of backups; whatever is here is recreated.
        await remove(abs, rel)
      }
    }
  }

  await walk(o.pgdata, '')
  for (const [oid, location] of o.tablespaces) {
    let names: string[]
    try {
      names = (await readdir(location)).sort()
    } catch {
      continue
    }
    for (const name of names) {
      const rel = `pg_tblspc/${oid}/${name}`
      const entry = await o.lookup(rel)
      // Only directories of this backup are ours to clean; anything else in the location is left alone.
      if (entry?.type !== 'directory') continue
      const abs = join(location, name)
      const st = await lstat(abs)
      if (st.isDirectory()) await walk(abs, rel)
      else await remove(abs, rel)
    }
  }
  return result
}
