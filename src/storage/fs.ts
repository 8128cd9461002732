// The local-directory Storage driver, pgkeep's embedded default: one file per key under a root directory.
// Writes are atomic and durable: a temporary file in the target directory, fdatasync, rename (or link for
// `ifAbsent`), fsync of the directory. Reads stream fixed-size chunks; nothing loads a whole file in memory.
// Longer than 400 lines on purpose: it is the whole Storage contract on a directory, each operation with its own
// durability steps (temp file, fdatasync, rename or link, directory fsync) spelled out where they happen.

import { randomBytes } from 'node:crypto'
import { promises as fsp } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import path from 'node:path'

import { AccessDeniedError, AlreadyExistsError, NotFoundError, StorageError, isPgkeepError } from '../errors.js'
import { DirectWriteRefused, DirectWriter, suitsDirectWrites } from './direct-write.js'
import { syncDirectory } from './durable-file.js'
import { isAbortReason } from './abort.js'
import { pullBody } from './body.js'
import { type OpenFile, OpenFiles, openForReading } from './open-files.js'
import { TEMP_PREFIX, assertValidKey, assertValidPrefix, assertValidRange } from './keys.js'
import type { Body, ConditionalWriteSupport, LeftoversRemoved, ObjectInfo, OpOptions, ReadOptions, Storage, StorageFeatures, WriteOptions } from './storage.js'

/** Options of {@link openFsStorage}. */
export interface FsStorageOptions {
  /**
   * Size of the chunks `read` yields (default 1 MiB). Each chunk is a fresh buffer the caller owns, unless the read
   * is made with `reuseChunks`.
   */
  readChunkBytes?: number
  /**
   * fsync written files and the directories that changed (default true). Turning it off gives up durability on
   * power loss (never atomicity); only benchmarks of the page cache should do that. Reflected in `features.fsync`.
   */
  fsync?: boolean
  /**
   * Write objects of 1 MiB and more (packs) past the page cache with O_DIRECT when fsync is on and the root is on
   * ext4, xfs or btrfs (default true; see direct-write.ts). Where the file system or device refuses anyway, the
   * driver falls back to ordinary writes by itself.
   */
  directWrites?: boolean
  /** The direct writer to use (default: a new one). Tests pass one whose staging memory the kernel refuses. */
  directWriter?: DirectWriter
}

const DEFAULT_READ_CHUNK_BYTES = 1 << 20
/** Objects from this size on are written with O_DIRECT: packs (8 MiB by default) and the largest indexes. */
const DIRECT_WRITE_MIN_BYTES = 1 << 20
/**
 * Chunk buffers kept for reads made with `reuseChunks`, at most (one per read at once). A fresh buffer per chunk
 * costs more than its allocation: array buffers allocated since V8's last full collection count towards starting the
 * next one, and a restore of the 2 GB bench data, which reads 580 MB of packs, went from 45-54 full collections to
 * 24-32 when its reads reused their chunks.
 */
const SPARE_READ_BUFFERS = 8
/** Modes of new files and directories: private, or group-readable in a repository shared with a group. */
interface FsModes {
  readonly file: number
  readonly dir: number
}
const PRIVATE: FsModes = { file: 0o600, dir: 0o700 }

/**
 * The modes a repository's new objects get, from its top directory's mode: private (0600, 0700), or, when the top
 * directory has the setgid bit and grants its group read and search (`init --group G` makes it 02750), readable by
 * that group (0640, and 02750 for directories so that new ones keep the group): the server's user reads the
 * repository in restore_command that way, while backups run as another user. The setgid bit is the deliberate
 * sign: a directory that is group-readable only because of a umask keeps the repository private.
 */
export function fsModesFor(rootMode: number | undefined): FsModes {
  if (rootMode === undefined || (rootMode & 0o2000) === 0 || (rootMode & 0o050) !== 0o050) return PRIVATE
  return { file: 0o640, dir: 0o2750 }
}

