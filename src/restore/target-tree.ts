// Where restore writes, and the only way it does: the data directory and the tablespace locations it resolved are
// its roots, and every path of a backup maps to one of them without passing through any link. A tablespace's
// files (`pg_tblspc/<oid>/…`) are written straight into its resolved location, never through the
// `pg_tblspc/<oid>` link; every directory between a root and a file is checked to be a real directory (created
// by this restore or found as one), and files are opened with O_NOFOLLOW. So a link placed earlier, by the
// repository, the server or whoever shares the target, never leads a later write elsewhere (invariant 8).

import { constants } from 'node:fs'
import { lstat, mkdir, open, type FileHandle } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { IntegrityError } from '../errors.js'
import { printableName, relativePathProblem } from '../pg/data-dir-entry.js'

const { O_CREAT, O_NOFOLLOW, O_RDWR, O_TRUNC, O_WRONLY } = constants

/** How a file is opened: created or emptied for writing, or updated in place (delta, pieces). */
export type OpenMode = 'create' | 'update'

/** A backup path resolved to a root and the part below it. */
export interface ResolvedPath {
  /** The data directory or a tablespace location. */
  readonly root: string
  /** The path below the root ('/'-separated, checked). */
  readonly below: string
  readonly absolute: string
}

const TABLESPACES = 'pg_tblspc/'

/**
 * `below` joined to `root`: both normalised (a root resolved, a path below it without empty, '.' or '..' segments,
 * as relativePathProblem checks), so this is path.join without its normalising pass over every file's path.
 */
function under(root: string, below: string): string {
  return root.endsWith('/') ? root + below : `${root}/${below}`
}

const DAMAGED_HINT = "the backup's file list is damaged or was altered; run 'pgkeep verify' and restore another backup with --backup"

export class TargetTree {
  /** Directories known to be real directories (created here or checked with lstat). */
  readonly #verified = new Set<string>()
  /** The data directory, normalised. */
  readonly pgdata: string
  /** Tablespace oid → the location it is restored into, normalised. */
  readonly tablespaces: ReadonlyMap<number, string>

  /**
   * @param pgdata the data directory (absolute)
   * @param tablespaces tablespace oid → the location it is restored into (absolute)
   * @param owner names the backup in messages
   */
  constructor(
    pgdata: string,
    tablespaces: ReadonlyMap<number, string>,
    private readonly owner: string,
  ) {
    // Normalised once, so that a checked path below a root joins to it by concatenation (see under).
    this.pgdata = resolve(pgdata)
    this.tablespaces = new Map([...tablespaces].map(([oid, location]) => [oid, resolve(location)]))
    this.#verified.add(this.pgdata)
    for (const location of this.tablespaces.values()) this.#verified.add(location)
  }

  /**
   * Maps a data-directory-relative path of the backup to where it is written.
   * @throws IntegrityError for a path that breaks the rule, names a tablespace the backup does not list, or is a
   *   tablespace's own `pg_tblspc/<oid>` entry (that is the link restore makes itself)
   */
  resolve(path: string): ResolvedPath {
    const problem = relativePathProblem(path)
    if (problem) throw this.#bad(path, problem)
    if (path.startsWith(TABLESPACES)) {
      const slash = path.indexOf('/', TABLESPACES.length)
      const oidText = path.slice(TABLESPACES.length, slash < 0 ? undefined : slash)
      const location = /^[1-9][0-9]*$/.test(oidText) ? this.tablespaces.get(Number(oidText)) : undefined
      if (location === undefined) throw this.#bad(path, `it lies in tablespace ${printableName(oidText)}, which the backup does not list`)
      if (slash < 0) throw this.#bad(path, 'it is the link of a tablespace, which restore makes itself')
      const below = path.slice(slash + 1)
      return { root: location, below, absolute: under(location, below) }
    }
    return { root: this.pgdata, below: path, absolute: under(this.pgdata, path) }
  }

  /** Creates the directory `path` (and what lies between it and its root) as real directories; returns it. */
  async mkdir(path: string): Promise<string> {
    const r = this.resolve(path)
    await this.#ensureDirectories(r.root, r.below.split('/'))
    return r.absolute
  }

  /** Makes sure the directories above `path` exist as real directories; returns the absolute path. */
  async prepare(path: string): Promise<string> {
    const r = this.resolve(path)
    // Most files lie in a directory checked already (a database's thousands of relation files): one lookup.
    if (!this.#verified.has(dirname(r.absolute))) await this.#ensureDirectories(r.root, r.below.split('/').slice(0, -1))
    return r.absolute
  }

  /** Opens a file of the backup without following a link at any step. */
  async open(path: string, how: OpenMode, mode = 0o600): Promise<FileHandle> {
    return openNoFollow(await this.prepare(path), how, mode)
  }

  async #ensureDirectories(root: string, segments: readonly string[]): Promise<void> {
    let dir = root
    for (const segment of segments) {
      dir = join(dir, segment)
      if (this.#verified.has(dir)) continue
      const st = await lstat(dir).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined
        throw err
      })
      if (!st) {
        await mkdir(dir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err
        })
        // Created here or by a concurrent task of this restore: look again, it must be a directory either way.
        if (!(await lstat(dir)).isDirectory()) throw this.#notADirectory(dir)
      } else if (!st.isDirectory()) {
        throw this.#notADirectory(dir)
      }
      this.#verified.add(dir)
    }
  }

  #notADirectory(dir: string): IntegrityError {
    return new IntegrityError(`restore of ${this.owner} would write through '${printableName(dir)}', which is not a directory (a link or a file)`, {
      hint: 'restore writes nothing through links or files; restore into an empty directory',
    })
  }

  #bad(path: string, why: string): IntegrityError {
    return new IntegrityError(`${this.owner} has entry '${printableName(path)}' that restore cannot write: ${why}`, { hint: DAMAGED_HINT })
  }
}

/** Opens `absolute` without following a link in its last component (its directories are the caller's to check). */
export function openNoFollow(absolute: string, how: OpenMode, mode = 0o600): Promise<FileHandle> {
  const flags = how === 'create' ? O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW : O_RDWR | O_NOFOLLOW
  return open(absolute, flags, mode)
}

/** Writes a whole file without following a link in its last component. */
export async function writeFileNoFollow(absolute: string, bytes: Uint8Array, mode = 0o600): Promise<void> {
  const fh = await openNoFollow(absolute, 'create', mode)
  try {
    await fh.writeFile(bytes)
  } finally {
    await fh.close()
  }
}
