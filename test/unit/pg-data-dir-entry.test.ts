import { describe, expect, it } from 'vitest'
import {
  absoluteLocationProblem,
  dataDirEntryProblem,
  relativePathProblem,
  restoredMode,
  tablespaceLinkOid,
  tablespaceOidProblem,
} from '../../src/pg/data-dir-entry.js'

describe('the data-directory entry rule', () => {
  it('accepts the paths PostgreSQL sends', () => {
    for (const p of ['backup_label', 'global/pg_control', 'base/1/1259', 'pg_tblspc/16385/PG_15_202209061/5/16390.1', 'pg_wal/archive_status', 'a b\\c'])
      expect(relativePathProblem(p), p).toBeUndefined()
    // Dots are only refused as a whole segment.
    for (const p of ['.x', 'a/...', 'a/..b', 'a/b.', 'a/.b/c', '.../x']) expect(relativePathProblem(p), p).toBeUndefined()
  })

  it('refuses paths that could leave the data directory or are not paths', () => {
    const bad: [unknown, RegExp][] = [
      ['', /empty/],
      ['/etc/passwd', /absolute/],
      ['../x', /'\.\.' segment/],
      ['base/../../x', /'\.\.' segment/],
      ['base/./x', /'\.' segment/],
      ['base//x', /empty segment/],
      ['base/', /empty segment/],
      ['base/.', /'\.' segment/],
      ['..', /'\.\.' segment/],
      ['.', /'\.' segment/],
      ['a/b/..', /'\.\.' segment/],
      ['a\0b', /NUL/],
      [`a/${'x'.repeat(256)}`, /segment is longer/],
      ['x/'.repeat(2100) + 'y', /longer than/],
      [42, /not a string/],
    ]
    for (const [p, why] of bad) expect(relativePathProblem(p), String(p)).toMatch(why)
  })

  it("counts the limits in UTF-8 bytes, not characters (Linux's NAME_MAX and PATH_MAX)", () => {
    // '€' is 3 bytes, '\u{1F418}' 4 (two UTF-16 code units), a lone surrogate 3 (encoded as U+FFFD).
    const segment = '€'.repeat(85)
    expect(relativePathProblem(segment)).toBeUndefined()
    expect(relativePathProblem(`${segment}x`)).toMatch(/segment is longer than 255 bytes/)
    expect(relativePathProblem('\u{1F418}'.repeat(63) + 'abc')).toBeUndefined()
    expect(relativePathProblem('\u{1F418}'.repeat(64))).toMatch(/segment is longer/)
    expect(relativePathProblem('\ud800'.repeat(86))).toMatch(/segment is longer/)
    const path = `${segment}/`.repeat(15) + segment
    expect(Buffer.byteLength(path)).toBe(4095)
    expect(relativePathProblem(path)).toBeUndefined()
    expect(relativePathProblem(`${path}/x`)).toMatch(/path is longer than 4095 bytes/)
  })

  it('allows a symlink only at pg_tblspc/<oid>, pointing at an absolute normalised location', () => {
    expect(dataDirEntryProblem({ path: 'pg_tblspc/16385', type: 'symlink', mode: 0o777, linkTarget: '/srv/ts1' })).toBeUndefined()
    expect(dataDirEntryProblem({ path: 'pg_wal', type: 'symlink', mode: 0o777, linkTarget: '/srv/wal' })).toMatch(/only allowed at pg_tblspc/)
    expect(dataDirEntryProblem({ path: 'pg_tblspc/16385/x', type: 'symlink', mode: 0o777, linkTarget: '/srv/ts1' })).toMatch(/only allowed/)
    expect(dataDirEntryProblem({ path: 'pg_tblspc/0', type: 'symlink', mode: 0o777, linkTarget: '/srv/ts1' })).toMatch(/only allowed/)
    expect(dataDirEntryProblem({ path: 'pg_tblspc/16385', type: 'symlink', mode: 0o777, linkTarget: '../../etc' })).toMatch(/not an absolute/)
    expect(dataDirEntryProblem({ path: 'pg_tblspc/16385', type: 'symlink', mode: 0o777, linkTarget: '/srv/../etc' })).toMatch(/'\.\.' segment/)
    expect(dataDirEntryProblem({ path: 'pg_tblspc/16385', type: 'symlink', mode: 0o777, linkTarget: '/' })).toMatch(/root/)
    expect(dataDirEntryProblem({ path: 'base/1', type: 'directory', mode: 0o700, linkTarget: '/x' })).toMatch(/has a link target/)
  })

  it('refuses other entry types and modes beyond 0777', () => {
    expect(dataDirEntryProblem({ path: 'x', type: 'fifo', mode: 0o600 })).toMatch(/type 'fifo'/)
    expect(dataDirEntryProblem({ path: 'x', type: 'file', mode: 0o4755 })).toMatch(/setuid/)
    expect(dataDirEntryProblem({ path: 'x', type: 'directory', mode: 0o1777 })).toMatch(/sticky/)
    expect(dataDirEntryProblem({ path: 'x', type: 'file', mode: -1 })).toMatch(/not a permission mask/)
    expect(dataDirEntryProblem({ path: 'x', type: 'file', mode: 0o644 })).toBeUndefined()
  })

  it('masks restored modes to what a data directory allows', () => {
    expect(restoredMode('directory', 0o777)).toBe(0o750)
    expect(restoredMode('directory', 0o700)).toBe(0o700)
    expect(restoredMode('file', 0o666)).toBe(0o640)
    expect(restoredMode('file', 0o600)).toBe(0o600)
  })

  it('checks tablespace oids and locations', () => {
    expect(tablespaceOidProblem(16385)).toBeUndefined()
    expect(tablespaceOidProblem('16385')).toBeUndefined()
    for (const bad of [0, -1, 1.5, 2 ** 32, '../x', '016385', '', null, '1/2']) expect(tablespaceOidProblem(bad), String(bad)).toBeDefined()
    expect(tablespaceLinkOid('pg_tblspc/16385')).toBe(16385)
    expect(tablespaceLinkOid('pg_tblspc/99999999999')).toBeUndefined()
    expect(absoluteLocationProblem('/srv/ts1')).toBeUndefined()
    expect(absoluteLocationProblem('srv/ts1')).toMatch(/not an absolute/)
    expect(absoluteLocationProblem('/srv/ts1/')).toMatch(/ends with a slash/)
    expect(absoluteLocationProblem('/srv//ts1')).toMatch(/empty segment/)
  })
})
