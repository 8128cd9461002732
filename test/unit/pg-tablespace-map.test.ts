// src/pg/tablespace-map.ts on the tablespace_map a real 15 server wrote for a location with a space and a backslash.

import { describe, expect, it } from 'vitest'
import { FormatError } from '../../src/errors.js'
import { formatTablespaceMap, parseTablespaceMap } from '../../src/pg/tablespace-map.js'
import { fixtureText, keyValues, need } from '../fixtures/pg/fixtures.js'

describe('tablespace_map', () => {
  it('reads the real 15 file (escaped backslash) and writes it back byte for byte', () => {
    const text = fixtureText('tablespace_map-15')
    expect(text).toMatch(/ts 15\\\\x\n$/) // the server escaped the backslash (14+)
    const entries = parseTablespaceMap(text)
    expect(entries).toHaveLength(1)
    expect(entries[0]!.oid).toBe(Number(need(keyValues('relation-15.txt'), 'ts_oid')))
    expect(entries[0]!.path).toMatch(/^\/tmp\/pgkeep-fixtures\.[^/]+\/ts 15\\x$/)
    expect(formatTablespaceMap(entries)).toBe(text)
    expect(formatTablespaceMap(entries, { major: 15 })).toBe(text)
  })

  it('escapes newlines, carriage returns and (14+) backslashes', () => {
    const entries = [
      { oid: 16384, path: '/a b/c\\d' },
      { oid: 16385, path: '/x\ny\rz' },
      { oid: 16386, path: '  /leading spaces' },
    ]
    const v14 = formatTablespaceMap(entries)
    expect(v14).toBe('16384 /a b/c\\\\d\n16385 /x\\\ny\\\rz\n16386   /leading spaces\n')
    expect(parseTablespaceMap(v14)).toEqual(entries)
    const v13 = formatTablespaceMap(entries, { major: 13 })
    expect(v13).toBe('16384 /a b/c\\d\n16385 /x\\\ny\\\rz\n16386   /leading spaces\n')
    // PostgreSQL 13 reads "<oid> <path>" with sscanf("%s %n"), which skips leading spaces of the path.
    expect(parseTablespaceMap(v13, { major: 13 })).toEqual([entries[0], entries[1], { oid: 16386, path: '/leading spaces' }])
  })

  it('accepts CRLF and an empty file, rejects malformed lines', () => {
    expect(parseTablespaceMap('16384 /a\r\n16385 /b\r\n')).toEqual([
      { oid: 16384, path: '/a' },
      { oid: 16385, path: '/b' },
    ])
    expect(parseTablespaceMap('')).toEqual([])
    for (const bad of ['16384 /a', '16384\n', 'x /a\n', '16384 \n', ' 16384 /a\n', '16384 /a\\']) {
      expect(() => parseTablespaceMap(bad), JSON.stringify(bad)).toThrow(FormatError)
    }
    expect(() => formatTablespaceMap([{ oid: 0, path: '/a' }])).toThrow(FormatError)
    expect(() => formatTablespaceMap([{ oid: 1, path: '' }])).toThrow(FormatError)
  })
})
