// What BASE_BACKUP sends, checked where it arrives against the one rule for data-directory entries
// (src/pg/data-dir-entry.ts) and against what PostgreSQL itself sends (basebackup.c, protocol.md §4–5): the
// tablespace list, the archives and every tar entry. A server that breaks it fails the backup with a ProtocolError
// naming the archive and the entry; nothing is recorded. Modes that pass are kept as sent (restore masks them).

import type { TablespaceRow } from '../../protocol/index.js'
import { ProtocolError } from '../errors.js'
import { absoluteLocationProblem, dataDirEntryProblem, printableName, tablespaceLinkOid, tablespaceOidProblem } from '../pg/data-dir-entry.js'

const HINT = 'PostgreSQL never sends this: check that the connection leads to a genuine PostgreSQL server; nothing was recorded'

/** The name BASE_BACKUP gives the archive of a tablespace (null: the data directory). */
export const archiveNameOf = (oid: number | null): string => (oid === null ? 'base.tar' : `${oid}.tar`)

/**
 * Checks BASE_BACKUP's tablespace list: every tablespace has a valid oid and an absolute, normalised location, no
 * oid or location appears twice, and the data directory is the one last row without oid or location.
 * @returns the tablespaces' locations by oid
 * @throws ProtocolError naming the offending row
 */
export function checkTablespaceList(rows: readonly TablespaceRow[]): Map<number, string> {
  const refuse = (what: string) => new ProtocolError(`the server's tablespace list is not acceptable: ${what}`, { hint: HINT })
  const last = rows[rows.length - 1]
  if (!last || last.oid !== null || last.location !== null) throw refuse('its last row must be the data directory (no oid, no location)')
  const locations = new Map<number, string>()
  const seen = new Set<string>()
  for (const row of rows.slice(0, -1)) {
    const problem = tablespaceOidProblem(row.oid) ?? absoluteLocationProblem(row.location)
    if (problem) throw refuse(`tablespace ${printableName(row.oid)} at '${printableName(row.location)}': ${problem}`)
    const oid = row.oid!
    const location = row.location!
    if (locations.has(oid)) throw refuse(`tablespace ${oid} appears twice`)
    if (seen.has(location)) throw refuse(`two tablespaces are at '${printableName(location)}'`)
    locations.set(oid, location)
    seen.add(location)
  }
  return locations
}

/**
 * Checks that an archive is named as BASE_BACKUP names it for its tablespace and comes only once.
 * @param seen names of the archives begun so far; the name is added
 * @throws ProtocolError naming the archive
 */
export function checkArchive(name: string, oid: number | null, seen: Set<string>): void {
  const expected = archiveNameOf(oid)
  if (name !== expected) {
    throw new ProtocolError(
      `the server sent archive '${printableName(name)}' for ${oid === null ? 'the data directory' : `tablespace ${oid}`}, not '${expected}'`,
      { hint: HINT },
    )
  }
  if (seen.has(name)) throw new ProtocolError(`the server sent archive '${name}' twice`, { hint: HINT })
  seen.add(name)
}

/** One archive of a backup, as the entry check needs to know it. */
export interface ArchiveScope {
  /** The archive's name ('base.tar', '<oid>.tar'), for messages. */
  readonly name: string
  /** The tablespace the archive holds; null for base.tar (the data directory). */
  readonly tablespaceOid: number | null
  /** The backup's tablespaces and their locations: a `pg_tblspc/<oid>` link in base.tar must point at one of them. */
  readonly tablespaces: ReadonlyMap<number, string>
  /** The server's major version: a tablespace archive holds a single `PG_<major>_<catversion>` directory. */
  readonly major: number
}

/** A tar entry as the server sent it, before it is accepted. */
export interface RawEntry {
  /** Name in the archive, without the trailing '/' of a directory. */
  readonly name: string
  /** The entry's type, as tar-entries.ts names tar's typeflags ('file', 'directory', 'symlink', 'link', 'fifo', 'character-device', …). */
  readonly type: string
  /** The mode field of the header, as sent. */
  readonly mode: number
  readonly linkTarget?: string
}

