// The checks a user gives a drill (`--check FILE`): SQL with the result it must give, in a plain SQL file whose
// directives are comments, so the file also runs in psql. The format (docs/drill.md):
//
//   -- check: orders are all there          starts a check and names it
//   -- database: shop                       optional; default postgres
//   select count(*) from orders;            one SQL statement (any number of lines)
//   -- expect: 1200                         one expected row: columns as PostgreSQL prints them, separated by |
//   -- expect-rows: 0                       or: only the number of rows
//
// In an expected row `\N` is NULL, `\|` a literal `|` and `\\` a backslash. Blank lines, `#` lines and other
// `--` comments outside the SQL are ignored.

import { UsageError } from '../errors.js'

/** One check of a check file. */
export interface UserCheck {
  readonly name: string
  readonly database: string
  readonly sql: string
  /** The rows expected, in order, each a list of column values as text (null for NULL); or only their number. */
  readonly expect: { readonly rows: readonly (readonly (string | null)[])[] } | { readonly rowCount: number }
  /** Line of its `-- check:` directive, for messages. */
  readonly line: number
}

const DIRECTIVE = /^--\s*(check|database|expect|expect-rows)\s*:(.*)$/

/**
 * Parses a check file.
 * @param source the file's name, for messages
 * @throws UsageError naming the line of the first problem
 */
export function parseCheckFile(text: string, source = 'check file'): UserCheck[] {
  const checks: UserCheck[] = []
  type Draft = { name: string; database?: string; sql: string[]; rows: (string | null)[][]; rowCount?: number; line: number }
  let cur: Draft | undefined
  const fail = (line: number, message: string): never => {
    throw new UsageError(`${source}, line ${line}: ${message}`, { hint: "see 'pgkeep drill --help' for the check file format" })
  }
  const finish = () => {
    if (!cur) return
    const sql = cur.sql.join('\n').trim()
    if (sql === '') fail(cur.line, `check '${cur.name}' has no SQL`)
    if (cur.rows.length === 0 && cur.rowCount === undefined) fail(cur.line, `check '${cur.name}' has no '-- expect:' or '-- expect-rows:' line`)
    checks.push({
      name: cur.name,
      database: cur.database ?? 'postgres',
      sql: sql.replace(/;\s*$/, ''),
      expect: cur.rowCount !== undefined ? { rowCount: cur.rowCount } : { rows: cur.rows },
      line: cur.line,
    })
    cur = undefined
  }
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1
    const raw = lines[i]!
    const d = DIRECTIVE.exec(raw.trim())
    if (!d) {
      if (!cur) {
        if (raw.trim() === '' || raw.trim().startsWith('#') || raw.trim().startsWith('--')) continue
        fail(lineNo, "SQL before the first '-- check: NAME' line")
      }
      if (cur!.rows.length > 0 || cur!.rowCount !== undefined) {
        if (raw.trim() === '' || raw.trim().startsWith('#') || raw.trim().startsWith('--')) continue
        fail(lineNo, `SQL after the expected result of check '${cur!.name}' (start a new check with '-- check: NAME')`)
      }
      cur!.sql.push(raw)
      continue
    }
    const [, key, rawValue] = d
    const value = rawValue!.trim()
    if (key === 'check') {
      finish()
      if (value === '') fail(lineNo, "'-- check:' needs a name")
      if (checks.some((c) => c.name === value)) fail(lineNo, `two checks are named '${value}'`)
      cur = { name: value, sql: [], rows: [], line: lineNo }
      continue
    }
    if (!cur) fail(lineNo, `'-- ${key}:' before the first '-- check: NAME' line`)
    const c = cur!
    if (key === 'database') {
      if (c.sql.some((l) => l.trim() !== '')) fail(lineNo, "'-- database:' must come before the SQL")
      if (value === '') fail(lineNo, "'-- database:' needs a name")
      c.database = value
    } else if (key === 'expect-rows') {
      if (!/^[0-9]+$/.test(value)) fail(lineNo, `'-- expect-rows:' needs a number, not '${value}'`)
      if (c.rows.length > 0 || c.rowCount !== undefined) fail(lineNo, `check '${c.name}' has more than one kind of expectation`)
      c.rowCount = Number(value)
    } else {
      if (c.rowCount !== undefined) fail(lineNo, `check '${c.name}' has more than one kind of expectation`)
      // The row's text after 'expect:' with only the one separating space removed, so values may keep spaces.
      const rest = rawValue!.replace(/^ /, '').replace(/\s+$/, '')
      c.rows.push(parseRow(rest, (m) => fail(lineNo, m)))
    }
  }
  finish()
  if (checks.length === 0) throw new UsageError(`${source} holds no check`, { hint: "start each check with a '-- check: NAME' line" })
  return checks
}

/** Splits `a|b|\N` into its values (`\N` is NULL, `\|` and `\\` escapes). */
function parseRow(text: string, fail: (message: string) => never): (string | null)[] {
  const out: (string | null)[] = []
  let cur = ''
  let isNull = false
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!
    if (ch === '\\') {
      const next = text[i + 1]
      if (next === '|' || next === '\\') cur += next
      else if (next === 'N' && cur === '') isNull = true
      else fail(`'\\${next ?? ''}' is not an escape of an expected row (use \\N, \\| or \\\\)`)
      i++
    } else if (ch === '|') {
      out.push(isNull ? null : cur)
      cur = ''
      isNull = false
    } else {
      if (isNull) fail('\\N must be a whole value')
      cur += ch
    }
  }
  out.push(isNull ? null : cur)
  return out
}

/** How a row reads in a message: values joined by |, NULL as \N. */
export function formatRow(row: readonly (string | null)[]): string {
  return row.map((v) => (v === null ? '\\N' : v.replace(/\\/g, '\\\\').replace(/\|/g, '\\|'))).join('|')
}