/** Error codes after which the same operation may well succeed (descriptor exhaustion, NFS hiccups). */
const TRANSIENT_CODES = new Set(['EMFILE', 'ENFILE', 'EAGAIN', 'EBUSY', 'EINTR', 'ETIMEDOUT', 'ESTALE'])

/**
 * Opens a Storage over the local directory `root` (made absolute against the current directory).
 *
 * Semantics, on top of the contract in storage.ts:
 * - Keys map to files: `packs/ab/ab12` is `<root>/packs/ab/ab12`. Directories are created on demand with mode 0700
 *   (the root too, on the first write) and their parents are fsynced; files get mode 0600. When the root exists
 *   with the setgid bit and grants its group read and search, the repository is shared with that group: files
 *   get 0640, directories 02750 (so they keep its group); see {@link fsModesFor}. Modes are set explicitly,
 *   whatever the process's umask (a umask can only take bits away; an odd one such as 0277 would otherwise make
 *   directories the driver cannot write into).
 * - `write` streams into `<dir>/.tmp-<random>` (exclusive create), fdatasyncs it, then renames it over the key,
 *   then fsyncs the directory: once it resolves the object survives a crash, and no reader ever sees a partial
 *   file. With `ifAbsent` it uses link(2) instead of rename(2), which fails atomically when the key exists, so
 *   `features.conditionalWrite` is true. A failed or aborted write removes its temporary file (best effort).
 * - An object of 1 MiB or more given as bytes (a pack) goes into its temporary file with O_DIRECT when fsync is on
 *   and the root is on ext4, xfs or btrfs (direct-write.ts): packs do not pass through the page cache.
 * - An error thrown by a factory body is rethrown unchanged (it is the caller's); the write leaves nothing.
 * - A process killed mid-write leaves a `.tmp-*` file behind: invisible to `stat`, `read` and `list`, removed only
 *   by `removeLeftovers` (regular files of that name under the root, older than asked). Keys with a `.tmp-`
 *   segment are refused for that reason.
 * - A key cannot be both an object and a "directory" of other keys (`a` and `a/b`): writing the second fails with
 *   a StorageError. Object stores allow it; repository layouts must not rely on it.
 * - Disk full (ENOSPC, EDQUOT) is a non-retryable StorageError with a hint; descriptor exhaustion and NFS
 *   staleness are retryable; other I/O errors are not. Permission errors (EACCES, EPERM, EROFS) are an
 *   AccessDeniedError: with read-only access to a repository every write fails that way.
 * - `features.remote` is false: even on a network file system this driver assumes a single host.
 * - `probeConditionalWrite` writes the key, writes it again with `ifAbsent` (link(2) must refuse it), removes it:
 *   'enforced', or the StorageError of a file system without hard links.
 */
export async function openFsStorage(root: string, o: FsStorageOptions = {}): Promise<Storage> {
  const abs = path.resolve(root)
  const chunkBytes = o.readChunkBytes ?? DEFAULT_READ_CHUNK_BYTES
  if (!(Number.isSafeInteger(chunkBytes) && chunkBytes > 0)) {
    throw new StorageError(`invalid read chunk size '${String(chunkBytes)}': must be a positive integer`)
  }
  let rootMode: number | undefined
  try {
    const st = await fsp.stat(abs)
    rootMode = st.mode
    if (!st.isDirectory()) {
      throw new StorageError(`repository path '${abs}' is not a directory`, {
        hint: 'point the repository at a directory (it is created on the first write when missing)',
      })
    }
  } catch (err) {
    // A missing root is fine: reads find nothing and the first write creates it.
    if (errnoCode(err) !== 'ENOENT') throw mapFsError(err, 'open', abs, abs)
  }
  const direct = o.directWrites === false || !(await suitsDirectWrites(abs)) ? undefined : (o.directWriter ?? new DirectWriter())
  return new FsStorage(abs, chunkBytes, o.fsync ?? true, fsModesFor(rootMode), direct)
}

