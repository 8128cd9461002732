// The restore's small-file writer, on its own thread, on the calling one, and on both in turn: every byte, hole,
// size, mode and time as asked, across batch limits (files, bytes, a file larger than a batch); a callback per file
// once it is on disk; failures (a link where a file goes, a callback that throws) reported as the same call on this
// thread throws them, with nothing written through the link and every later write refused.

import { randomBytes } from 'node:crypto'
import { lstat, mkdtemp, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type SmallFile, SmallFileWriter, type SmallFileWriterOptions } from '../../src/restore/small-file-writer.js'

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pgkeep-small-files-'))
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** A file of `size` bytes: parts of random bytes with holes between them and, for some, after the last. */
function makeFile(path: string, n: number, size: number): { file: SmallFile; expected: Buffer } {
  const expected = Buffer.alloc(size)
  const parts: Buffer[] = []
  const offsets: number[] = []
  const step = Math.max(1, Math.floor(size / 4))
  for (let at = n % 3 === 0 ? step : 0; at < size - (n % 2 ? step : 0); at += step * 2) {
    const part = randomBytes(Math.min(step, size - at))
    part.copy(expected, at)
    parts.push(part)
    offsets.push(at)
  }
  // Two consecutive parts too (gathered into one write).
  if (n % 5 === 0 && size >= 2) {
    const a = randomBytes(1)
    const b = randomBytes(1)
    parts.length = 0
    offsets.length = 0
    parts.push(a, b)
    offsets.push(0, 1)
    expected.fill(0)
    a.copy(expected, 0)
    b.copy(expected, 1)
  }
  return { file: { path, mode: n % 2 ? 0o600 : 0o640, mtime: 1_700_000_000 + n, sizeBytes: size, parts, offsets }, expected }
}

describe.each([
  ['on a thread of its own', { threadAfter: 0 }],
  ['on the calling thread, then on its own', { threadAfter: 100 }],
  ['on the calling thread', { thread: false }],
] as const)('small-file writer %s', (_name, o: SmallFileWriterOptions) => {
  const thread = o.thread !== false && o.threadAfter === 0
  it(`says where the next file goes`, () => {
    expect(new SmallFileWriter(o).onThread).toBe(thread)
    // Until the thread starts: the default waits for thousands of files, unless more than that many are expected.
    expect(new SmallFileWriter().onThread).toBe(false)
    expect(new SmallFileWriter({ expectedFiles: 4096 }).onThread).toBe(false)
    expect(new SmallFileWriter({ expectedFiles: 4097 }).onThread).toBe(true)
    // An explicit threadAfter (or no thread) wins.
    expect(new SmallFileWriter({ ...o, expectedFiles: 100_000 }).onThread).toBe(thread)
  })

  it('writes every file as asked across batch limits, and reports each once it is on disk', async () => {
    const w = new SmallFileWriter(o)
    // 600 files (over two batches of 256), 3 MiB in all (over three batch buffers), and one of 1.5 MiB alone.
    const sizes = Array.from({ length: 600 }, (_, i) => (i === 300 ? 3 << 19 : i % 7 === 0 ? 0 : 1 + ((i * 7919) % 12000)))
    const files = sizes.map((size, i) => makeFile(join(dir, `f${i}`), i, size))
    const reported = new Map<string, number>()
    for (const { file } of files) {
      await w.write(file, async (written) => {
        // A slow callback: flush must wait for it.
        await new Promise((r) => setTimeout(r, 1))
        expect(reported.has(file.path)).toBe(false)
        reported.set(file.path, written)
      })
    }
    expect(w.onThread).toBe(o.thread !== false)
    await w.flush()
    await w.close()
    expect(reported.size).toBe(files.length)
    for (const { file, expected } of files) {
      const st = await lstat(file.path)
      expect(st.size, file.path).toBe(file.sizeBytes)
      expect(st.mode & 0o777, file.path).toBe(file.mode)
      expect(Math.floor(st.mtimeMs / 1000), file.path).toBe(file.mtime)
      expect((await readFile(file.path)).equals(expected), file.path).toBe(true)
      expect(reported.get(file.path), file.path).toBe(file.parts.reduce((n, p) => n + p.length, 0))
    }
  })

  it('refuses to write through a link, says how as the system call did, and takes no file after it', async () => {
    const victim = join(dir, 'victim')
    await writeFile(victim, 'untouched')
    await symlink(victim, join(dir, 'link'))
    const w = new SmallFileWriter(o)
    const done: string[] = []
    const before = makeFile(join(dir, 'before'), 1, 100)
    const through = makeFile(join(dir, 'link'), 2, 100)
    const after = makeFile(join(dir, 'after'), 3, 100)
    let failure: unknown
    try {
      await w.write(before.file, () => void done.push('before'))
      await w.write(through.file, () => void done.push('link'))
      await w.write(after.file, () => void done.push('after'))
      await w.flush()
    } catch (err) {
      failure = err
    } finally {
      await w.close()
    }
    expect(failure).toMatchObject({ code: 'ELOOP', syscall: 'open', path: join(dir, 'link') })
    expect(await readFile(victim, 'utf8')).toBe('untouched')
    expect(await readlink(join(dir, 'link'))).toBe(victim)
    expect(done).toEqual(['before'])
    await expect(w.write(makeFile(join(dir, 'later'), 4, 10).file, () => {})).rejects.toMatchObject({ code: 'ELOOP' })
    await expect(lstat(join(dir, 'later'))).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it("fails flush with a callback's failure", async () => {
    const w = new SmallFileWriter(o)
    try {
      const boom = new Error('the manifest could not take it')
      const write = w.write(makeFile(join(dir, 'a'), 1, 10).file, async () => {
        throw boom
      })
      // On the calling thread the callback runs inside write(); on a thread, later, and flush reports it.
      if (thread) {
        await write
        await expect(w.flush()).rejects.toBe(boom)
      } else await expect(write).rejects.toBe(boom)
    } finally {
      await w.close()
    }
  })
})

describe('small-file writer whose thread dies', () => {
  it('fails the files out with it, and every later write, rather than wait for answers that cannot come', async () => {
    const w = new SmallFileWriter({ threadAfter: 0, threadModule: new URL('../fixtures/threads/exits-on-first-message.mjs', import.meta.url) })
    const done: number[] = []
    try {
      await w.write(makeFile(join(dir, 'a'), 1, 10).file, (n) => void done.push(n))
      await expect(w.flush()).rejects.toThrow(/small-file writer thread stopped \(exit code 3\)/)
      await expect(w.write(makeFile(join(dir, 'b'), 2, 10).file, () => {})).rejects.toThrow(/exit code 3/)
    } finally {
      await w.close()
    }
    expect(done).toEqual([])
  })
})
