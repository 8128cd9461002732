// Checks that every backup is whole: its file list, every file map and every blob its files refer to are in the
// repository (indexed, with their pack present), and the WAL from its start to its end LSN is stored. Reading and
// re-hashing blob content is verifyRepository's job (--read-data); this names which backup and file a hole hurts.

import { printableName } from '../pg/data-dir-entry.js'
import { parseLsn } from '../pg/lsn.js'
import { walFileName } from '../pg/wal-names.js'
import { type BackupRecord, backupRecordProblems, listBackups, findSegmentRecord } from '../repo/index.js'
import type { BlobId } from '../repo/index.js'
import { decodeChunk } from '../repo/index.js'
import { decodeFileMap, extentsKey } from '../repo/index.js'
import type { Repository } from '../repo/index.js'

export interface BackupProblem {
  /** `backup <id>`, with the file when one is concerned. */
  object: string
  message: string
}

export interface VerifyBackupsResult {
  backups: number
  files: number
  problems: BackupProblem[]
}

export async function verifyBackups(repo: Repository, o: { signal?: AbortSignal } = {}): Promise<VerifyBackupsResult> {
  const signal = o.signal
  // Backups first, then the index and the packs: a backup that finished after verify opened the repository wrote
  // its index objects and packs before its record, so they are found, never reported missing.
  const backups = await listBackups(repo, undefined, { signal })
  await repo.refreshIndex({ signal })
  const inRepository = await repo.presentBlobs({ signal })
  // Only blobs that are indexed count: this session put none.
  const present = (id: BlobId) => repo.locateBlob(id) !== undefined && inRepository(id)
  const problems: BackupProblem[] = []
  // Maps already read whose blobs are all present; for a map whose entry listed extents beside it, its extents (as
  // extentsKey), kept only then: a repository of 40,000 small tables has 80,000 maps.
  const checkedMaps = new Map<BlobId, string | undefined>()
  let files = 0
  for (const b of backups) {
    const where = (file?: string) => `backup ${b.id}${file ? ` file '${file}'` : ''}`
    const missing = (file: string | undefined, what: string, id: BlobId) =>
      problems.push({ object: where(file), message: `${what} blob '${id}' is missing from the repository` })
    // A record that breaks the rules is reported and not followed further: its fields may point anywhere.
    const recordProblems = backupRecordProblems(b)
    if (recordProblems.length > 0) {
      for (const message of recordProblems) problems.push({ object: where(), message: `unusable backup record: ${message}` })
      continue
    }
    const tablespaces = new Map(b.tablespaces.map((t) => [t.oid, t.location]))
    for (const id of b.serverManifest) if (!present(id)) missing(undefined, "the server's manifest", id)
    for (const chunk of b.files.chunks) {
      if (!present(chunk.blob)) {
        missing(undefined, `file list chunk ('${chunk.first}' .. '${chunk.last}')`, chunk.blob)
        continue
      }
      let entries
      try {
        entries = decodeChunk(await repo.readBlob(chunk.blob, { signal }), `file list chunk '${chunk.blob}'`, chunk)
      } catch (err) {
        problems.push({ object: where(), message: (err as Error).message })
        continue
      }
      for (const e of entries) {
        files++
        const ts = /^pg_tblspc\/([^/]+)/.exec(e.path)?.[1]
        if (ts !== undefined && !tablespaces.has(Number(ts))) {
          problems.push({ object: where(e.path), message: `the entry lies in tablespace ${ts}, which the backup does not list` })
        }
        if (e.type === 'symlink' && ts !== undefined && tablespaces.has(Number(ts)) && e.linkTarget !== tablespaces.get(Number(ts))) {
          problems.push({
            object: where(e.path),
            message: `the link points to '${printableName(e.linkTarget)}', the backup lists the tablespace at '${tablespaces.get(Number(ts))}'`,
          })
        }
        for (const x of e.extents ?? []) if (x.blob !== null && !present(x.blob)) missing(e.path, 'data', x.blob)
        // An inline map is checked with its entry (file-list.ts) and names the blobs of its extents.
        if (typeof e.fileMap !== 'string') continue
        let mapExtents = checkedMaps.get(e.fileMap)
        // A map is read once, unless an entry lists extents beside it that must be compared with the map's.
        if (!checkedMaps.has(e.fileMap) || (e.extents && mapExtents === undefined)) {
          if (!present(e.fileMap)) {
            missing(e.path, 'file map', e.fileMap)
            continue
          }
          try {
            const m = decodeFileMap(await repo.readBlob(e.fileMap, { signal }), `file map of '${e.path}'`)
            let bad = false
            for (const x of m.extents) {
              if (x.blob !== null && !present(x.blob)) {
                // Named once per file: the entry's own extents, when it lists them, were checked above.
                if (!e.extents?.some((y) => y.blob === x.blob)) missing(e.path, 'data', x.blob)
                bad = true
              }
            }
            mapExtents = e.extents ? extentsKey(m.extents) : undefined
            if (!bad) checkedMaps.set(e.fileMap, mapExtents)
          } catch (err) {
            problems.push({ object: where(e.path), message: (err as Error).message })
            continue
          }
        }
        // A restore takes the entry's own extents and the next backup the map's: they must be the same.
        if (e.extents && extentsKey(e.extents) !== mapExtents) {
          problems.push({ object: where(e.path), message: `its extents differ from those of its file map '${e.fileMap}'` })
        }
      }
    }
    await checkWal(repo, b, problems, signal)
  }
  return { backups: backups.length, files, problems }
}

/** The WAL from the backup's start to its end LSN, without which it cannot become consistent. */
async function checkWal(repo: Repository, b: BackupRecord, problems: BackupProblem[], signal?: AbortSignal): Promise<void> {
  const seg = BigInt(b.walSegmentSizeBytes)
  for (let s = parseLsn(b.startLsn) / seg; s <= (parseLsn(b.endLsn) - 1n) / seg; s++) {
    const name = walFileName(b.timeline, s, b.walSegmentSizeBytes)
    const rec = await findSegmentRecord(repo, b.systemId, name, { signal })
    const needed = s === (parseLsn(b.endLsn) - 1n) / seg ? Number(parseLsn(b.endLsn) - s * seg) : b.walSegmentSizeBytes
    if (!rec) problems.push({ object: `backup ${b.id}`, message: `WAL segment '${name}' it needs is not in the repository` })
    else if (rec.validBytes < needed) {
      problems.push({ object: `backup ${b.id}`, message: `WAL segment '${name}' is stored only up to byte ${rec.validBytes}, the backup needs ${needed}` })
    }
  }
}
