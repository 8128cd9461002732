// The one rule for entries of a data directory that come from outside pgkeep: a tar entry sent by a server, an
// entry of a backup's file list or a tablespace of a backup record read from a repository. Each is checked where
// it enters (tar reader, file-list and record decoders) and again before restore writes anything (invariant 8 of
// the design). The rule is what PostgreSQL itself can produce, nothing more:
// - a path is relative, '/'-separated, without empty, '.' or '..' segments, without NUL, of sane length;
// - an entry is a file, a directory or a symlink, and a symlink only at `pg_tblspc/<oid>` pointing at an absolute,
//   normalised location (the only links BASE_BACKUP sends, protocol.md §5.2);
// - permission bits are at most 0o777 (no setuid, setgid or sticky bit), and what is written is masked to
//   0o750 for directories and 0o640 for files (what data_directory_mode allows);
// - tablespace oids are positive 32-bit integers, locations absolute and normalised.

/** The kinds of entries a data directory holds in a backup. */
export type DataDirEntryType = 'file' | 'directory' | 'symlink'

/** The fields of an entry the rule looks at. */
export interface DataDirEntryShape {
  readonly path: string
  readonly type: string
  readonly mode: number
  readonly linkTarget?: string | null
}

/** Linux's limits: PATH_MAX and NAME_MAX. */
const MAX_PATH_BYTES = 4095
const MAX_SEGMENT_BYTES = 255
const MAX_OID = 0xffff_ffff
const DIRECTORY_MODE_MASK = 0o750
const FILE_MODE_MASK = 0o640
const OID_TEXT = /^[1-9][0-9]{0,9}$/
const DOT = 0x2e

/** Why `path` is not a safe relative data-directory path, or undefined when it is. */
export function relativePathProblem(path: unknown): string | undefined {
  if (typeof path !== 'string') return 'the path is not a string'
  if (path.length === 0) return 'the path is empty'
  if (path.includes('\0')) return 'the path contains a NUL byte'
  if (path.startsWith('/')) return 'the path is absolute'
  // Bytes are counted only when they could exceed a limit: a UTF-16 code unit is at most 3 bytes of UTF-8, and a
  // restore checks each of its files' paths three times.
  if (path.length * 3 > MAX_PATH_BYTES && Buffer.byteLength(path) > MAX_PATH_BYTES) return `the path is longer than ${MAX_PATH_BYTES} bytes`
  // Segment by segment without splitting: no array and strings per path (a restore of 40,000 tables checks 360,000).
  for (let start = 0; start <= path.length; ) {
    let end = path.indexOf('/', start)
    if (end < 0) end = path.length
    const length = end - start
    if (length === 0) return 'the path has an empty segment'
    if (length <= 2 && path.charCodeAt(start) === DOT && (length === 1 || path.charCodeAt(start + 1) === DOT)) {
      return `the path has a '${path.slice(start, end)}' segment`
    }
    if (length * 3 > MAX_SEGMENT_BYTES && Buffer.byteLength(path.slice(start, end)) > MAX_SEGMENT_BYTES) {
      return `a path segment is longer than ${MAX_SEGMENT_BYTES} bytes`
    }
    start = end + 1
  }
  return undefined
}

/** Why `location` is not an absolute, normalised directory path, or undefined when it is. */
export function absoluteLocationProblem(location: unknown): string | undefined {
  if (typeof location !== 'string') return 'the location is not a string'
  if (!location.startsWith('/')) return 'the location is not an absolute path'
  if (location === '/') return 'the location is the root directory'
  if (location.endsWith('/')) return 'the location ends with a slash'
  return relativePathProblem(location.slice(1))?.replace('the path', 'the location')
}

/** Why `oid` is not a tablespace oid (a positive 32-bit integer), or undefined when it is. */
export function tablespaceOidProblem(oid: unknown): string | undefined {
  if (typeof oid === 'number') return Number.isInteger(oid) && oid > 0 && oid <= MAX_OID ? undefined : `tablespace oid ${oid} is not a positive 32-bit integer`
  if (typeof oid === 'string' && OID_TEXT.test(oid) && Number(oid) <= MAX_OID) return undefined
  return `tablespace oid ${JSON.stringify(oid)} is not a positive 32-bit integer`
}

/** The tablespace oid when `path` is exactly `pg_tblspc/<oid>`, else undefined. */
export function tablespaceLinkOid(path: string): number | undefined {
  const m = /^pg_tblspc\/([1-9][0-9]{0,9})$/.exec(path)
  if (!m) return undefined
  const oid = Number(m[1])
  return oid <= MAX_OID ? oid : undefined
}

/** Why the entry breaks the rule (path, type, link, mode), or undefined when it keeps it. */
export function dataDirEntryProblem(e: DataDirEntryShape): string | undefined {
  const pathProblem = relativePathProblem(e.path)
  if (pathProblem) return pathProblem
  if (e.type !== 'file' && e.type !== 'directory' && e.type !== 'symlink') return `entries of type '${String(e.type)}' are not allowed`
  if (!Number.isInteger(e.mode) || e.mode < 0) return `mode ${String(e.mode)} is not a permission mask`
  if ((e.mode & ~0o777) !== 0) return `mode ${e.mode.toString(8).padStart(4, '0')} has bits beyond 0777 (setuid, setgid or sticky)`
  if (e.type === 'symlink') {
    if (tablespaceLinkOid(e.path) === undefined) return 'a symlink is only allowed at pg_tblspc/<oid>'
    const target = absoluteLocationProblem(e.linkTarget)
    if (target) return `its link target is not allowed: ${target}`
  } else if (e.linkTarget !== undefined && e.linkTarget !== null) {
    return `a ${e.type} entry has a link target`
  }
  return undefined
}

/** The permission bits restore gives an entry: its recorded bits masked to what a data directory allows. */
export function restoredMode(type: DataDirEntryType, mode: number): number {
  return mode & (type === 'directory' ? DIRECTORY_MODE_MASK : FILE_MODE_MASK)
}

/** A printable form of an untrusted name for messages (control characters escaped, long names cut). */
export function printableName(name: unknown): string {
  const s = typeof name === 'string' ? name : String(name)
  const escaped = JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}…` : s)
  return escaped.slice(1, -1)
}
