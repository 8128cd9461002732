// The files phase of a restore: every directory and file of the backup written into the target through the target
// tree, in parallel (`jobs`), with what the coming files need fetched ahead in batches; the few small files that
// make the directory startable (pg_control, backup_label, tablespace_map, postgresql.auto.conf) are held back for
// the finish phase. Also what comes before it: checking every entry, and the tablespace links.

import { lstat, mkdir, readlink, rm, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { IntegrityError } from '../errors.js'
import { printableName, restoredMode, tablespaceLinkOid } from '../pg/data-dir-entry.js'
import { type BackupRecord, type BlobReader, decodeFileMap, type FileEntry, type FileListReader, type Repository } from '../repo/index.js'
import { BlobCache } from './blob-cache.js'
import { FileRestorer, type FileTask, READ_AHEAD_EXTENTS, SMALL_FILE_BYTES } from './file-restorer.js'
import type { RestoredManifest } from './restored-manifest.js'
import type { RestoreProgress } from './restore-progress.js'
import { CONTROL_FILE, RESTORE_MARKER } from './target-directory.js'
import type { TargetTree } from './target-tree.js'
import { SmallFileWriter } from './small-file-writer.js'
import { runTaskPool } from './task-pool.js'
import { MANIFEST_NAME, MANIFEST_TEMP_NAME } from './restored-manifest.js'

/** Written by the finish phase after every other file, in this order; pg_control last of all. */
export const DEFERRED = new Set(['postgresql.auto.conf', 'tablespace_map', 'backup_label', CONTROL_FILE])
/** Never restored from a backup: the restore writes its own. */
const SKIPPED = new Set([MANIFEST_NAME, MANIFEST_TEMP_NAME, RESTORE_MARKER, 'recovery.signal', 'standby.signal'])
/**
 * File entries read ahead of the workers, at most; what they need is fetched together, refilled when half are
 * taken. Many so that small files' blobs, which lie in packs in the order the server sent the files (not the file
 * list's), come in long runs: a restore of 20,000 small tables made 28,000 storage reads for 81,000 blobs with 64
 * entries ahead, 3,800-4,300 with 512, and used 2-4 CPU-s less (8.6-11.5 s → 6.8-8.2 s, 3 alternating runs).
 */
export const LOOKAHEAD_ENTRIES = 512
/**
 * What the entries ahead may fetch, at most (their estimated bytes: a small file's size, a larger file's map), so
 * that it fits in the small blobs' budget and the cache with room to spare: blobs fetched ahead and pushed out
 * before their use would be read twice.
 */
export const LOOKAHEAD_BYTES = 4 << 20
/**
 * Small blobs (below SMALL_FILE_BYTES) kept in the cache at most: what the look-ahead fetches (LOOKAHEAD_BYTES), and
 * a few thousand small files' worth of identical blobs shared between them (empty relations' pages).
 */
const SMALL_BLOB_CACHE_BYTES = 8 << 20
/**
 * Large blobs used and released, kept for another use at most: what neighbouring extents and pieces share (an
 * incremental's parent blobs), not every window restored so far.
 */
const REUSE_CACHE_BYTES = 8 << 20

/** A directory restored, to get its mode and time at the very end (writing into it changes its time). */
export interface RestoredDirectory {
  path: string
  mode: number
  mtime: number
}

export interface FilesPhase {
  repo: Repository
  backup: BackupRecord
  reader: FileListReader
  tree: TargetTree
  locations: ReadonlyMap<number, string>
  blobs: BlobReader
  manifest: RestoredManifest
  progress: RestoreProgress
  jobs: number
  cacheBytes: number | undefined
  smallFileThreadAfter: number | undefined
  delta: boolean
  signal: AbortSignal
}

export interface FilesWritten {
  files: number
  filesWritten: number
  filesUnchanged: number
  dirs: RestoredDirectory[]
  /** The held-back files, by path. */
  deferred: Map<string, FileEntry>
}

/** Writes every file and directory of the backup but the deferred ones. */
export async function restoreFiles(p: FilesPhase): Promise<FilesWritten> {
  const out: FilesWritten = { files: 0, filesWritten: 0, filesUnchanged: 0, dirs: [], deferred: new Map() }
  const { signal, progress, manifest } = p
  // Room for what every job has fetched ahead on average (it fetches again when half of READ_AHEAD_EXTENTS is
  // used) and the blobs it is writing; the cache evicts blobs used already before those fetched ahead, the
  // furthest ahead first. 40 MiB for 4 jobs: a restore of the 2 GB bench data read no blob twice, as with the
  // 64 MiB sized for the whole read-ahead before (2,661 blobs either way), and peaked 20-25 MB lower.
  // Blobs nobody uses any more go back to the reader, whose next blobs are decoded into them. Small blobs get
  // room for what the look-ahead asks for (a small file's blob and its map, for each entry ahead), not more.
  const cacheBytes = p.cacheBytes ?? Math.max(32 << 20, p.jobs * (READ_AHEAD_EXTENTS / 2 + 4) * (1 << 20))
  const cache = new BlobCache(
    (id) => p.blobs.read(id),
    cacheBytes,
    (bytes) => p.blobs.giveBack(bytes),
    {
      small: { belowBytes: SMALL_FILE_BYTES, maxBytes: Math.min(cacheBytes, SMALL_BLOB_CACHE_BYTES) },
      reuseMaxBytes: Math.min(cacheBytes, REUSE_CACHE_BYTES),
    },
  )
  const smallFiles = new SmallFileWriter({ threadAfter: p.smallFileThreadAfter, expectedFiles: p.backup.files.count })
  const restorer = new FileRestorer({
    repo: p.repo,
    backupId: p.backup.id,
    cache,
    delta: p.delta,
    reader: p.blobs,
    signal,
    target: p.tree,
    smallFiles,
    onBytes: (covered, written) => progress.add(covered, written),
    // Not async: most files return nothing to wait for (see RestoredManifest.add).
    onDone: (d) => {
      progress.fileDone()
      if (d.changed) out.filesWritten++
      else out.filesUnchanged++
      return manifest.add({
        path: d.entry.path,
        size: d.entry.sizeBytes,
        lastModified: new Date(d.entry.mtime * 1000),
        checksumAlgorithm: 'CRC32C',
        checksum: d.crc32c,
      })
    },
  })
  // Entries are taken up to LOOKAHEAD_ENTRIES ahead of the workers, refilled in batches, and what the coming
  // files need is asked for together so that it arrives in runs rather than one request per file: the file
  // maps of relation files without inline extents, and the blobs of small files (through their maps, for those).
  const prefetch = (e: FileEntry) => {
    if (e.type !== 'file') return
    if (typeof e.fileMap === 'string' && !e.extents) cache.prefetch(e.fileMap)
    if (e.sizeBytes > SMALL_FILE_BYTES) return
    const want = (extents: readonly { blob: string | null }[]) => {
      for (const x of extents) if (x.blob !== null) cache.prefetch(x.blob)
    }
    if (e.extents) want(e.extents)
    else if (typeof e.fileMap === 'string') {
      cache.get(e.fileMap).then(
        (lease) => {
          try {
            want(decodeFileMap(lease.bytes).extents)
          } catch {
            // Damaged: the file's own read of its map says so.
          } finally {
            lease.release()
          }
        },
        () => {},
      )
    }
  }
  const tasks = new FileTasks(p.reader.chunks({ signal })[Symbol.asyncIterator](), prefetch, (e) => {
    if (SKIPPED.has(e.path)) return undefined
    // pg_tblspc/<oid> links were made from the backup's tablespace list; no other links are backed up.
    if (e.type === 'symlink' || isTablespaceLink(e.path, p.locations)) return undefined
    if (e.type === 'directory') {
      return p.tree.mkdir(e.path).then((path) => {
        out.dirs.push({ path, mode: restoredMode('directory', e.mode), mtime: e.mtime })
      })
    }
    out.files++
    if (DEFERRED.has(e.path)) {
      out.deferred.set(e.path, e)
      return undefined
    }
    return { kind: 'file', entry: e }
  })
  progress.phase('files')
  try {
    await runTaskPool(tasks, p.jobs, (t, spawn) => restorer.run(t, spawn), signal)
    await smallFiles.flush()
  } finally {
    await smallFiles.close()
  }
  return out
}

/**
 * The files to write, in the list's order, with up to LOOKAHEAD_ENTRIES entries (and LOOKAHEAD_BYTES of what they
 * fetch) taken ahead of the workers and handed to `prefetch` as they are taken. One async step per task, whatever
 * the entries in between (directories, skipped ones): a chain of async generators cost three, with their promises,
 * for each of 61,000 files in a restore of 20,000 tables. Not for concurrent use: runTaskPool asks for the next task
 * only once the last one came.
 */
export class FileTasks implements AsyncIterator<FileTask> {
  /** The entries of the chunk being taken from, and the next one's place. */
  #chunk: readonly FileEntry[] = []
  #inChunk = 0
  #chunksDone = false
  /** Entries taken ahead: queue[head..] are still to come. */
  #queue: FileEntry[] = []
  #head = 0
  #aheadBytes = 0

  constructor(
    private readonly chunks: AsyncIterator<FileEntry[]>,
    private readonly prefetch: (e: FileEntry) => void,
    /**
     * What an entry is for the workers: a task; or work done here to wait for (a directory made) or undefined (a
     * skipped entry), and no task. Not async: most entries are files, and a promise each would be garbage.
     */
    private readonly taskOf: (e: FileEntry) => FileTask | Promise<void> | undefined,
  ) {}

  async next(): Promise<IteratorResult<FileTask>> {
    for (;;) {
      if (!this.#chunksDone && this.#queue.length - this.#head <= LOOKAHEAD_ENTRIES / 2 && this.#aheadBytes <= LOOKAHEAD_BYTES / 2) await this.#fill()
      if (this.#head === this.#queue.length) return { value: undefined, done: true }
      const e = this.#queue[this.#head++]!
      this.#aheadBytes -= fetchedAhead(e)
      const task = this.taskOf(e)
      if (task instanceof Promise) await task
      else if (task) return { value: task, done: false }
    }
  }

  /** Stops taking entries (the pool failed or was aborted): the list's reading ends with it. */
  async return(): Promise<IteratorResult<FileTask>> {
    this.#chunksDone = true
    this.#queue = []
    this.#head = 0
    await this.chunks.return?.(undefined)
    return { value: undefined, done: true }
  }

  /** Takes entries ahead until LOOKAHEAD_ENTRIES or LOOKAHEAD_BYTES are reached or the list ends. */
  async #fill(): Promise<void> {
    // What was handed out is dropped first, so the queue never holds more than LOOKAHEAD_ENTRIES.
    this.#queue = this.#queue.slice(this.#head)
    this.#head = 0
    while (this.#queue.length < LOOKAHEAD_ENTRIES && this.#aheadBytes < LOOKAHEAD_BYTES) {
      if (this.#inChunk === this.#chunk.length) {
        const r = await this.chunks.next()
        if (r.done) {
          this.#chunksDone = true
          return
        }
        this.#chunk = r.value
        this.#inChunk = 0
        continue
      }
      const e = this.#chunk[this.#inChunk++]!
      this.prefetch(e)
      this.#queue.push(e)
      this.#aheadBytes += fetchedAhead(e)
    }
  }
}

/** About the bytes the look-ahead fetches for `e`: a small file's blobs, or a larger file's map (8 bytes a page). */
function fetchedAhead(e: FileEntry): number {
  if (e.type !== 'file') return 0
  return e.sizeBytes <= SMALL_FILE_BYTES ? e.sizeBytes : e.fileMap && !e.extents ? Math.ceil(e.sizeBytes / 1024) : 0
}

/** True for a `pg_tblspc/<oid>` entry of a tablespace the backup lists: restore makes that link itself. */
function isTablespaceLink(path: string, locations: ReadonlyMap<number, string>): boolean {
  const oid = tablespaceLinkOid(path)
  return oid !== undefined && locations.has(oid)
}

/**
 * Reads the whole file list once before anything is written: every entry must map into the target (its
 * tablespace listed by the backup), and a tablespace link must point where the backup record says.
 * @throws IntegrityError naming the backup and the entry
 */
export async function checkEntries(reader: FileListReader, tree: TargetTree, backup: BackupRecord, signal: AbortSignal): Promise<void> {
  const original = new Map(backup.tablespaces.map((t) => [t.oid, t.location]))
  for await (const chunk of reader.chunks({ signal })) {
    for (const e of chunk) {
      if (SKIPPED.has(e.path)) continue
      const oid = tablespaceLinkOid(e.path)
      if (oid !== undefined && original.has(oid)) {
        if (e.type === 'symlink' && e.linkTarget !== original.get(oid)) {
          throw new IntegrityError(
            `backup ${backup.id} links '${e.path}' to '${printableName(e.linkTarget)}', but lists tablespace ${oid} at '${original.get(oid)}'`,
            { hint: "the backup is damaged or was altered; run 'pgkeep verify' and restore another backup with --backup" },
          )
        }
        continue
      }
      tree.resolve(e.path)
    }
  }
}

/** Makes pg_tblspc/<oid> link to each tablespace's (mapped) location, creating the location if needed. */
export async function linkTablespaces(pgdata: string, locations: ReadonlyMap<number, string>): Promise<void> {
  await mkdir(join(pgdata, 'pg_tblspc'), { recursive: true, mode: 0o700 })
  for (const [oid, location] of locations) {
    await mkdir(location, { recursive: true, mode: 0o700 })
    const link = join(pgdata, 'pg_tblspc', String(oid))
    const st = await lstat(link).catch(() => undefined)
    if (st?.isSymbolicLink() && (await readlink(link)) === location) continue
    if (st) await rm(link, { recursive: true, force: true })
    await symlink(location, link)
  }
}
