// `tablespace_map`: one `<oid> <path>` line per symlinked tablespace, with the escaping of PostgreSQL 14+
// (backslash before \n, \r and \) or of 13 (backslash before \n and \r only)
// (src/backend/access/transam/xlog.c do_pg_backup_start; xlogrecovery.c read_tablespace_map).

import { FormatError } from '../errors.js'

/** One tablespace: its oid and the absolute location its `pg_tblspc/<oid>` symlink points to. */
export interface TablespaceMapEntry {
  oid: number
  path: string
}

/** Which server wrote (or will read) the file; only the escaping differs: 13 does not escape backslashes. */
export interface TablespaceMapOptions {
  /** Server major version; 14 and later unless given. */
  major?: number
}

const legacy = (o: TablespaceMapOptions | undefined): boolean => o?.major !== undefined && o.major < 14

function entry(line: string, o: TablespaceMapOptions | undefined): TablespaceMapEntry {
  let oidText: string
  let path: string
  if (legacy(o)) {
    // PostgreSQL 13: sscanf("%s %n"): the oid, then any white space, then the path.
    const m = /^(\S+)\s+([\s\S]*)$/.exec(line)
    if (m === null) throw new FormatError(`invalid data in tablespace_map: '${line}'`)
    oidText = m[1]!
    path = m[2]!
  } else {
    // 14+: the oid, exactly one space, then the path (which may itself start with spaces).
    const space = line.indexOf(' ')
    if (space < 1 || space >= line.length - 1) throw new FormatError(`invalid data in tablespace_map: '${line}'`)
    oidText = line.slice(0, space)
    path = line.slice(space + 1)
  }
  if (!/^[0-9]+$/.test(oidText) || Number(oidText) > 0xffff_ffff) {
    throw new FormatError(`invalid tablespace oid '${oidText}' in tablespace_map`)
  }
  return { oid: Number(oidText), path }
}

/**
 * Parses tablespace_map, undoing the escaping: an unescaped `\n` or `\r` ends a line (empty lines are skipped, so
 * `\r\n` works), and a backslash makes the next character literal (14+; on 13 only before `\n`/`\r`).
 * @throws FormatError on a malformed line or an unterminated last line
 */
export function parseTablespaceMap(content: string | Uint8Array, o?: TablespaceMapOptions): TablespaceMapEntry[] {
  const text = typeof content === 'string' ? content : new TextDecoder().decode(content)
  const entries: TablespaceMapEntry[] = []
  let line = ''
  let escaped = false
  for (const ch of text) {
    const eol = ch === '\n' || ch === '\r'
    if (legacy(o)) {
      if (eol && line.endsWith('\\')) {
        line = line.slice(0, -1) + ch
        continue
      }
      if (eol) {
        if (line !== '') entries.push(entry(line, o))
        line = ''
        continue
      }
      line += ch
      continue
    }
    if (!escaped && eol) {
      if (line !== '') entries.push(entry(line, o))
      line = ''
    } else if (!escaped && ch === '\\') {
      escaped = true
    } else {
      line += ch
      escaped = false
    }
  }
  if (line !== '' || escaped) throw new FormatError('tablespace_map ends without a newline')
  return entries
}

/**
 * Formats tablespace_map as the server writes it: `<oid> <escaped path>\n` per entry, in the given order.
 * @throws FormatError on an invalid oid or an empty path
 */
export function formatTablespaceMap(entries: readonly TablespaceMapEntry[], o?: TablespaceMapOptions): string {
  const special = legacy(o) ? /[\n\r]/g : /[\n\r\\]/g
  return entries
    .map((e) => {
      if (!Number.isInteger(e.oid) || e.oid < 1 || e.oid > 0xffff_ffff) throw new FormatError(`invalid tablespace oid ${e.oid}`)
      if (e.path === '') throw new FormatError(`empty path for tablespace ${e.oid}`)
      return `${e.oid} ${e.path.replace(special, (c) => `\\${c}`)}\n`
    })
    .join('')
}
