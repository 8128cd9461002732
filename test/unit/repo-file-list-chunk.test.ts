import { describe, expect, it } from 'vitest'
import { decodeChunk, encodeChunk, type FileEntry } from '../../src/repo/file-list.js'

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
    expect(decodeChunk(bytes, 'chunk', { first: 'base', last: 'pg_tblspc/16385', count: 5, blob: id('c') })).toHaveLength(5)
    expect(() => decodeChunk(bytes, 'chunk', { first: 'base', last: 'pg_tblspc/16385', count: 4, blob: id('c') })).toThrow(/holds 5 entries/)
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
})
