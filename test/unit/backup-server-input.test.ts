// The checks of what BASE_BACKUP sends (src/backup/server-input.ts): the tablespace list, archive names, and every
// tar entry against the data-directory rule and PostgreSQL's own layout. The hostile-server integration test sends
// the same kinds of entries over the wire; this pins the messages and the edges.

import { describe, expect, it } from 'vitest'
import { ProtocolError } from '../../src/errors.js'
import { ArchiveEntryCheck, checkArchive, checkTablespaceList, checkVersionDirectories, type RawEntry } from '../../src/backup/server-input.js'

const base = { oid: null, location: null, sizeBytes: null }
const ts = (oid: number, location: string | null) => ({ oid, location, sizeBytes: null })

describe('the tablespace list', () => {
  it('accepts what PostgreSQL sends: tablespaces, then the data directory', () => {
    expect([...checkTablespaceList([ts(16385, '/srv/ts1'), ts(16386, '/srv/ts2'), base])]).toEqual([
      [16385, '/srv/ts1'],
      [16386, '/srv/ts2'],
    ])
    expect(checkTablespaceList([base]).size).toBe(0)
  })

  it('refuses bad oids, relative or unnormalised locations, duplicates and a misplaced data directory row', () => {
    const cases: [unknown[], RegExp][] = [
      [[ts(0, '/srv/ts'), base], /tablespace oid 0 is not a positive 32-bit integer/],
      [[ts(-5, '/srv/ts'), base], /oid -5/],
      [[ts(2 ** 32, '/srv/ts'), base], /oid 4294967296/],
      [[ts(16385, 'relative/ts'), base], /'relative\/ts'.*not an absolute path/],
      [[ts(16385, '/srv/../etc'), base], /'\.\.' segment/],
      [[ts(16385, '/srv/ts/'), base], /ends with a slash/],
      [[ts(16385, '/'), base], /root directory/],
      [[ts(16385, null), base], /not a string/],
      [[ts(16385, '/a'), ts(16385, '/b'), base], /tablespace 16385 appears twice/],
      [[ts(16385, '/a'), ts(16386, '/a'), base], /two tablespaces are at '\/a'/],
      [[base, ts(16385, '/a')], /last row must be the data directory/],
      [[], /last row must be the data directory/],
      [[{ oid: null, location: '/x', sizeBytes: null }], /last row must be the data directory/],
    ]
    for (const [rows, message] of cases) {
      expect(() => checkTablespaceList(rows as never), String(message)).toThrow(ProtocolError)
      expect(() => checkTablespaceList(rows as never), String(message)).toThrow(message)
    }
  })
})

describe('archive names', () => {
  it('are base.tar and <oid>.tar, each once', () => {
    const seen = new Set<string>()
    checkArchive('16385.tar', 16385, seen)
    checkArchive('base.tar', null, seen)
    expect(() => checkArchive('base.tar', null, seen)).toThrow(/archive 'base.tar' twice/)
    expect(() => checkArchive('../base.tar', null, new Set())).toThrow(/archive '\.\.\/base\.tar' for the data directory, not 'base\.tar'/)
    expect(() => checkArchive('16386.tar', 16385, new Set())).toThrow(/for tablespace 16385, not '16385\.tar'/)
  })
})

