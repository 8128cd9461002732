import { describe, expect, it } from 'vitest'
import { decodeChunk, encodeChunk, type FileEntry, inlineExtents } from '../../src/repo/file-list.js'
import { fileMapOf, INLINE_FILE_MAP_MAX_PAGES, inlineFileMap, inlineFileMapOf } from '../../src/repo/inline-file-map.js'
import { decodeFileMap, encodeFileMap, type FileMap } from '../../src/repo/file-map.js'

const id = (c: string) => c.repeat(64)
const entries: FileEntry[] = [
  { path: 'base', type: 'directory', mode: 0o700, mtime: 1_700_000_000, sizeBytes: 0 },
  {
    path: 'base/5/16384',
    type: 'file',
    mode: 0o600,
    mtime: 1_700_000_001,
    sizeBytes: 8192,
    crc32c: '0a1b2c3d',
    extents: [{ offset: 0, length: 8192, blob: id('a'), blobOffset: 0 }],
  },
  { path: 'base/5/16384_fsm', type: 'file', mode: 0o600, mtime: 1_700_000_002, sizeBytes: 24576, fileMap: id('b') },
  {
    path: 'base/5/16384_vm',
    type: 'file',
    mode: 0o600,
    mtime: 1_700_000_002,
    sizeBytes: 8192,
    extents: [{ offset: 0, length: 8192, blob: id('d'), blobOffset: 8192 }],
    // One page: its XXH64 (8 bytes) and CRC-32C (4 bytes).
    fileMap: { pages: Buffer.from('0102030405060708a1b2c3d4', 'hex').toString('base64') },
  },
  // Names beyond ASCII (a user's file in the data directory), two, three and four bytes of UTF-8 per character.
  { path: 'base/5/ünïcödé-€-\u{1F418}', type: 'file', mode: 0o600, mtime: 1_700_000_003, sizeBytes: 0 },
  { path: 'pg_tblspc/16385', type: 'symlink', mode: 0o777, mtime: 1_700_000_004, sizeBytes: 0, linkTarget: '/srv/ts1' },
]

