// fs driver specifics beyond the conformance suite: file and directory modes, no temporary files left behind,
// a writer killed with SIGKILL mid-write leaves nothing visible, disk full (a real 1 MiB tmpfs) maps to a clear
// non-retryable error, chunked reads, and the keys a file system cannot hold.

import { execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import ts from 'typescript'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'

import { AlreadyExistsError, NotFoundError, StorageError } from '../../src/errors.js'
import { openFsStorage } from '../../src/storage/fs.js'
import type { Storage } from '../../src/storage/storage.js'

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const MIB = 1 << 20

let tmp: string
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'pgkeep-fs-'))
})
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true })
})

/** Every entry under `dir`, relative, found by walking the real directory (not through the driver). */
async function walk(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const rel = e.name
    out.push(rel)
    if (e.isDirectory()) for (const sub of await walk(path.join(dir, rel))) out.push(`${rel}/${sub}`)
  }
  return out
}

const tempFilesUnder = async (dir: string): Promise<string[]> => (await walk(dir)).filter((p) => path.basename(p).startsWith('.tmp-'))

async function readAll(s: Storage, key: string): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const c of s.read(key)) parts.push(c)
  return Buffer.concat(parts)
}

async function listKeys(s: Storage, prefix = ''): Promise<string[]> {
  const out: string[] = []
  for await (const i of s.list(prefix)) out.push(i.key)
  return out.sort()
}

