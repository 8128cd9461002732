// Which data-directory paths are relation segment files (the files made of checksummed 8 KB pages), and how the
// members of a tablespace archive map to data-directory paths (PostgreSQL src/common/relpath.c,
// src/backend/backup/basebackup.c parse_filename_for_nontemp_relation, src/bin/pg_combinebackup).

import { FormatError } from '../errors.js'

/** Relation forks that live in their own files (relpath.c forkNames; `main` has no suffix). */
export type ForkName = 'main' | 'fsm' | 'vm' | 'init'

/** RELSEG_SIZE: blocks per segment file, 131072 (1 GiB of 8 KB blocks) unless the server was built otherwise. */
export const DEFAULT_RELSEG_SIZE_BLOCKS = 131072

/** The prefix PostgreSQL 17+ gives files sent by an incremental backup (`INCREMENTAL.16390`). */
export const INCREMENTAL_PREFIX = 'INCREMENTAL.'

/** A relation segment file, decoded from its path. */
export interface RelationFilePath {
  kind: 'relation'
  /** The tablespace oid for `pg_tblspc/<oid>/…`; null in `base/` (pg_default) and `global/` (pg_global). */
  tablespaceOid: number | null
  /** `PG_<major>_<catversion>` for a tablespace path, else null. */
  tablespaceVersionDir: string | null
  /** The database oid; null for shared relations in `global/`. */
  dbOid: number | null
  relfilenode: number
  fork: ForkName
  /** Segment number: 0 for the first segment (no suffix), N for `.N`. */
  segno: number
  /** True for an `INCREMENTAL.<name>` file of a PostgreSQL 17+ incremental backup. */
  incremental: boolean
}

/** What {@link classifyRelationPath} returns. */
export type RelationPathInfo = RelationFilePath | { kind: 'other' }

// <relfilenode>[_<fork>][.<segno>]: no leading zeros, segment 0 has no suffix (protocol.md §8.3).
const RELATION_FILE = /^([1-9][0-9]*)(?:_(fsm|vm|init))?(?:\.([1-9][0-9]*))?$/
const OID = /^[1-9][0-9]*$/
/** `PG_<major>_<catversion>` (TABLESPACE_VERSION_DIRECTORY); majors before 10 had a dot (`PG_9.6_201608131`). */
export const TABLESPACE_VERSION_DIR = /^PG_[0-9]+(?:\.[0-9]+)?_[0-9]+$/

const MAX_OID = 0xffff_ffff

function oid(text: string): number | undefined {
  if (!OID.test(text)) return undefined
  const n = Number(text)
  return n <= MAX_OID ? n : undefined
}

function relationFile(name: string): { relfilenode: number; fork: ForkName; segno: number; incremental: boolean } | undefined {
  let incremental = false
  if (name.startsWith(INCREMENTAL_PREFIX)) {
    incremental = true
    name = name.slice(INCREMENTAL_PREFIX.length)
  }
  const m = RELATION_FILE.exec(name)
  if (m === null) return undefined
  const relfilenode = oid(m[1]!)
  if (relfilenode === undefined) return undefined
  const segno = m[3] === undefined ? 0 : Number(m[3])
  if (!Number.isSafeInteger(segno)) return undefined
  return { relfilenode, fork: (m[2] as ForkName | undefined) ?? 'main', segno, incremental }
}

/**
 * Classifies a path relative to the data directory (`/` separators; a leading `./` is ignored):
 * - `global/<file>`, `base/<db>/<file>`, `pg_tblspc/<spc>/PG_<maj>_<cat>/<db>/<file>` where `<file>` is
 *   `<relfilenode>[_fsm|_vm|_init][.<segno>]`, optionally prefixed by `INCREMENTAL.`, are relation files;
 * - everything else is `other`, including temporary relations (`t3_16384`), `pg_filenode.map`,
 *   `pg_internal.init`, `PG_VERSION` and `pg_control`.
 */