class FsStorage implements Storage {
  readonly name: string
  readonly features: StorageFeatures
  /** Objects read with `immutable`, kept open between reads (open-files.ts). */
  private readonly openFiles = new OpenFiles()
  /** Buffers of `chunkBytes` for reads with `reuseChunks`, free for the next one. */
  private readonly spareBuffers: Buffer[] = []

  constructor(
    private readonly root: string,
    private readonly chunkBytes: number,
    private readonly sync: boolean,
    private readonly modes: FsModes,
    /** Undefined when direct writes are turned off. */
    private readonly direct: DirectWriter | undefined,
  ) {
    this.name = root
    this.features = { fsync: sync, conditionalWrite: true, remote: false }
  }

  async stat(key: string, o: OpOptions = {}): Promise<ObjectInfo | undefined> {
    assertValidKey(key)
    o.signal?.throwIfAborted()
    const file = this.pathOf(key)
    try {
      const st = await fsp.stat(file)
      // A directory under a key's name is not an object.
      return st.isFile() ? { key, sizeBytes: st.size, modifiedAt: st.mtime } : undefined
    } catch (err) {
      if (isMissing(err)) return undefined
      throw mapFsError(err, 'stat', file, this.root)
    }
  }

  async *read(key: string, o: ReadOptions = {}): AsyncGenerator<Uint8Array> {
    assertValidKey(key)
    assertValidRange(o.offset, o.length)
    const { signal } = o
    signal?.throwIfAborted()
    const file = this.pathOf(key)
    let opened: OpenFile
    try {
      opened = o.immutable ? await this.openFiles.acquire(file) : await openForReading(file)
    } catch (err) {
      if (isMissing(err)) throw this.notFound(key)
      throw mapFsError(err, 'read', file, this.root)
    }
    const fh = opened.handle
    let reused: Buffer | undefined
    try {
      if (!opened.isFile) throw this.notFound(key)
      let pos = o.offset ?? 0
      const end = o.length === undefined ? opened.sizeBytes : Math.min(opened.sizeBytes, pos + o.length)
      if (o.reuseChunks && end - pos > 0) reused = this.spareBuffers.pop() ?? Buffer.allocUnsafeSlow(this.chunkBytes)
      while (pos < end) {
        signal?.throwIfAborted()
        const want = Math.min(this.chunkBytes, end - pos)
        // A fresh buffer per chunk unless the caller said it keeps none: then it may keep what it receives.
        const buf = reused ?? Buffer.allocUnsafe(want)
        const { bytesRead } = await fh.read(buf, 0, want, pos)
        if (bytesRead === 0) break // the file shrank under us (not ours to do, objects are immutable)
        pos += bytesRead
        yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead)
      }
    } catch (err) {
      throw isPgkeepError(err) || isAbortReason(err, signal) ? err : mapFsError(err, 'read', file, this.root)
    } finally {
      if (o.immutable) this.openFiles.release(file)
      else await fh.close().catch(() => {})
      // Only once the read is over: the caller is done with its last chunk.
      if (reused && this.spareBuffers.length < SPARE_READ_BUFFERS) this.spareBuffers.push(reused)
    }
  }

  async write(key: string, body: Body, o: WriteOptions = {}): Promise<void> {
    assertValidKey(key)
    const { signal } = o
    signal?.throwIfAborted()
    const final = this.pathOf(key)
    const dir = path.dirname(final)
    const tmp = path.join(dir, TEMP_PREFIX + randomBytes(8).toString('hex'))
    let fh: FileHandle | undefined
    let tmpExists = false
    try {
      const direct = this.direct
      if (direct?.enabled && this.sync && body instanceof Uint8Array && body.byteLength >= DIRECT_WRITE_MIN_BYTES) {
        fh = await this.createTemp(tmp, dir, () => direct.create(tmp, this.modes.file))
        tmpExists = fh !== undefined
        if (fh !== undefined && !(await writeDirect(direct, fh, body))) {
          await fh.close()
          fh = undefined
          await fsp.unlink(tmp)
          tmpExists = false
        }
      }
      if (fh === undefined) {
        fh = await this.createTemp(tmp, dir, () => fsp.open(tmp, 'wx', this.modes.file))
        tmpExists = true
        await writeBody(fh, body, signal)
      }
      if (this.sync) await fh.datasync()
      await fh.close()
      fh = undefined
      // Last point where an abort can still leave nothing behind.
      signal?.throwIfAborted()
      if (o.ifAbsent) {
        try {
          // link(2) never replaces an existing name: EEXIST is the atomic "already exists" answer.
          await fsp.link(tmp, final)
        } catch (err) {
          if (errnoCode(err) === 'EEXIST') {
            throw new AlreadyExistsError(`object '${key}' already exists in '${this.root}'`)
          }
          if (errnoCode(err) === 'EPERM' || errnoCode(err) === 'ENOTSUP' || errnoCode(err) === 'EOPNOTSUPP') {
            throw new StorageError(`unable to link '${tmp}' to '${final}': ${errnoCode(err)}`, {
              cause: err,
              hint: 'the file system does not support hard links, which conditional writes need; use a local file system (ext4, xfs, zfs, btrfs) or NFS',
            })
          }
          throw err
        }
        tmpExists = false
        // The object is in place; a leftover temp name is only clutter (and invisible), so do not fail on it.
        await fsp.unlink(tmp).catch(() => {})
      } else {
        await fsp.rename(tmp, final)
        tmpExists = false
      }
      if (this.sync) await syncDirectory(dir)
    } catch (err) {
      if (fh !== undefined) await fh.close().catch(() => {})
      if (tmpExists) await fsp.unlink(tmp).catch(() => {})
      if (err instanceof ProducerFailure) throw err.error
      if (isPgkeepError(err) || isAbortReason(err, signal)) throw err
      throw mapFsError(err, 'write', final, this.root)
    }
  }

  async *list(prefix: string, o: OpOptions = {}): AsyncGenerator<ObjectInfo> {
    assertValidPrefix(prefix)
    o.signal?.throwIfAborted()
    // 'packs/ab' lists directory 'packs/' for names starting with 'ab' (and everything below matching dirs).
    const cut = prefix.lastIndexOf('/')
    yield* this.walk(prefix.slice(0, cut + 1), prefix.slice(cut + 1), o.signal)
  }

  async remove(key: string, o: OpOptions = {}): Promise<void> {
    assertValidKey(key)
    o.signal?.throwIfAborted()
    const file = this.pathOf(key)
    try {
      await fsp.unlink(file)
    } catch (err) {
      // Missing, or a directory (which is not an object): nothing to remove.
      if (isMissing(err) || errnoCode(err) === 'EISDIR') return
      throw mapFsError(err, 'remove', file, this.root)
    }
    // Make the removal durable too: lock release and GC rely on it not coming back after a crash.
    if (this.sync) {
      await syncDirectory(path.dirname(file)).catch((err: unknown) => {
        throw mapFsError(err, 'remove', file, this.root)
      })
    }
  }

  async removeLeftovers(olderThan: Date, o: OpOptions = {}): Promise<LeftoversRemoved> {
    let removed = 0
    let bytes = 0
    const sweep = async (dirPath: string): Promise<void> => {
      for await (const ent of await this.openDir(dirPath)) {
        o.signal?.throwIfAborted()
        const p = path.join(dirPath, ent.name)
        // Dirent types come from lstat: a symbolic link is neither, so nothing outside the root is followed.
        if (ent.isDirectory()) await sweep(p)
        else if (ent.isFile() && ent.name.startsWith(TEMP_PREFIX)) {
          try {
            const st = await fsp.lstat(p)
            if (st.mtime >= olderThan) continue
            await fsp.unlink(p)
            removed++
            bytes += st.size
          } catch (err) {
            if (!isMissing(err)) throw mapFsError(err, 'remove', p, this.root)
          }
        }
      }
    }
    await sweep(this.root)
    return { removed, bytes }
  }

  async probeConditionalWrite(key: string, o: OpOptions = {}): Promise<ConditionalWriteSupport> {
    await this.write(key, Buffer.from('pgkeep conditional write probe 1\n'), o)
    try {
      await this.write(key, Buffer.from('pgkeep conditional write probe 2\n'), { ...o, ifAbsent: true })
      return 'ignored'
    } catch (err) {
      if (err instanceof AlreadyExistsError) return 'enforced'
      throw err
    } finally {
      await this.remove(key)
    }
  }

  async close(): Promise<void> {
    // Nothing is held open between operations.
  }

  private pathOf(key: string): string {
    return path.join(this.root, key)
  }

  private notFound(key: string): NotFoundError {
    return new NotFoundError(`object '${key}' not found in '${this.root}'`)
  }

  /** The entries of a directory, streamed (a million packs cost no more memory than ten); none when it is missing. */
  private async openDir(dirPath: string): Promise<AsyncIterable<import('node:fs').Dirent> | Iterable<import('node:fs').Dirent>> {
    try {
      return await fsp.opendir(dirPath)
    } catch (err) {
      if (isMissing(err)) return []
      throw mapFsError(err, 'list', dirPath, this.root)
    }
  }

  /** Walks `dirKey` (a key prefix ending with '/', or '') for entries whose name starts with `namePrefix`. */
  private async *walk(dirKey: string, namePrefix: string, signal: AbortSignal | undefined): AsyncGenerator<ObjectInfo> {
    const dirPath = path.join(this.root, dirKey)
    for await (const ent of await this.openDir(dirPath)) {
      signal?.throwIfAborted()
      if (!ent.name.startsWith(namePrefix) || ent.name.startsWith(TEMP_PREFIX)) continue
      const key = dirKey + ent.name
      if (ent.isDirectory()) {
        yield* this.walk(key + '/', '', signal)
      } else if (ent.isFile()) {
        let st
        try {
          st = await fsp.stat(path.join(dirPath, ent.name))
        } catch (err) {
          if (isMissing(err)) continue // removed while we listed: it was listed by nobody, which is allowed
          throw mapFsError(err, 'list', dirPath, this.root)
        }
        yield { key, sizeBytes: st.size, modifiedAt: st.mtime }
      }
    }
  }

  /**
   * Creates the temporary file exclusively with `open`; creates the missing directories only when the first try
   * says so. Undefined when `open` declines (a direct open on a file system without O_DIRECT).
   */
  private async createTemp<H extends FileHandle | undefined>(tmp: string, dir: string, open: () => Promise<H>): Promise<H> {
    let fh: H
    try {
      fh = await open()
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err
      await this.makeDirs(dir)
      fh = await open()
    }
    if (fh === undefined) return fh
    try {
      // open(2) applies the umask; the mode must not depend on it.
      await fh.chmod(this.modes.file)
    } catch (err) {
      await fh.close().catch(() => {})
      await fsp.unlink(tmp).catch(() => {})
      throw err
    }
    return fh
  }

  /** mkdir -p with the directory mode (0700, or 02750 shared), fsyncing the parent of every directory it creates so the new entry is durable. */
  private async makeDirs(dir: string): Promise<void> {
    try {
      await fsp.mkdir(dir, { mode: this.modes.dir })
      await fsp.chmod(dir, this.modes.dir) // mkdir(2) applies the umask
    } catch (err) {
      const code = errnoCode(err)
      if (code === 'ENOENT' && path.dirname(dir) !== dir) {
        await this.makeDirs(path.dirname(dir))
        try {
          await fsp.mkdir(dir, { mode: this.modes.dir })
          await fsp.chmod(dir, this.modes.dir)
        } catch (err2) {
          if (errnoCode(err2) !== 'EEXIST') throw err2
        }
      } else if (code !== 'EEXIST') {
        throw err
      }
      // EEXIST: a concurrent writer created it and may not have fsynced the parent yet; fsync it ourselves so
      // our write cannot resolve before the directory entry is durable. This path is rare, so it is cheap.
    }
    if (this.sync) await syncDirectory(path.dirname(dir))
  }
}