describe('fs driver', () => {
  it('creates directories 0700 (root and missing parents included) and files 0600, whatever the umask', async () => {
    // 022 is the usual umask; 000 would leave group and other bits on modes taken from it; 277 would make
    // directories the driver cannot write into if it left mkdir(2) and open(2) to the umask.
    for (const mask of [0o022, 0o000, 0o277]) {
      const top = path.join(tmp, `modes-${mask.toString(8)}`)
      const root = path.join(top, 'parent', 'repo')
      const previous = process.umask(mask)
      try {
        const s = await openFsStorage(root)
        await s.write('a/b/c', randomBytes(10))
        await s.write('a/d', randomBytes(10), { ifAbsent: true })
        await s.write('e', async function* () {
          yield randomBytes(10)
        })
        await s.write('e', randomBytes(20)) // replaced by rename(2)
        expect(await s.probeConditionalWrite!('probe')).toBe('enforced')
      } finally {
        process.umask(previous)
      }
      const modes: Record<string, string> = {}
      for (const rel of ['', ...(await walk(top))]) {
        const st = await stat(path.join(top, rel))
        modes[rel || '.'] = `${st.isDirectory() ? 'd' : 'f'}${(st.mode & 0o7777).toString(8)}`
      }
      expect(modes, `umask ${mask.toString(8)}`).toEqual({
        '.': 'd700',
        parent: 'd700',
        'parent/repo': 'd700',
        'parent/repo/a': 'd700',
        'parent/repo/a/b': 'd700',
        'parent/repo/a/b/c': 'f600',
        'parent/repo/a/d': 'f600',
        'parent/repo/e': 'f600',
      })
    }
  })

  it('leaves no temporary file after aborted, failed and refused writes', async () => {
    const root = path.join(tmp, 'no-temp')
    const s = await openFsStorage(root)
    await s.write('d/existing', randomBytes(10))
    const ac = new AbortController()
    const aborted = s.write(
      'd/aborted',
      async function* () {
        for (let i = 0; i < 100; i++) {
          yield randomBytes(4096)
          if (i === 5) ac.abort(new Error('stop'))
        }
      },
      { signal: ac.signal },
    )
    await expect(aborted).rejects.toThrow('stop')
    await expect(
      s.write('d/failed', async function* () {
        yield randomBytes(4096)
        throw new Error('producer failed')
      }),
    ).rejects.toThrow('producer failed')
    await expect(s.write('d/existing', randomBytes(10), { ifAbsent: true })).rejects.toBeInstanceOf(AlreadyExistsError)
    expect(await tempFilesUnder(root)).toEqual([])
    expect(await listKeys(s)).toEqual(['d/existing'])
  })

  it('streams reads in chunks of the configured size', async () => {
    const root = path.join(tmp, 'chunks')
    const s = await openFsStorage(root, { readChunkBytes: 4096 })
    const data = randomBytes(3 * 4096 + 100)
    await s.write('x', data)
    const sizes: number[] = []
    for await (const c of s.read('x')) sizes.push(c.byteLength)
    expect(sizes).toEqual([4096, 4096, 4096, 100])
    const big = await openFsStorage(root)
    await big.write('y', randomBytes(5 * MIB + 1))
    const bigSizes: number[] = []
    for await (const c of big.read('y')) bigSizes.push(c.byteLength)
    expect(Math.max(...bigSizes)).toBe(MIB)
    expect(bigSizes.reduce((a, b) => a + b, 0)).toBe(5 * MIB + 1)
  })

  it('hands out fresh chunks a caller may keep, and with reuseChunks one buffer again and again', async () => {
    const s = await openFsStorage(path.join(tmp, 'reuse'), { readChunkBytes: 4096 })
    const data = randomBytes(3 * 4096 + 100)
    await s.write('x', data)
    const kept: Uint8Array[] = []
    for await (const c of s.read('x')) kept.push(c)
    expect(new Set(kept.map((c) => c.buffer)).size).toBe(kept.length)
    expect(Buffer.concat(kept)).toEqual(data)

    // Consumed in their turn, the chunks are the file's bytes, ranges included, in one buffer per read; the next
    // read (here, one ending early) takes the same buffer back.
    const buffers = new Set<ArrayBufferLike>()
    const readAll = async (o: { offset?: number; length?: number }) => {
      const parts: Buffer[] = []
      for await (const c of s.read('x', { ...o, reuseChunks: true })) {
        buffers.add(c.buffer)
        parts.push(Buffer.from(c))
      }
      return Buffer.concat(parts)
    }
    expect(await readAll({})).toEqual(data)
    expect(await readAll({ offset: 100, length: 5000 })).toEqual(data.subarray(100, 5100))
    for await (const c of s.read('x', { reuseChunks: true })) {
      buffers.add(c.buffer)
      break
    }
    expect(await readAll({ offset: 4000 })).toEqual(data.subarray(4000))
    expect(buffers.size).toBe(1)

    // Two reads at once never share one.
    const a = s.read('x', { reuseChunks: true })[Symbol.asyncIterator]()
    const b = s.read('x', { offset: 4096, reuseChunks: true })[Symbol.asyncIterator]()
    const first = (await a.next()).value as Uint8Array
    const second = (await b.next()).value as Uint8Array
    expect(first.buffer).not.toBe(second.buffer)
    expect(Buffer.from(first)).toEqual(data.subarray(0, 4096))
    expect(Buffer.from(second)).toEqual(data.subarray(4096, 8192))
    await a.return?.(undefined)
    await b.return?.(undefined)
  })

  it('refuses a root that is a file', async () => {
    const file = path.join(tmp, 'a-file')
    await writeFile(file, 'x')
    await expect(openFsStorage(file)).rejects.toBeInstanceOf(StorageError)
  })

  it('cannot hold a key that is also a directory of keys, and says so', async () => {
    const s = await openFsStorage(path.join(tmp, 'file-dir'))
    await s.write('x', randomBytes(5))
    const err = await s.write('x/y', randomBytes(5)).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StorageError)
    expect((err as StorageError).retryable).toBe(false)
    expect((err as StorageError).hint).toMatch(/both as an object and as a directory/)
    expect(await s.stat('x/y')).toBeUndefined()
    await s.write('p/q', randomBytes(5))
    // A directory under a key's name is not an object.
    expect(await s.stat('p')).toBeUndefined()
    await expect(readAll(s, 'p')).rejects.toBeInstanceOf(NotFoundError)
    await s.remove('p')
    expect(await listKeys(s)).toEqual(['p/q', 'x'])
  })

  it('leaves nothing visible when the writing process is killed with SIGKILL mid-write', async () => {
    const root = path.join(tmp, 'sigkill')
    const s = await openFsStorage(root)
    const previous = randomBytes(1000)
    await s.write('keep/old', previous)
    const child = await compileChild()
    onTestFinished(() => rm(path.dirname(child), { recursive: true, force: true }))
    for (const key of ['new/object', 'keep/old']) {
      const proc = spawn(process.execPath, [child, root, key], { stdio: ['ignore', 'pipe', 'pipe'] })
      let stderr = ''
      proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        proc.once('exit', (code, signal) => resolve({ code, signal })),
      )
      // The child reports once its body has handed the driver CHILD_CHUNKS chunks, all written into the
      // temporary file, and then holds the write open (the body's next chunk never comes) until it is killed.
      const reported = await new Promise<string>((resolve, reject) => {
        let out = ''
        proc.stdout.setEncoding('utf8').on('data', (d: string) => {
          out += d
          const line = /^mid-write (\d+)\n/m.exec(out)
          if (line) resolve(line[1] ?? '')
        })
        void exited.then(({ code, signal }) =>
          reject(new Error(`child exited (code ${String(code)}, signal ${String(signal)}) before it was mid-write: ${stderr}`)),
        )
      })
      expect(Number(reported)).toBe(CHILD_CHUNKS * CHILD_CHUNK_BYTES)
      const temps = await tempFilesUnder(root)
      expect(temps.length, 'the child must be mid-write (a temporary file exists)').toBe(1)
      expect((await stat(path.join(root, temps[0] ?? ''))).size).toBe(CHILD_CHUNKS * CHILD_CHUNK_BYTES)
      proc.kill('SIGKILL')
      expect(await exited).toEqual({ code: null, signal: 'SIGKILL' })
      await rm(path.join(root, temps[0] ?? ''))
    }
    expect(await s.stat('new/object')).toBeUndefined()
    await expect(readAll(s, 'new/object')).rejects.toBeInstanceOf(NotFoundError)
    expect((await readAll(s, 'keep/old')).equals(previous)).toBe(true)
    expect(await listKeys(s)).toEqual(['keep/old'])
  })

  it('maps a full disk to a non-retryable StorageError with a hint, leaving nothing behind', async (ctx) => {
    const mnt = path.join(tmp, 'tiny')
    await mkdir(mnt)
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { stdio: 'pipe' })
    } catch (err) {
      console.info(`skip ENOSPC test: cannot mount a 1 MiB tmpfs (${(err as Error).message.split('\n')[0]})`)
      ctx.skip()
      return
    }
    try {
      const s = await openFsStorage(path.join(mnt, 'repo'))
      await s.write('small', randomBytes(1000))
      for (const body of [
        randomBytes(2 * MIB),
        async function* () {
          for (let i = 0; i < 32; i++) yield randomBytes(64 * 1024)
        },
      ]) {
        const err = await s.write('big', body).catch((e: unknown) => e)
        expect(err).toBeInstanceOf(StorageError)
        expect((err as StorageError).retryable).toBe(false)
        expect((err as StorageError).message).toMatch(/no space left on device/)
        expect((err as StorageError).hint).toMatch(/free space/)
        expect(await s.stat('big')).toBeUndefined()
        expect(await tempFilesUnder(path.join(mnt, 'repo'))).toEqual([])
      }
      expect(await listKeys(s)).toEqual(['small'])
    } finally {
      execFileSync('umount', [mnt])
    }
  })
})

