// The streaming reader of BASE_BACKUP's tar archives (src/backup/tar-entries.ts): entries arrive in order with their
// content however the bytes are cut into writes, archives written by two other programs (tar-stream and GNU tar)
// read back byte for byte, a write resolves only once the callback is done with its bytes, a failure of the entry
// callback reaches a write() that is waiting, content piped into a sink arrives the same (a sink's promise holds the
// write, its failure fails it), and anything that is not a tar archive as PostgreSQL writes it (a bad
// checksum, a cut archive, bytes after the end) is refused.

import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tar from 'tar-stream'
import { describe, expect, it } from 'vitest'
import { TarArchiveReader } from '../../src/backup/tar-entries.js'

const scope = { name: 'base.tar', tablespaceOid: null, tablespaces: new Map<number, string>(), major: 17 }

type Spec = { name: string; content?: Buffer; type?: 'file' | 'directory' | 'symlink'; linkname?: string }

/** A tar archive of `entries`, written by tar-stream (with its two end blocks). */
async function archive(entries: (Spec | [string, Buffer])[]): Promise<Buffer> {
  const pack = tar.pack()
  for (const e of entries) {
    const s: Spec = Array.isArray(e) ? { name: e[0], content: e[1] } : e
    const header = {
      name: s.name,
      mode: s.type === 'symlink' ? 0o777 : 0o600,
      mtime: new Date(1_700_000_000_000),
      type: s.type ?? 'file',
      linkname: s.linkname,
    }
    if (s.content) pack.entry({ ...header, size: s.content.length }, s.content)
    else pack.entry(header)
  }
  pack.finalize()
  const parts: Buffer[] = []
  for await (const chunk of pack as AsyncIterable<Buffer>) parts.push(chunk)
  return Buffer.concat(parts)
}

/** Feeds `bytes` in writes of `step` bytes, then ends the archive. */
async function feed(reader: TarArchiveReader, bytes: Buffer, step = 8192): Promise<void> {
  for (let at = 0; at < bytes.length; at += step) await reader.write(bytes.subarray(at, at + step))
  await reader.end()
}

interface Seen {
  path: string
  type: string
  mode: number
  mtime: number
  linkTarget?: string
  content: Buffer
}

/** Reads `bytes` in writes of `step` bytes; resolves with every entry and its content. */
async function readAll(bytes: Buffer, step?: number, archiveScope = scope): Promise<Seen[]> {
  const seen: Seen[] = []
  const reader = new TarArchiveReader(archiveScope, async (e) => {
    const parts: Buffer[] = []
    for await (const chunk of e.content) parts.push(Buffer.from(chunk))
    seen.push({ path: e.path, type: e.type, mode: e.mode, mtime: e.mtime, linkTarget: e.linkTarget, content: Buffer.concat(parts) })
  })
  await feed(reader, bytes, step)
  return seen
}

/** Sets the checksum of the header at `at` after it was edited. */
function reseal(bytes: Buffer, at: number): void {
  bytes.fill(0x20, at + 148, at + 156)
  let sum = 0
  for (let i = at; i < at + 512; i++) sum += bytes[i]!
  bytes.write(`${sum.toString(8).padStart(6, '0')}\0 `, at + 148, 'latin1')
}

const FILES: [string, Buffer][] = [
  ['PG_VERSION', Buffer.from('17\n')],
  ['base/1/1259', Buffer.alloc(3 * 8192, 7)],
  ['base/1/odd', Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251))],
  ['global/pg_control', Buffer.alloc(8192, 1)],
]