export function classifyRelationPath(path: string): RelationPathInfo {
  const parts = (path.startsWith('./') ? path.slice(2) : path).split('/')
  const other = { kind: 'other' } as const
  let tablespaceOid: number | null = null
  let tablespaceVersionDir: string | null = null
  let dbOid: number | null = null
  let name: string
  if (parts.length === 2 && parts[0] === 'global') {
    name = parts[1]!
  } else if (parts.length === 3 && parts[0] === 'base') {
    const db = oid(parts[1]!)
    if (db === undefined) return other
    dbOid = db
    name = parts[2]!
  } else if (parts.length === 5 && parts[0] === 'pg_tblspc') {
    const spc = oid(parts[1]!)
    const db = oid(parts[3]!)
    if (spc === undefined || db === undefined || !TABLESPACE_VERSION_DIR.test(parts[2]!)) return other
    tablespaceOid = spc
    tablespaceVersionDir = parts[2]!
    dbOid = db
    name = parts[4]!
  } else {
    return other
  }
  const file = relationFile(name)
  if (file === undefined) return other
  return { kind: 'relation', tablespaceOid, tablespaceVersionDir, dbOid, ...file }
}

/**
 * The fork-relative block number of the first block of segment `segno` (`segno × relsegSize`): add the block's
 * index within the file to get the `blkno` that page checksums use.
 */
export function blockNumberBase(segno: number, relsegSizeBlocks = DEFAULT_RELSEG_SIZE_BLOCKS): number {
  return segno * relsegSizeBlocks
}

/** The file name of a relation segment (`16384`, `16384_vm`, `16384.2`), optionally as an INCREMENTAL file. */
export function relationFileName(relfilenode: number, fork: ForkName = 'main', segno = 0, incremental = false): string {
  const base = `${relfilenode}${fork === 'main' ? '' : `_${fork}`}${segno === 0 ? '' : `.${segno}`}`
  return incremental ? `${INCREMENTAL_PREFIX}${base}` : base
}

function trimSlashes(name: string): string {
  let s = name.startsWith('./') ? name.slice(2) : name
  while (s.endsWith('/')) s = s.slice(0, -1)
  return s
}

/**
 * Maps a member name of a tablespace archive (`<oid>.tar`, whose names are relative to the tablespace location,
 * e.g. `PG_17_202406281/5/16390`) to the path backup_manifest uses (`pg_tblspc/<oid>/PG_17_202406281/5/16390`).
 * A trailing `/` (directory entries) is dropped.
 * @throws FormatError when the name does not start with a `PG_<maj>_<cat>` directory, or contains `..`
 */
export function tablespaceMemberToDataDirPath(tablespaceOid: number, memberName: string): string {
  if (!Number.isInteger(tablespaceOid) || tablespaceOid < 1 || tablespaceOid > MAX_OID) {
    throw new FormatError(`invalid tablespace oid ${tablespaceOid}`)
  }
  const name = trimSlashes(memberName)
  const parts = name.split('/')
  if (!TABLESPACE_VERSION_DIR.test(parts[0]!) || parts.some((p) => p === '..' || p === '.' || p === '')) {
    throw new FormatError(`unexpected member '${memberName}' in the archive of tablespace ${tablespaceOid}`, {
      hint: 'members of a tablespace archive start with the PG_<major>_<catversion> directory',
    })
  }
  return `pg_tblspc/${tablespaceOid}/${name}`
}

/**
 * The reverse of {@link tablespaceMemberToDataDirPath}: for `pg_tblspc/<oid>/PG_…/…` returns the oid and the
 * name relative to the tablespace location; undefined for paths outside a tablespace version directory.
 */
export function dataDirPathToTablespaceMember(path: string): { tablespaceOid: number; memberName: string } | undefined {
  const parts = trimSlashes(path).split('/')
  if (parts.length < 3 || parts[0] !== 'pg_tblspc') return undefined
  const spc = oid(parts[1]!)
  if (spc === undefined || !TABLESPACE_VERSION_DIR.test(parts[2]!)) return undefined
  return { tablespaceOid: spc, memberName: parts.slice(2).join('/') }
}