describe('a file list chunk', () => {
  it('decodes what encodeChunk wrote, names beyond ASCII included', () => {
    expect(decodeChunk(encodeChunk(entries), 'chunk')).toEqual(entries)
  })

  it('takes a last line without its newline and skips empty lines', () => {
    const text = encodeChunk(entries).toString('utf8')
    const lines = text.trimEnd().split('\n')
    expect(decodeChunk(Buffer.from(lines.join('\n')), 'chunk')).toEqual(entries)
    expect(decodeChunk(Buffer.from(`\n${lines.join('\n\n')}\n\n`), 'chunk')).toEqual(entries)
    expect(decodeChunk(Buffer.alloc(0), 'chunk')).toEqual([])
  })

  it('checks the count and the first and last paths against the backup record', () => {
    const bytes = encodeChunk(entries)
    expect(decodeChunk(bytes, 'chunk', { first: 'base', last: 'pg_tblspc/16385', count: 6, blob: id('c') })).toHaveLength(6)
    expect(() => decodeChunk(bytes, 'chunk', { first: 'base', last: 'pg_tblspc/16385', count: 5, blob: id('c') })).toThrow(/holds 6 entries/)
  })

  it('refuses a line that is no JSON, entries out of order or twice, and a damaged entry, naming the chunk', () => {
    const lines = encodeChunk(entries).toString('utf8').trimEnd().split('\n')
    const refused: [string[], RegExp][] = [
      [[lines[0]!, '["base/5/1", "f", 384'], /chunk 'X': a file entry is not valid JSON/],
      [[lines[1]!, lines[0]!], /entry 'base' is out of order or listed twice/],
      [[lines[1]!, lines[1]!], /out of order or listed twice/],
      [[lines[1]!.replace(id('a'), id('A'))], /malformed blob id/],
      [[lines[1]!.replace('"base/5/16384"', '"base/../../etc/passwd"')], /'\.\.' segment/],
    ]
    for (const [chunk, why] of refused) expect(() => decodeChunk(Buffer.from(chunk.join('\n')), "chunk 'X'"), chunk.join(' | ')).toThrow(why)
  })

  it('splits lines on the newline byte alone: a multi-byte character never holds one', () => {
    // U+0A0A is 0xE0 0xA8 0x8A in UTF-8: no byte 0x0A in it.
    const odd: FileEntry = { path: 'base/\u0a0a', type: 'file', mode: 0o600, mtime: 1, sizeBytes: 0 }
    expect(decodeChunk(encodeChunk([odd]), 'chunk')).toEqual([odd])
  })

  it('carries the file map of a small relation file inline, the same map as its blob would hold', () => {
    // Two pages, one blob, then a hole.
    const map: FileMap = {
      sizeBytes: 3 * 8192,
      pageHashAlgorithm: 'xxh64',
      pageHashes: Buffer.from('11'.repeat(16) + '00'.repeat(8), 'hex'),
      pageCrcs: Buffer.from('aabbccdd'.repeat(2) + '23464490', 'hex'),
      extents: [
        { offset: 0, length: 2 * 8192, blob: id('e'), blobOffset: 0 },
        { offset: 2 * 8192, length: 8192, blob: null, blobOffset: 0 },
      ],
    }
    const extents = inlineExtents(map)!
    const inline = inlineFileMap(map, extents)!
    expect(inline.pages).toHaveLength(48) // 36 bytes of base64
    const e: FileEntry = { path: 'base/5/16390', type: 'file', mode: 0o600, mtime: 1, sizeBytes: map.sizeBytes, extents, fileMap: inline }
    const [back] = decodeChunk(encodeChunk([e]), 'chunk')
    expect(back).toEqual(e)
    // The map rebuilt from the entry encodes to the bytes of the map as a blob.
    expect(encodeFileMap(inlineFileMapOf(back!, inline))).toEqual(encodeFileMap(map))
    return fileMapOf(back!, inline, () => Promise.reject(new Error('an inline map reads no blob'))).then((m) =>
      expect(encodeFileMap(m)).toEqual(encodeFileMap(map)),
    )
  })

  it('keeps a map in a blob when the file is larger, its extents are not listed, or the map has no page CRCs', () => {
    const pages = (n: number): FileMap => ({
      sizeBytes: n * 8192,
      pageHashAlgorithm: 'xxh64',
      pageHashes: Buffer.alloc(8 * n, 1),
      pageCrcs: Buffer.alloc(4 * n, 2),
      extents: [{ offset: 0, length: n * 8192, blob: id('f'), blobOffset: 0 }],
    })
    const largest = pages(INLINE_FILE_MAP_MAX_PAGES)
    expect(inlineFileMap(largest, inlineExtents(largest))).toBeDefined()
    const larger = pages(INLINE_FILE_MAP_MAX_PAGES + 1)
    expect(inlineFileMap(larger, inlineExtents(larger))).toBeUndefined()
    expect(inlineFileMap(pages(1), undefined)).toBeUndefined()
    const v2 = { ...pages(1), pageCrcs: undefined }
    expect(inlineFileMap(v2, inlineExtents(v2))).toBeUndefined()
    // A blob id is read and decoded.
    const blob = encodeFileMap(pages(2))
    return fileMapOf(entries[1]!, id('9'), (which) => Promise.resolve(which === id('9') ? blob : Buffer.alloc(0))).then((m) =>
      expect(m).toEqual(decodeFileMap(blob)),
    )
  })

  it('refuses an inline map that is malformed, of the wrong size, or in an entry without extents', () => {
    const line = encodeChunk([entries[3]!]).toString('utf8').trimEnd()
    const pages = Buffer.from('0102030405060708a1b2c3d4', 'hex').toString('base64')
    const refused: [string, RegExp][] = [
      [line.replace(`{"pages":"${pages}"}`, `{"pages":"${pages}","x":1}`), /malformed inline file map/],
      [line.replace(`{"pages":"${pages}"}`, '{"pages":12}'), /malformed inline file map/],
      [line.replace(`{"pages":"${pages}"}`, `{"pages":"${pages.slice(0, -4)}"}`), /inline file map of 9 bytes, its 8192-byte file needs 12/],
      [line.replace(`{"pages":"${pages}"}`, `{"pages":"${'A'.repeat(400)}"}`), /malformed inline file map/],
      // Not canonical base64: padding that 12 bytes do not have.
      [line.replace(`{"pages":"${pages}"}`, `{"pages":"${pages}=="}`), /malformed inline file map/],
      [line.replace(/\[\[0,8192,"d+",8192\]\]/, 'null'), /inline file map but is no small relation file with extents/],
      // A file of no whole number of pages.
      [line.replace('8192,null,[[0,8192,', '8000,null,[[0,8000,'), /inline file map but is no small relation file with extents/],
    ]
    for (const [text, why] of refused) {
      expect(text).not.toBe(line)
      expect(() => decodeChunk(Buffer.from(text), "chunk 'X'"), text).toThrow(why)
    }
  })
})