describe('TarArchiveReader', () => {
  it('hands every entry over in archive order, with its content, however the archive is cut into writes', async () => {
    const bytes = await archive(FILES)
    for (const step of [1, 7, 511, 512, 513, 8192, bytes.length]) {
      const seen = await readAll(bytes, step)
      expect(seen.map((s) => [s.path, s.content])).toEqual(FILES)
      expect(seen.every((s) => s.mtime === 1_700_000_000 && s.mode === 0o600 && s.type === 'file')).toBe(true)
    }
  })

  it('reads what GNU tar writes in ustar format: directories, files of every padding, a symlink in pg_tblspc', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgkeep-tar-'))
    try {
      mkdirSync(join(dir, 'base', '1'), { recursive: true })
      mkdirSync(join(dir, 'pg_tblspc'))
      const sizes = [0, 1, 511, 512, 513, 8192, 100_000]
      const bytesOf = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + n) % 256))
      for (const n of sizes) writeFileSync(join(dir, 'base', '1', `f${n}`), bytesOf(n))
      execFileSync('ln', ['-s', '/srv/ts1', join(dir, 'pg_tblspc', '16385')])
      const names = ['base', 'base/1', ...sizes.map((n) => `base/1/f${n}`), 'pg_tblspc', 'pg_tblspc/16385']
      const bytes = execFileSync('tar', ['--format=ustar', '--no-recursion', '-C', dir, '-cf', '-', ...names], { maxBuffer: 1 << 24 })
      const seen = await readAll(bytes, 4096, { ...scope, tablespaces: new Map([[16385, '/srv/ts1']]) })
      expect(seen.map((s) => s.path)).toEqual(names)
      expect(seen.map((s) => s.type)).toEqual(['directory', 'directory', ...sizes.map(() => 'file'), 'directory', 'symlink'])
      for (const n of sizes) expect(seen.find((s) => s.path === `base/1/f${n}`)!.content).toEqual(bytesOf(n))
      expect(seen.at(-1)!.linkTarget).toBe('/srv/ts1')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('accepts an archive that ends between entries without end blocks, and a name split into prefix and name', async () => {
    const long = `base/1/${'x'.repeat(100)}`
    const bytes = await archive([[long, Buffer.from('content')], ...FILES])
    const seen = await readAll(bytes.subarray(0, bytes.length - 1024))
    expect(seen.map((s) => [s.path, s.content])).toEqual([[long, Buffer.from('content')], ...FILES])
  })

  it('reads a size in base-256, as PostgreSQL writes sizes from 8 GiB', async () => {
    const bytes = await archive([['base/1/big', Buffer.from('eleven byte')]])
    bytes.fill(0, 124, 136)
    bytes[124] = 0x80
    bytes[135] = 11
    reseal(bytes, 0)
    expect((await readAll(bytes)).map((s) => s.content.toString())).toEqual(['eleven byte'])
  })

  it('skips what a callback leaves unread, and the next entry arrives whole', async () => {
    const bytes = await archive([
      ['base/1/a', Buffer.alloc(100_000, 1)],
      ['base/1/b', Buffer.from('second')],
    ])
    const seen: [string, string][] = []
    const reader = new TarArchiveReader(scope, async (e) => {
      if (e.path === 'base/1/a') {
        for await (const _chunk of e.content) break
        seen.push([e.path, 'left'])
        return
      }
      const parts: Buffer[] = []
      for await (const chunk of e.content) parts.push(chunk)
      seen.push([e.path, Buffer.concat(parts).toString()])
    })
    await feed(reader, bytes, 3000)
    expect(seen).toEqual([
      ['base/1/a', 'left'],
      ['base/1/b', 'second'],
    ])
  })

  it.each([
    ['a damaged header', (b: Buffer) => (b[5] ^= 1), /a header's checksum is \d+, its bytes sum to \d+/],
    ['a header that is not ustar', (b: Buffer) => (b.write('gnutar', 257, 'latin1'), reseal(b, 0)), /not in ustar format/],
    ['a size that is not a number', (b: Buffer) => (b.write('12x', 124, 'latin1'), reseal(b, 0)), /a header's size is not a number/],
    ['bytes after the end blocks', (b: Buffer) => (b[b.length - 3] = 1), /it has bytes after its end/],
    ['a directory with content', (b: Buffer) => ((b[156] = 0x35), reseal(b, 0)), /its directory 'base\/1\/a' has 6 bytes of content/],
  ])('refuses %s, and every write after it', async (_what, damage, message) => {
    const bytes = await archive([
      ['base/1/a', Buffer.from('abcdef')],
      ['base/1/b', Buffer.from('second')],
    ])
    damage(bytes)
    const reader = new TarArchiveReader(scope, async (e) => {
      for await (const _chunk of e.content);
    })
    const err = await feed(reader, bytes).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toMatchObject({ code: 'PROTOCOL', message: expect.stringMatching(message), hint: expect.stringContaining('genuine PostgreSQL') })
    expect((err as Error).message).toContain("archive 'base.tar' from the server is not a tar archive PostgreSQL writes")
    await expect(reader.write(Buffer.alloc(512))).rejects.toBe(err)
  })

  it.each([
    ['inside a file', 512 + 3, /it ends inside the content of 'base\/1\/a'/],
    ['inside a header', 1024 + 100, /it ends inside a header/],
  ])('refuses an archive that ends %s', async (_what, cut, message) => {
    const bytes = await archive([
      ['base/1/a', Buffer.from('abcdef')],
      ['base/1/b', Buffer.from('second')],
    ])
    await expect(readAll(bytes.subarray(0, cut))).rejects.toThrow(message)
  })

  it('refuses the extension headers PostgreSQL never writes (a pax header for a long name) by their type', async () => {
    const bytes = await archive([[`base/1/${'y'.repeat(120)}`, Buffer.from('x')]])
    await expect(readAll(bytes)).rejects.toThrow(/type 'pax-header'/)
  })

  it('rejects a write that waits for the callback once it fails, and every write after it', async () => {
    let waited = 0
    const reader = new TarArchiveReader(scope, async (e) => {
      for await (const _chunk of e.content) {
        if (++waited === 50) throw new Error('ingest failed')
        await new Promise((r) => setTimeout(r, 1))
      }
    })
    const bytes = await archive([['base/1/16384', Buffer.alloc(16 << 20, 3)]])
    const outcome = await Promise.race([
      feed(reader, bytes).then(
        () => 'finished',
        (err: Error) => err.message,
      ),
      new Promise((r) => setTimeout(() => r('still waiting after 10 s'), 10_000)),
    ])
    expect(outcome).toBe('ingest failed')
    await expect(reader.write(Buffer.alloc(512))).rejects.toThrow('ingest failed')
  })

  it("a write resolves only once the callback is done with its content, so the write's memory can be reused", async () => {
    const bytes = await archive([
      ['base/1/a', Buffer.alloc(20_000, 7)],
      ['base/1/b', Buffer.from('second')],
    ])
    let working: (() => void) | undefined
    const pieces: Buffer[] = []
    const reader = new TarArchiveReader(scope, async (e) => {
      for await (const chunk of e.content) {
        pieces.push(Buffer.from(chunk))
        // The first piece is worked on asynchronously, as an ingest waiting for a worker or the disk is.
        if (pieces.length === 1) await new Promise<void>((resolve) => (working = resolve))
      }
    })
    let written = false
    const first = reader.write(bytes.subarray(0, 512 + 3000)).then(() => (written = true))
    await new Promise((r) => setTimeout(r, 20))
    expect(pieces.map((p) => p.length)).toEqual([3000])
    expect(written).toBe(false)
    working!()
    await first
    for (let at = 512 + 3000; at < bytes.length; at += 5000) await reader.write(bytes.subarray(at, at + 5000))
    await reader.end()
    expect(Buffer.concat(pieces).equals(Buffer.concat([Buffer.alloc(20_000, 7), Buffer.from('second')]))).toBe(true)
  })

  it('destroy() ends a callback waiting for content and the write waiting for it', async () => {
    let callbackError: unknown
    const reader = new TarArchiveReader(scope, async (e) => {
      try {
        for await (const _chunk of e.content) await new Promise((r) => setTimeout(r, 50))
      } catch (err) {
        callbackError = err
        throw err
      }
    })
    const bytes = await archive([['base/1/16384', Buffer.alloc(1 << 20, 3)]])
    const writing = feed(reader, bytes, 4096)
    await new Promise((r) => setTimeout(r, 20))
    const reason = new Error('connection lost')
    reader.destroy(reason)
    await expect(writing).rejects.toBe(reason)
    await new Promise((r) => setTimeout(r, 60))
    expect(callbackError).toBe(reason)
  })
})

/** How the sink of readPiped takes its pieces. */
type SinkKind = 'that returns nothing' | 'that waits on every third piece' | 'set after an await'

/** Reads `bytes` as readAll does, each entry's content piped into a sink of the given kind. */
async function readPiped(bytes: Buffer, step: number, kind: SinkKind): Promise<[string, Buffer][]> {
  const seen: [string, Buffer][] = []
  const reader = new TarArchiveReader(scope, async (e) => {
    const parts: Buffer[] = []
    // As BackupFiles awaits the parent's file map before it pipes: pieces may be fed before the sink is there.
    if (kind === 'set after an await') await new Promise((r) => setTimeout(r, 1))
    await e.content.pipe((chunk) => {
      parts.push(Buffer.from(chunk))
      return kind === 'that waits on every third piece' && parts.length % 3 === 0 ? new Promise<void>((r) => setImmediate(r)) : undefined
    })
    seen.push([e.path, Buffer.concat(parts)])
  })
  await feed(reader, bytes, step)
  return seen
}

describe('TarArchiveReader, content piped into a sink', () => {
  it.each<SinkKind>(['that returns nothing', 'that waits on every third piece', 'set after an await'])(
    'a sink %s gets every piece in order, however the archive is cut',
    async (kind) => {
      const bytes = await archive(FILES)
      for (const step of [1, 511, 513, 8192, bytes.length]) expect(await readPiped(bytes, step, kind)).toEqual(FILES)
    },
  )

  it("a sink's promise holds the write that fed the piece until it resolves", async () => {
    const bytes = await archive([['base/1/a', Buffer.alloc(20_000, 7)]])
    let working: (() => void) | undefined
    const reader = new TarArchiveReader(scope, async (e) => {
      await e.content.pipe(() => (working ? undefined : new Promise<void>((resolve) => (working = resolve))))
    })
    let written = false
    const first = reader.write(bytes.subarray(0, 512 + 3000)).then(() => (written = true))
    await new Promise((r) => setTimeout(r, 20))
    expect(working).toBeDefined()
    expect(written).toBe(false)
    working!()
    await first
    expect(written).toBe(true)
    await feed(reader, bytes.subarray(512 + 3000))
  })

  it.each(['throws', 'rejects'])('a sink that %s fails the write and every write after it; the rest of the file is not given to it', async (how) => {
    let pieces = 0
    const reader = new TarArchiveReader(scope, async (e) => {
      await e.content.pipe(() => {
        if (++pieces < 5) return undefined
        if (how === 'throws') throw new Error('ingest failed')
        return Promise.reject(new Error('ingest failed'))
      })
    })
    const bytes = await archive([['base/1/16384', Buffer.alloc(1 << 20, 3)]])
    await expect(feed(reader, bytes, 4096)).rejects.toThrow('ingest failed')
    expect(pieces).toBe(5)
    await expect(reader.write(Buffer.alloc(512))).rejects.toThrow('ingest failed')
  })

  it('destroy() rejects a pipe waiting for content, and the content can be read only once', async () => {
    let piped: Promise<void> | undefined
    const reader = new TarArchiveReader(scope, async (e) => {
      piped = e.content.pipe(() => undefined)
      expect(() => e.content.pipe(() => undefined)).toThrow(/read once/)
      await piped
    })
    const bytes = await archive([['base/1/16384', Buffer.alloc(1 << 20, 3)]])
    await reader.write(bytes.subarray(0, 512 + 4096))
    const reason = new Error('connection lost')
    reader.destroy(reason)
    await expect(piped).rejects.toBe(reason)
  })
})