/**
 * Checks the entries of one archive as they arrive. A tablespace archive's first entry fixes its version
 * directory, which every later entry must lie in.
 */
export class ArchiveEntryCheck {
  /** `PG_<major>_<catversion>` of a tablespace archive, once its first entry was seen. */
  versionDirectory: string | undefined

  constructor(readonly scope: ArchiveScope) {}

  /**
   * @returns the entry's path in the data directory (`pg_tblspc/<oid>/…` for a tablespace)
   * @throws ProtocolError naming the archive and the entry
   */
  check(e: RawEntry): string {
    const problem = this.problem(e)
    if (problem) {
      throw new ProtocolError(
        `archive '${printableName(this.scope.name)}' from the server has entry '${printableName(e.name)}' that pgkeep refuses: ${problem}`,
        { hint: HINT },
      )
    }
    return this.pathOf(e.name)
  }

  private pathOf(name: string): string {
    return this.scope.tablespaceOid === null ? name : `pg_tblspc/${this.scope.tablespaceOid}/${name}`
  }

  private problem(e: RawEntry): string | undefined {
    const ruled = dataDirEntryProblem({ path: this.pathOf(e.name), type: e.type, mode: e.mode, linkTarget: e.linkTarget })
    if (ruled) return ruled
    const segments = e.name.split('/')
    if (this.scope.tablespaceOid === null) {
      if (segments[0] === 'pg_tblspc' && segments.length > 2) return 'base.tar holds nothing inside pg_tblspc/<oid>: tablespaces come in their own archives'
      if (e.type === 'symlink') {
        const oid = tablespaceLinkOid(e.name)!
        const location = this.scope.tablespaces.get(oid)
        if (location === undefined) return `tablespace ${oid} is not in the backup's tablespace list`
        if (e.linkTarget !== location) return `it links to '${printableName(e.linkTarget)}', but tablespace ${oid} is at '${printableName(location)}'`
      }
      return undefined
    }
    const top = segments[0]!
    if (this.versionDirectory === undefined) {
      if (!new RegExp(`^PG_${this.scope.major}_[0-9]{9}$`).test(top)) return `a tablespace archive holds only its PG_${this.scope.major}_<catversion> directory`
      this.versionDirectory = top
    } else if (top !== this.versionDirectory) {
      return `it lies outside the archive's directory ${this.versionDirectory}`
    }
    if (segments.length === 1 && e.type !== 'directory') return `${top} must be a directory`
    return undefined
  }
}

/**
 * After all archives: every tablespace's version directory must be `PG_<major>_<catversion>` of the cluster's
 * pg_control (catalog_version_no), the one directory the server can use. `catalogVersionOf` reads it from the
 * received pg_control: undefined when base.tar had none (refused), null when this build cannot read its layout
 * (a newer major: then only the directory's form, checked on arrival, is known).
 * @throws ProtocolError naming the tablespace archive
 */
export function checkVersionDirectories(checks: readonly ArchiveEntryCheck[], major: number, catalogVersionOf: () => number | null | undefined): void {
  // pg_control is decoded only when there is a tablespace directory to compare.
  let catalogVersion: number | null | undefined
  let decoded = false
  for (const c of checks) {
    if (c.scope.tablespaceOid === null || c.versionDirectory === undefined) continue
    if (!decoded) {
      catalogVersion = catalogVersionOf()
      decoded = true
    }
    if (catalogVersion === null) return
    const expected = `PG_${major}_${catalogVersion}`
    if (catalogVersion === undefined || c.versionDirectory !== expected) {
      throw new ProtocolError(
        `archive '${c.scope.name}' from the server holds directory ${c.versionDirectory}, but the cluster's pg_control says ${catalogVersion === undefined ? 'nothing (base.tar has no global/pg_control)' : expected}`,
        { hint: HINT },
      )
    }
  }
}
