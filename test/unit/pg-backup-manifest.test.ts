// src/pg/backup-manifest.ts on real manifests: version 1 from pg_basebackup 15 (a tablespace, a name needing JSON
// escapes, a non-UTF-8 name) and version 2 from a 17 incremental BASE_BACKUP. The writer must give back the
// server's exact bytes, and so its Manifest-Checksum.

import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { FormatError, IntegrityError } from '../../src/errors.js'
import { computeManifestChecksum, type ManifestFile, ManifestStream, parseServerManifest, type ServerManifest } from '../../src/pg/backup-manifest.js'
import { escapeJsonString, formatManifest, formatManifestTimestamp, ManifestWriter, manifestChunks } from '../../src/pg/backup-manifest-writer.js'
import { crc32c, crc32cHexLE } from '../../src/pg/crc32c.js'
import { parseBackupLabel } from '../../src/pg/backup-label.js'
import { facts, fixture, fixtureText, need } from '../fixtures/pg/fixtures.js'

const text = (b: Uint8Array): string => new TextDecoder().decode(b)

describe('parseServerManifest', () => {
  it('reads a real version 1 manifest (15)', () => {
    const bytes = fixture('backup_manifest-15.gz')
    const m = parseServerManifest(bytes)
    expect(m.version).toBe(1)
    expect(m.systemId).toBeUndefined()
    expect(m.files.length).toBe(
      text(bytes)
        .split('\n')
        .filter((l) => l.startsWith('{ "Path"') || l.startsWith('{ "Encoded-Path"')).length,
    )
    // The manifest checksum is the SHA-256 of everything before the last line.
    const all = text(bytes)
    const lastLine = all.slice(all.lastIndexOf('\n', all.length - 2) + 1)
    const sha = createHash('sha256')
      .update(all.slice(0, all.length - lastLine.length))
      .digest('hex')
    expect(m.manifestChecksum).toBe(sha)
    expect(computeManifestChecksum(bytes)).toBe(sha)
    // WAL range: the backup's start on its timeline, as backup_label says.
    const label = parseBackupLabel(fixtureText('backup_label-15'))
    expect(m.walRanges).toHaveLength(1)
    expect(m.walRanges[0]).toMatchObject({ timeline: 1, startLsn: label.startLsn })
    expect(m.walRanges[0]!.endLsn > label.startLsn).toBe(true)
    // The file with a quote, a tab, a control character and a backslash in its name, and the non-UTF-8 one.
    expect(m.files.find((f) => f.path === 'weird "q"\t\x01\\.txt')).toMatchObject({ size: 1, checksum: crc32cHexLE(crc32c(new TextEncoder().encode('q'))) })
    const encoded = m.files.find((f) => f.pathBytes !== undefined)!
    expect(Buffer.from(encoded.pathBytes!).toString('latin1')).toBe('bad\xff.txt')
    expect(encoded.path).toBe('bad\ufffd.txt')
    expect(encoded.checksum).toBe(crc32cHexLE(crc32c(new TextEncoder().encode('b'))))
    for (const f of m.files) expect(f.lastModified).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} GMT$/)
  })

  it('reads a real version 2 manifest (17) with its exact 64-bit System-Identifier', () => {
    const m = parseServerManifest(fixture('backup_manifest-17-incremental.gz'))
    expect(m.version).toBe(2)
    const id = BigInt(need(facts(17), 'system_identifier'))
    expect(id > BigInt(Number.MAX_SAFE_INTEGER)).toBe(true)
    expect(m.systemId).toBe(id)
    // JSON.parse alone would have rounded it.
    expect(BigInt(JSON.parse(`[${id}]`)[0])).not.toBe(id)
    const label = parseBackupLabel(fixtureText('backup_label-17-incremental'))
    expect(m.walRanges[0]!.startLsn).toBe(label.startLsn)
  })

  it('rejects tampering, truncation and structural errors', () => {
    const good = text(fixture('backup_manifest-15.gz'))
    expect(() => parseServerManifest(good.replace('"Size": 3,', '"Size": 4,'))).toThrow(IntegrityError)
    expect(parseServerManifest(good.replace('"Size": 3,', '"Size": 4,'), { verifyChecksum: false }).files.length).toBeGreaterThan(0)
    expect(() => parseServerManifest(good.slice(0, -1))).toThrow(/newline-terminated/)
    expect(() => parseServerManifest(good.slice(0, 1000))).toThrow(FormatError)
    const v2 = text(fixture('backup_manifest-17-incremental.gz'))
    const cases: [string, RegExp][] = [
      [v2.replace(/"System-Identifier": \d+,\n/, ''), /without System-Identifier/],
      [good.replace('"PostgreSQL-Backup-Manifest-Version": 1,', '"PostgreSQL-Backup-Manifest-Version": 1,\n"System-Identifier": 1,'), /version 1/],
      [v2.replace(/"System-Identifier": \d+/, '"System-Identifier": 18446744073709551616'), /64-bit/],
      [v2.replace(/"System-Identifier": \d+/, '"System-Identifier": 1.5'), /64-bit/],
      [good.replace('"PostgreSQL-Backup-Manifest-Version": 1', '"PostgreSQL-Backup-Manifest-Version": 3'), /version '3'/],
      [good.replace('"Files"', '"Extra": 1,\n"Files"'), /unexpected key 'Extra'/],
      [good.replace('{ "Path": "backup_label",', '{ "Path": "backup_label", "Mode": 1,'), /unexpected file field/],
      [good.replace('{ "Path": "PG_VERSION",', '{ "Path": "backup_label",'), /duplicate path/],
      [good.replace(/"Checksum-Algorithm": "CRC32C", ("Checksum": "[0-9a-f]+")/, '$1'), /checksum but no algorithm/],
      [good.replace(/"Checksum": "([0-9a-f]{8})"/, '"Checksum": "$1aa"'), /invalid checksum/],
      [good.replace(/"Start-LSN": "[^"]+"/, '"Start-LSN": "x"'), /invalid LSN/],
    ]
    for (const [bad, message] of cases) expect(() => parseServerManifest(bad, { verifyChecksum: false })).toThrow(message)
    expect(() => parseServerManifest('{"a":\n1}\n')).toThrow(FormatError)
    expect(() => parseServerManifest(Uint8Array.from([0x7b, 0xff, 0x0a, 0x7d, 0x0a]))).toThrow(/UTF-8/)
  })

  // The server writes one file a line, and those lines are parsed one at a time; any other layout is parsed whole.
  // Either way the text means what JSON.parse says it means.
  it('reads the files line by line and any other layout whole, with the same meaning', () => {
    const good = text(fixture('backup_manifest-15.gz'))
    const m = parseServerManifest(good)
    const parse = (t: string) => parseServerManifest(t, { verifyChecksum: false })
    const lines = good.split('\n')
    const first = lines.findIndex((l) => l.startsWith('{ "Path"'))
    // Two files on one line, and every file on one line: the whole text is parsed.
    const joined = [...lines.slice(0, first), `${lines[first]} ${lines[first + 1]}`, ...lines.slice(first + 2)].join('\n')
    expect(parse(joined).files).toEqual(m.files)
    const oneLine = good.replace(/,\n\{ "/g, ', { "')
    expect(oneLine.split('\n').length).toBeLessThan(10)
    expect(parse(oneLine).files).toEqual(m.files)
    // A second Files key: JSON.parse takes the last one, and so does the parse.
    expect(parse(good.replace('"WAL-Ranges"', '"Files": [],\n"WAL-Ranges"')).files).toEqual([])
    // A trailing comma after the last file, a missing comma between two: not JSON.
    const last = lines.findIndex((l) => l.startsWith(']'))
    expect(() => parse([...lines.slice(0, last - 1), `${lines[last - 1]},`, ...lines.slice(last)].join('\n'))).toThrow(FormatError)
    expect(() => parse(good.replace(/\},\n\{ "Path": "PG_VERSION"/, '}\n{ "Path": "PG_VERSION"'))).toThrow(FormatError)
    // A byte order mark before the text is skipped, as before.
    expect(parse(`\ufeff${good}`).files).toEqual(m.files)
    // No files at all.
    const empty = [...lines.slice(0, first), ...lines.slice(last)].join('\n')
    expect(parse(empty).files).toEqual([])
    expect(parse(empty).walRanges).toEqual(m.walRanges)
  })
})

describe('manifest writer', () => {
  const realManifests = ['backup_manifest-15.gz', 'backup_manifest-17-incremental.gz']

  for (const name of realManifests) {
    it(`reproduces ${name} byte for byte`, async () => {
      const original = fixture(name)
      const m: ServerManifest = parseServerManifest(original)
      const out = formatManifest({ version: m.version, systemId: m.systemId, files: m.files, walRanges: m.walRanges })
      expect(text(out)).toBe(text(original))
      expect(Buffer.compare(Buffer.from(out), Buffer.from(original))).toBe(0)
      // Streaming, in small chunks, gives the same bytes.
      const chunks: Uint8Array[] = []
      async function* files() {
        yield* m.files
      }
      for await (const c of manifestChunks({ version: m.version, systemId: m.systemId }, files(), m.walRanges, 1000)) chunks.push(c)
      expect(chunks.length).toBeGreaterThan(10)
      expect(Buffer.compare(Buffer.concat(chunks), Buffer.from(original))).toBe(0)
    })
  }

  it('writes Date timestamps, CRC checksums, escapes and Encoded-Path as the server does', () => {
    const w = new ManifestWriter({ version: 2, systemId: 7710495661608007203n })
    const parts = [
      w.addFile({
        path: 'a"b\\c\b\f\n\r\t\x01\x1f\x7f é',
        size: 0,
        lastModified: new Date(Date.UTC(2026, 10, 21, 5, 27, 37, 999)),
        checksumAlgorithm: 'CRC32C',
        checksum: crc32cHexLE(0x87208743),
      }),
      w.addFile({ path: Uint8Array.from([0x62, 0xff]), size: 12, lastModified: '2026-11-21 05:27:37 GMT' }),
      w.addFile({ path: 'x', pathBytes: Uint8Array.from([0x78]), size: 1, lastModified: '2026-11-21 05:27:37 GMT' }),
      w.finish([
        { timeline: 2, startLsn: 0x5000000n, endLsn: 0x5000100n },
        { timeline: 1, startLsn: 0x3000028n, endLsn: 0x5000000n },
      ]),
    ]
    const out = text(Buffer.concat(parts))
    const body =
      '{ "PostgreSQL-Backup-Manifest-Version": 2,\n"System-Identifier": 7710495661608007203,\n"Files": [\n' +
      '{ "Path": "a\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f\x7f é", "Size": 0, "Last-Modified": "2026-11-21 05:27:37 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "43872087" },\n' +
      '{ "Encoded-Path": "62ff", "Size": 12, "Last-Modified": "2026-11-21 05:27:37 GMT" },\n' +
      '{ "Path": "x", "Size": 1, "Last-Modified": "2026-11-21 05:27:37 GMT" }\n' +
      '],\n"WAL-Ranges": [\n' +
      '{ "Timeline": 2, "Start-LSN": "0/5000000", "End-LSN": "0/5000100" },\n' +
      '{ "Timeline": 1, "Start-LSN": "0/3000028", "End-LSN": "0/5000000" }\n' +
      '],\n'
    expect(out).toBe(`${body}"Manifest-Checksum": "${createHash('sha256').update(body).digest('hex')}"}\n`)
    const back = parseServerManifest(out)
    expect(back.files[0]!.path).toBe('a"b\\c\b\f\n\r\t\x01\x1f\x7f é')
    expect(back.files[1]!.pathBytes).toEqual(Uint8Array.from([0x62, 0xff]))
    expect(back.walRanges[1]).toEqual({ timeline: 1, startLsn: 0x3000028n, endLsn: 0x5000000n })
  })

  it('writes an empty manifest the way the server would, and force-encodes on request', () => {
    const empty = text(formatManifest({ version: 1, files: [], walRanges: [] }))
    expect(empty.startsWith('{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n],\n"WAL-Ranges": [\n\n],\n"Manifest-Checksum": ')).toBe(true)
    expect(parseServerManifest(empty).files).toEqual([])
    const forced = text(
      formatManifest({ version: 1, forceEncode: true, files: [{ path: 'base/1', size: 0, lastModified: '2026-11-21 05:27:37 GMT' }], walRanges: [] }),
    )
    expect(forced).toContain('{ "Encoded-Path": "626173652f31", "Size": 0,')
    expect(parseServerManifest(forced).files[0]!.path).toBe('base/1')
  })

  it('refuses what the server could not have written', () => {
    const f = { path: 'a', size: 1, lastModified: '2026-11-21 05:27:37 GMT' }
    expect(() => new ManifestWriter({ version: 2 })).toThrow(FormatError)
    expect(() => new ManifestWriter({ version: 1, systemId: 1n })).toThrow(FormatError)
    const w = () => new ManifestWriter({ version: 1 })
    expect(() => w().addFile({ ...f, path: '' })).toThrow(FormatError)
    expect(() => w().addFile({ ...f, path: 'a\ud800' })).toThrow(/UTF-8/)
    expect(() => w().addFile({ ...f, size: -1 })).toThrow(FormatError)
    expect(() => w().addFile({ ...f, lastModified: '2026-11-21T05:27:37Z' })).toThrow(FormatError)
    expect(() => w().addFile({ ...f, checksumAlgorithm: 'CRC32C', checksum: 'abc' })).toThrow(FormatError)
    expect(() => w().addFile({ ...f, checksum: '00000000' })).toThrow(FormatError)
    const done = w()
    done.finish([])
    expect(() => done.addFile(f)).toThrow(/finished/)
  })

  it('formats timestamps and escapes like PostgreSQL', () => {
    expect(formatManifestTimestamp(new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 678)))).toBe('2026-01-02 03:04:05 GMT')
    expect(escapeJsonString('plain/path_1.2')).toBe('"plain/path_1.2"')
    expect(escapeJsonString('\u0000\u0007\u000b')).toBe('"\\u0000\\u0007\\u000b"')
  })
})

