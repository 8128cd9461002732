// Checking a backup the way a user gets it back: restored with pgkeep's own restore (restoreBackup, the code path
// of `pgkeep restore`), then every file the server sent whole compared with the CRC-32C in the server's own
// backup_manifest (an oracle pgkeep did not write). INCREMENTAL.* files of a server-side incremental are rebuilt
// into whole files, which the server's manifest does not list; backup_label is rewritten for them.

import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'vitest'
import { parseServerManifest } from '../../src/pg/backup-manifest.js'
import { crc32c, crc32cHexLE } from '../../src/pg/crc32c.js'
import type { BackupRecord, Repository } from '../../src/repo/index.js'
import { restoreBackup } from '../../src/restore/restore.js'

export interface RestoredForCheck {
  /** The server's backup_manifest of the backup. */
  manifest: Buffer
  /** Files compared with the server's manifest. */
  checked: number
  /** Where each tablespace was restored (oid → directory). */
  tablespaces: Map<number, string>
}

/**
 * Restores `b` into `target` (tablespaces into `<target>_ts`, or `<target>_ts<oid>` when there are several) with
 * its WAL in pg_wal and no recovery settings, then checks every file against the server's manifest. `workers`:
 * decoding threads of the restore (default: the restore's own, none on two cores).
 */
export async function restoreAndCheck(repo: Repository, b: BackupRecord, target: string, o: { workers?: number } = {}): Promise<RestoredForCheck> {
  const tablespaces = new Map(b.tablespaces.map((t) => [t.oid, b.tablespaces.length === 1 ? `${target}_ts` : `${target}_ts${t.oid}`]))
  await restoreBackup({
    repo,
    pgdata: target,
    backup: b.id,
    cluster: b.systemId,
    tablespaceMapping: [...tablespaces].map(([oid, to]) => ({ from: String(oid), to })),
    recovery: { mode: 'none' },
    workers: o.workers,
  })
  const parts: Buffer[] = []
  for (const id of b.serverManifest) parts.push(await repo.readBlob(id))
  const manifest = Buffer.concat(parts)
  let checked = 0
  for (const f of parseServerManifest(manifest, { verifyChecksum: true }).files) {
    if (/(^|\/)INCREMENTAL\./.test(f.path) || f.path === 'backup_label') continue
    expect(crc32cHexLE(crc32c(await readFile(join(target, f.path)))), f.path).toBe(f.checksum)
    checked++
  }
  return { manifest, checked, tablespaces }
}