/** Writes a body fully; a factory body is pulled with the abort signal raced against each chunk. */
async function writeBody(fh: FileHandle, body: Body, signal: AbortSignal | undefined): Promise<void> {
  if (body instanceof Uint8Array) {
    await writeAll(fh, body)
    return
  }
  const puller = pullBody(body, signal)
  try {
    for (let chunk = await puller.next(); chunk !== undefined; chunk = await puller.next()) {
      signal?.throwIfAborted()
      await writeAll(fh, chunk)
    }
  } catch (err) {
    // The producer's own failure is the caller's error: hand it back unchanged.
    if (puller.isProducerError(err)) throw new ProducerFailure(err)
    throw err
  } finally {
    puller.release()
  }
}

/** Writes `data` into `fh` past the page cache; false when the kernel refused (the file must be written again). */
async function writeDirect(direct: DirectWriter, fh: FileHandle, data: Uint8Array): Promise<boolean> {
  try {
    await direct.write(fh, data)
    return true
  } catch (err) {
    if (err instanceof DirectWriteRefused) return false
    throw err
  }
}

/** Carries a producer's error through the driver's mapping untouched. */
class ProducerFailure {
  constructor(readonly error: unknown) {}
}

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let off = 0
  while (off < chunk.byteLength) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.byteLength - off)
    off += bytesWritten
  }
}