/** What the child writes before it reports and holds its write open: 13 chunks of 256 KiB (3.25 MiB). */
const CHILD_CHUNKS = 13
const CHILD_CHUNK_BYTES = 256 * 1024

/**
 * Builds a runnable copy of src/storage/fs.ts and its imports (TypeScript's transpileModule, no type check) plus a
 * child script that writes `argv[3]` under root `argv[2]` from a body that yields CHILD_CHUNKS chunks, prints
 * `mid-write <bytes>` when the driver asks for the next one (so every chunk so far is in the temporary file), and
 * then never yields again. The copy lives under the project's .tmp/ so that the packages the import closure needs
 * (src/errors.ts reaches protocol/, which imports pg-protocol) resolve from the project's node_modules: from a
 * directory under /tmp the child died at import with ERR_MODULE_NOT_FOUND, which is what "child exited before
 * writing" was. Returns the script's path; the caller removes its directory.
 */
async function compileChild(): Promise<string> {
  const outDir = path.join(REPO_ROOT, '.tmp', `fs-child-${process.pid}-${randomBytes(4).toString('hex')}`)
  const seen = new Set<string>()
  const queue = [path.join(REPO_ROOT, 'src/storage/fs.ts')]
  for (let file = queue.pop(); file !== undefined; file = queue.pop()) {
    if (seen.has(file)) continue
    seen.add(file)
    const source = await readFile(file, 'utf8')
    const js = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText
    const out = path.join(outDir, path.relative(REPO_ROOT, file).replace(/\.ts$/, '.js'))
    await mkdir(path.dirname(out), { recursive: true })
    await writeFile(out, js)
    for (const m of source.matchAll(/from '(\.{1,2}\/[^']+)\.js'/g)) {
      queue.push(path.resolve(path.dirname(file), `${m[1] ?? ''}.ts`))
    }
  }
  await writeFile(path.join(outDir, 'package.json'), '{"type":"module"}')
  const child = path.join(outDir, 'child.js')
  await writeFile(
    child,
    `import { openFsStorage } from './src/storage/fs.js'
const [root, key] = process.argv.slice(2)
// Keeps the process alive while the write waits forever (an unsettled top-level await alone would exit).
setInterval(() => {}, 1 << 30)
const s = await openFsStorage(root)
await s.write(key, async function* () {
  for (let i = 0; i < ${CHILD_CHUNKS}; i++) yield Buffer.alloc(${CHILD_CHUNK_BYTES}, i + 1)
  // The driver asks for the next chunk only after it wrote the previous one.
  process.stdout.write('mid-write ${CHILD_CHUNKS * CHILD_CHUNK_BYTES}\\n')
  await new Promise(() => {})
})
`,
  )
  return child
}
