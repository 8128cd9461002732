// Durable local files, in one place: fsync of a file and of a directory (so entries created or removed in it
// survive a crash), and whole-file writes that readers see complete or not at all (a temporary file renamed into
// place). The fs driver, restore and the WAL fetch spool use these.

import { randomBytes } from 'node:crypto'
import { constants } from 'node:fs'
import { open, rename, unlink, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'

/** fsync of a directory, so that the entries created, renamed or removed in it are durable. */
export async function syncDirectory(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY)
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** fsync of a file's data and metadata. */
export async function syncFile(path: string): Promise<void> {
  const fh = await open(path, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/**
 * Writes `data` to `path` through a temporary file in `tmpDir` (same file system; default: beside `path`) and a
 * rename: readers see all of it or nothing. Mode 0600. With `sync`, the file is fsynced before the rename and the
 * directory after it, so it also survives a crash.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, o: { tmpDir?: string; sync?: boolean } = {}): Promise<void> {
  const tmp = join(o.tmpDir ?? dirname(path), `.${randomBytes(6).toString('hex')}.tmp`)
  await writeFile(tmp, data, { mode: 0o600, flush: o.sync === true })
  try {
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw err
  }
  if (o.sync) await syncDirectory(dirname(path))
}