describe('tar entries', () => {
  const tablespaces = new Map([[16385, '/srv/ts1']])
  const baseCheck = () => new ArchiveEntryCheck({ name: 'base.tar', tablespaceOid: null, tablespaces, major: 16 })
  const tsCheck = () => new ArchiveEntryCheck({ name: '16385.tar', tablespaceOid: 16385, tablespaces, major: 16 })
  const file = (name: string, mode = 0o600): RawEntry => ({ name, type: 'file', mode })
  const dir = (name: string, mode = 0o700): RawEntry => ({ name, type: 'directory', mode })

  it('accepts what PostgreSQL sends and gives the path in the data directory', () => {
    const b = baseCheck()
    expect(b.check(dir('base'))).toBe('base')
    expect(b.check(file('base/5/16397'))).toBe('base/5/16397')
    expect(b.check(file('global/pg_control', 0o640))).toBe('global/pg_control')
    expect(b.check({ name: 'pg_tblspc/16385', type: 'symlink', mode: 0o777, linkTarget: '/srv/ts1' })).toBe('pg_tblspc/16385')
    const t = tsCheck()
    expect(t.check(dir('PG_16_202307071'))).toBe('pg_tblspc/16385/PG_16_202307071')
    expect(t.check(file('PG_16_202307071/5/16400'))).toBe('pg_tblspc/16385/PG_16_202307071/5/16400')
    expect(t.versionDirectory).toBe('PG_16_202307071')
  })

  it('refuses escaping names, foreign types, links elsewhere and special modes, naming archive and entry', () => {
    const cases: [RawEntry, RegExp][] = [
      [file('../x'), /entry '\.\.\/x' that pgkeep refuses: the path has a '\.\.' segment/],
      [file('/etc/x'), /entry '\/etc\/x'.*the path is absolute/],
      [file('base/../../x'), /'\.\.' segment/],
      [file('base//x'), /empty segment/],
      [file('a\u0000b'), /entry 'a\\u0000b'.*NUL/],
      [file(''), /the path is empty/],
      [{ name: 'base/1/evil', type: 'symlink', mode: 0o777, linkTarget: '/etc' }, /a symlink is only allowed at pg_tblspc\/<oid>/],
      [{ name: 'pg_tblspc/16385', type: 'symlink', mode: 0o777, linkTarget: '../../x' }, /link target is not allowed: the location is not an absolute path/],
      [{ name: 'pg_tblspc/16385', type: 'symlink', mode: 0o777, linkTarget: '/etc' }, /links to '\/etc', but tablespace 16385 is at '\/srv\/ts1'/],
      [{ name: 'pg_tblspc/99999', type: 'symlink', mode: 0o777, linkTarget: '/srv/ts1' }, /tablespace 99999 is not in the backup's tablespace list/],
      [file('pg_tblspc/16385/PG_16_202307071/x'), /nothing inside pg_tblspc\/<oid>/],
      [{ name: 'base/1/hard', type: 'link', mode: 0o600, linkTarget: 'base/1/1' }, /entries of type 'link' are not allowed/],
      [{ name: 'base/1/fifo', type: 'fifo', mode: 0o600 }, /type 'fifo'/],
      [{ name: 'base/1/dev', type: 'character-device', mode: 0o600 }, /type 'character-device'/],
      [{ name: 'base/1/dev', type: 'block-device', mode: 0o600 }, /type 'block-device'/],
      [file('base/1/suid', 0o4755), /mode 4755 has bits beyond 0777/],
      [dir('base/1', 0o2750), /mode 2750/],
      [dir('base/1', 0o1777), /mode 1777/],
      [file('base/1/typed', 0o100644), /bits beyond 0777/],
    ]
    for (const [entry, message] of cases) {
      const err = (() => {
        try {
          baseCheck().check(entry)
        } catch (e) {
          return e as ProtocolError
        }
        throw new Error(`accepted ${JSON.stringify(entry)}`)
      })()
      expect(err, entry.name).toBeInstanceOf(ProtocolError)
      expect(err.message, entry.name).toMatch(/^archive 'base\.tar' from the server has entry '/)
      expect(err.message, entry.name).toMatch(message)
      expect(err.hint).toMatch(/nothing was recorded/)
    }
  })

  it('keeps a tablespace archive inside its one PG_<major>_<catversion> directory', () => {
    expect(() => tsCheck().check(file('base/1/x'))).toThrow(/archive '16385\.tar'.*entry 'base\/1\/x'.*holds only its PG_16_<catversion> directory/)
    expect(() => tsCheck().check(dir('PG_15_202209061'))).toThrow(/PG_16_<catversion>/)
    expect(() => tsCheck().check(file('PG_16_202307071'))).toThrow(/PG_16_202307071 must be a directory/)
    const t = tsCheck()
    t.check(dir('PG_16_202307071'))
    expect(() => t.check(dir('PG_16_202307072'))).toThrow(/outside the archive's directory PG_16_202307071/)
    expect(() => tsCheck().check({ name: 'PG_16_202307071/x', type: 'symlink', mode: 0o777, linkTarget: '/etc' })).toThrow(/only allowed at pg_tblspc/)
  })

  it("compares each tablespace directory with the cluster's catalog version, reading pg_control only when needed", () => {
    const t = tsCheck()
    t.check(dir('PG_16_202307071'))
    expect(() => checkVersionDirectories([baseCheck(), t], 16, () => 202307071)).not.toThrow()
    expect(() => checkVersionDirectories([t], 16, () => 202307072)).toThrow(
      /holds directory PG_16_202307071, but the cluster's pg_control says PG_16_202307072/,
    )
    expect(() => checkVersionDirectories([t], 16, () => undefined)).toThrow(/base\.tar has no global\/pg_control/)
    expect(() => checkVersionDirectories([t], 16, () => null)).not.toThrow()
    let read = false
    checkVersionDirectories([baseCheck(), tsCheck()], 16, () => {
      read = true
      return undefined
    })
    expect(read).toBe(false)
  })
})