function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? (err as NodeJS.ErrnoException).code : undefined
}

function isMissing(err: unknown): boolean {
  const code = errnoCode(err)
  return code === 'ENOENT' || code === 'ENOTDIR'
}

/** Maps a node:fs error to a StorageError with a remediation hint; `file` is the path that failed. */
function mapFsError(err: unknown, action: string, file: string, root: string): Error {
  if (isPgkeepError(err)) return err
  const code = errnoCode(err)
  const detail = err instanceof Error ? err.message : String(err)
  const message = `unable to ${action} '${file}': ${code ?? detail}`
  switch (code) {
    case 'ENOSPC':
      return new StorageError(`unable to ${action} '${file}': no space left on device`, {
        cause: err,
        hint: `free space on the file system holding '${root}' (or expire old backups), then run the command again`,
      })
    case 'EDQUOT':
      return new StorageError(`unable to ${action} '${file}': disk quota exceeded`, {
        cause: err,
        hint: `raise the quota of the user writing '${root}' or free space, then run the command again`,
      })
    case 'EACCES':
    case 'EPERM':
      return new AccessDeniedError(`unable to ${action} '${file}': permission denied`, {
        cause: err,
        hint: `check the owner and mode of '${root}' and the directories below it (pgkeep creates them 0700, or 02750 in a repository shared with a group)`,
      })
    case 'EROFS':
      return new AccessDeniedError(`unable to ${action} '${file}': read-only file system`, {
        cause: err,
        hint: `mount the file system holding '${root}' read-write`,
      })
    case 'EIO':
      return new StorageError(`unable to ${action} '${file}': input/output error`, {
        cause: err,
        hint: 'the disk or file system reported an I/O error; check the kernel log (dmesg) and the device',
      })
    case 'ENOTDIR':
    case 'EEXIST':
    case 'EISDIR':
      return new StorageError(message, {
        cause: err,
        hint: 'a key is used both as an object and as a directory of other keys, which this driver cannot store',
      })
    default:
      return new StorageError(message, { cause: err, retryable: code !== undefined && TRANSIENT_CODES.has(code) })
  }
}
