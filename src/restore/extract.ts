// Writes a backup's files into a directory: the plain extraction that restore builds on. Tablespace files go to
// the (mapped) tablespace location through the pg_tblspc symlinks it creates.

import { createWriteStream } from 'node:fs'
import { chmod, mkdir, symlink, utimes } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { BackupRecord } from '../repo/backup-record.js'
import { FileListReader } from '../repo/file-list.js'
import type { Repository } from '../repo/repository.js'
import { readFileContent } from './file-content.js'

export interface ExtractOptions {
  /** Tablespace oid → new location; unmapped tablespaces go back to where they were. */
  tablespaceLocations?: Map<number, string>
  signal?: AbortSignal
}

/** Extracts every file of `backup` into `target` (which should be empty). Resolves with the bytes written. */
export async function extractBackup(repo: Repository, backup: BackupRecord, target: string, o: ExtractOptions = {}): Promise<number> {
  const locations = new Map(backup.tablespaces.map((t) => [t.oid, o.tablespaceLocations?.get(t.oid) ?? t.location]))
  await mkdir(target, { recursive: true, mode: 0o700 })
  let written = 0
  const dirModes: [string, number, number][] = []
  for await (const e of new FileListReader(repo, backup.files).entries(o)) {
    const path = join(target, e.path)
    if (e.type === 'directory') {
      await mkdir(path, { recursive: true, mode: 0o700 })
      dirModes.push([path, e.mode, e.mtime])
    } else if (e.type === 'symlink') {
      const oid = Number(/^pg_tblspc\/(\d+)$/.exec(e.path)?.[1])
      const to = locations.get(oid) ?? e.linkTarget!
      await mkdir(to, { recursive: true, mode: 0o700 })
      await mkdir(dirname(path), { recursive: true, mode: 0o700 })
      await symlink(to, path)
    } else {
      await mkdir(dirname(path), { recursive: true, mode: 0o700 })
      const out = createWriteStream(path, { mode: e.mode & 0o777 })
      for await (const piece of readFileContent(repo, e, { signal: o.signal, backupId: backup.id })) {
        if (!out.write(piece)) await new Promise<void>((r) => out.once('drain', () => r()))
        written += piece.length
      }
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())))
      await chmod(path, e.mode & 0o7777)
      await utimes(path, e.mtime, e.mtime)
    }
  }
  // Directory modes and times last: writing files into them would change the times again.
  for (const [path, mode, mtime] of dirModes.reverse()) {
    await chmod(path, mode & 0o7777)
    await utimes(path, mtime, mtime)
  }
  return written
}