describe('ManifestStream', () => {
  /** `bytes` pushed in chunks of `size` (each overwritten after the push, as the protocol's buffer is). */
  function stream(bytes: Uint8Array, size: number): { files: ManifestFile[]; s: ManifestStream } {
    const files: ManifestFile[] = []
    const s = new ManifestStream((f) => files.push(f))
    for (let at = 0; at < bytes.length; at += size) {
      const chunk = Buffer.from(bytes.subarray(at, at + size))
      s.push(chunk)
      chunk.fill(0x20)
    }
    return { files, s }
  }
  /** A manifest with `body` (everything before the checksum line) and its right checksum. */
  const withChecksum = (body: string) => `${body}"Manifest-Checksum": "${createHash('sha256').update(body).digest('hex')}"}\n`
  const fifteen = text(fixture('backup_manifest-15.gz'))
  const bodyOf = (t: string) => t.slice(0, t.lastIndexOf('\n', t.length - 2) + 1)

  it('means what parseServerManifest means, for real manifests in chunks of any size', () => {
    for (const name of ['backup_manifest-15.gz', 'backup_manifest-17-incremental.gz']) {
      const bytes = fixture(name)
      const whole = parseServerManifest(bytes)
      for (const size of [1, 7, 100, 4096, bytes.length]) {
        const { files, s } = stream(bytes, size)
        expect(s.streamable).toBe(true)
        expect({ ...s.finish()!, files }).toEqual(whole)
      }
    }
  })

  it('gives up (streamable false, finish undefined) on any layout PostgreSQL does not write', () => {
    const lines = bodyOf(fifteen).split('\n')
    const firstFile = lines.indexOf('"Files": [') + 1
    const files = parseServerManifest(fifteen).files.length
    // Each layout, and what the whole parse (which the caller falls back to) makes of it: the fixture's files, none
    // (JSON takes the last Files key), or a refusal.
    const layouts: Record<string, [string, number | 'refused']> = {
      'a byte order mark': [`\ufeff${bodyOf(fifteen)}`, files],
      'two files on a line': [[...lines.slice(0, firstFile), lines[firstFile]! + lines[firstFile + 1]!, ...lines.slice(firstFile + 2)].join('\n'), files],
      'everything on one line': [bodyOf(fifteen).replace(/\n(?!$)/g, ' '), files],
      "a file line ending with a comma before ']'": [bodyOf(fifteen).replace(/}\n],/, '},\n],'), 'refused'],
      'a second Files key': [bodyOf(fifteen).replace('"WAL-Ranges"', '"Files": [],\n"WAL-Ranges"'), 0],
    }
    for (const [what, [body, whole]] of Object.entries(layouts)) {
      const bytes = Buffer.from(withChecksum(body))
      if (whole === 'refused') expect(() => parseServerManifest(bytes), what).toThrow(FormatError)
      else expect(parseServerManifest(bytes).files.length, what).toBe(whole)
      const { s } = stream(bytes, 100)
      expect(s.finish(), what).toBeUndefined()
    }
    // Not newline-terminated.
    const { s } = stream(Buffer.from(fifteen.slice(0, -1)), 100)
    expect(s.finish()).toBeUndefined()
  })

  it('throws what the whole parse throws: a file line that fails its checks at once, a checksum that does not match at the end', () => {
    const lines = fifteen.split('\n')
    const firstFile = lines.indexOf('"Files": [') + 1
    const twice = [...lines.slice(0, firstFile + 1), lines[firstFile]!, ...lines.slice(firstFile + 1)].join('\n')
    expect(() => parseServerManifest(twice)).toThrow(/duplicate path/)
    expect(() => stream(Buffer.from(twice), 100)).toThrow(/duplicate path/)
    const damaged = fifteen.replace('"Size": 3,', '"Size": 4,')
    expect(() => parseServerManifest(damaged)).toThrow(IntegrityError)
    const { s } = stream(Buffer.from(damaged), 100)
    expect(() => s.finish()).toThrow(IntegrityError)
    expect(s.finish({ verifyChecksum: false })?.walRanges).toEqual(parseServerManifest(fifteen).walRanges)
  })
})
