// Where each tablespace of a backup goes: `--tablespace-mapping OLD=NEW` by original location or by oid; an
// unmapped tablespace goes where the target's own pg_tblspc/<oid> link points (a delta restore over an earlier
// copy), else back to its original location. Checks that the result is a sensible layout before anything is
// written; whether each location may be written at all is prepare-target.ts's job.

import { isAbsolute, normalize } from 'node:path'
import { UsageError } from '../errors.js'
import { isInside as inside } from './path-relations.js'

/** One `OLD=NEW`: OLD is a tablespace's original location or its oid, NEW an absolute directory. */
export interface TablespaceMapping {
  from: string
  to: string
}

/**
 * Parses `OLD=NEW`. As in pg_basebackup, `\=` stands for a literal `=` on either side.
 * @throws UsageError on a malformed mapping
 */
export function parseTablespaceMapping(text: string): TablespaceMapping {
  let from = ''
  let to = ''
  let seen = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (c === '\\' && text[i + 1] === '=') {
      if (seen) to += '='
      else from += '='
      i++
    } else if (c === '=') {
      if (seen) throw new UsageError(`tablespace mapping '${text}' has more than one '='`, { hint: "write '\\=' for an '=' inside a path" })
      seen = true
    } else if (seen) to += c
    else from += c
  }
  if (!seen || from === '' || to === '') {
    throw new UsageError(`invalid tablespace mapping '${text}'`, { hint: 'use OLD=NEW, where OLD is the original location or the oid' })
  }
  if (!isAbsolute(to)) throw new UsageError(`new tablespace location '${to}' is not an absolute path`)
  if (!/^[0-9]+$/.test(from) && !isAbsolute(from)) {
    throw new UsageError(`old tablespace location '${from}' is neither an absolute path nor an oid`)
  }
  return { from, to }
}

const clean = (p: string) => {
  const n = normalize(p)
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n
}

/**
 * Resolves every tablespace of a backup to the directory it is restored into.
 * @param ownLinks oid → where the target's existing pg_tblspc/<oid> link points (delta restores): the default
 *   for a tablespace no mapping names, before its original location
 * @throws UsageError when a mapping names no tablespace of the backup, two tablespaces would share a directory,
 *   or a tablespace would land inside the data directory (or the data directory inside it)
 */
export function resolveTablespaceLocations(
  tablespaces: readonly { oid: number; location: string }[],
  mappings: readonly TablespaceMapping[],
  pgdata: string,
  ownLinks: ReadonlyMap<number, string> = new Map(),
): Map<number, string> {
  const out = new Map<number, string>()
  const used = new Set<TablespaceMapping>()
  const known = tablespaces.map((t) => `${t.oid} at '${t.location}'`).join(', ') || 'none'
  for (const t of tablespaces) {
    if (!isAbsolute(t.location)) {
      throw new UsageError(`tablespace ${t.oid} has no absolute location ('${t.location}'); pgkeep cannot restore in-place tablespaces`)
    }
    const matches = mappings.filter((m) => m.from === String(t.oid) || clean(m.from) === clean(t.location))
    if (matches.length > 1) throw new UsageError(`tablespace ${t.oid} at '${t.location}' is mapped more than once`)
    if (matches[0]) used.add(matches[0])
    out.set(t.oid, clean(matches[0]?.to ?? ownLinks.get(t.oid) ?? t.location))
  }
  for (const m of mappings) {
    if (!used.has(m)) {
      throw new UsageError(`tablespace mapping '${m.from}=${m.to}' matches no tablespace of the backup`, { hint: `the backup's tablespaces: ${known}` })
    }
  }
  const data = clean(pgdata)
  const seen = new Map<string, number>()
  for (const [oid, loc] of out) {
    const other = [...seen].find(([l]) => inside(l, loc) || inside(loc, l))
    if (other) throw new UsageError(`tablespaces ${other[1]} and ${oid} would be restored into overlapping directories '${other[0]}' and '${loc}'`)
    seen.set(loc, oid)
    if (inside(loc, data) || inside(data, loc)) {
      throw new UsageError(`tablespace ${oid} would be restored into '${loc}', which overlaps the data directory '${data}'`, {
        hint: 'map it elsewhere with --tablespace-mapping',
      })
    }
  }
  return out
}
