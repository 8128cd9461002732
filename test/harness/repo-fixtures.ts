// Helpers for the repository tests: storages of every driver (fs in a temp directory, S3 on the harness server),
// deterministic blob contents, byte-level damage of stored objects, and child processes that run the compiled
// repository code (writers to kill, lock holders) so crashes and races involve real separate processes.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { StorageError } from '../../src/errors.js'
import { openStorage } from '../../src/storage/open.js'
import type { Storage } from '../../src/storage/storage.js'

const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

/** How a child process (or a second instance) reaches the same storage. */
export type StorageSpec =
  | { kind: 'fs'; root: string }
  | { kind: 's3'; endpoint: string; bucket: string; prefix: string; accessKeyId: string; secretAccessKey: string }

/** The `--repo` URL and environment a user would give for `spec`. */
export function specLocation(spec: StorageSpec): { url: string; env: Record<string, string> } {
  if (spec.kind === 'fs') return { url: spec.root, env: {} }
  return {
    url: `s3://${spec.bucket}/${spec.prefix}`,
    env: {
      AWS_ENDPOINT_URL: spec.endpoint,
      AWS_ACCESS_KEY_ID: spec.accessKeyId,
      AWS_SECRET_ACCESS_KEY: spec.secretAccessKey,
      AWS_REGION: 'us-east-1',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    },
  }
}

/** Opens `spec` the way the CLI does: the driver wrapped in the retry and concurrency-limit decorators. */
export async function openSpec(spec: StorageSpec): Promise<Storage> {
  const { url, env } = specLocation(spec)
  return openStorage(url, env)
}

/** Hands out a fresh, empty storage location per call, on one driver; `stop` removes them all. */
export interface StorageFactory {
  readonly kind: 'fs' | 's3'
  spec(): StorageSpec
  stop(): Promise<void>
}

/** fs: directories under one temporary directory; s3: prefixes on one s3rver started by the harness. */
export async function startStorageFactory(kind: 'fs' | 's3'): Promise<StorageFactory> {
  let n = 0
  if (kind === 'fs') {
    const base = tempDir('repo')
    return { kind, spec: () => ({ kind: 'fs', root: path.join(base.dir, `r${n++}`) }), stop: async () => base.remove() }
  }
  const { startS3Server } = await import('./s3-server.js')
  const server = await startS3Server()
  return {
    kind,
    spec: () => ({
      kind: 's3',
      endpoint: server.endpoint,
      bucket: server.bucket,
      prefix: `${server.prefix}r${n++}-${randomBytes(4).toString('hex')}`,
      accessKeyId: server.accessKeyId,
      secretAccessKey: server.secretAccessKey,
    }),
    stop: () => server.stop(),
  }
}

/** A fresh temporary directory; removed by the returned function. */
export function tempDir(label: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), `pgkeep-${label}-`))
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/**
 * Deterministic content for blob `i` of stream `seed`: 1 KiB to ~300 KiB, half of it compressible text and half
 * pseudo-random bytes from SHA-256 in counter mode. Independent of the code under test.
 */
export function blobContent(seed: number, i: number): Buffer {
  const h = (s: string) => createHash('sha256').update(s).digest()
  const head = h(`${seed}:${i}`)
  const size = 1024 + (head.readUInt32LE(0) % (300 * 1024))
  const out = Buffer.alloc(size)
  const text = Buffer.from(`row ${seed}/${i} pgbench filler                                        `)
  let at = 0
  for (let block = 0; at < size; block++) {
    const chunk = block % 2 === 0 ? text : h(`${seed}:${i}:${block}`)
    at += chunk.copy(out, at)
  }
  return out
}

/** SHA-256 hex of `bytes`: the blob id in a plain repository (an independent fact the tests check ids against). */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/** Every key under `prefix`. */
export async function listKeys(storage: Storage, prefix: string): Promise<string[]> {
  const keys: string[] = []
  for await (const o of storage.list(prefix)) keys.push(o.key)
  return keys.sort()
}

export async function readAll(storage: Storage, key: string): Promise<Buffer> {
  const chunks: Uint8Array[] = []
  for await (const c of storage.read(key)) chunks.push(c)
  return Buffer.concat(chunks)
}

/** Replaces the object `key` with `mutate(its bytes)`: damage done the way a failing disk or a person would. */
export async function damage(storage: Storage, key: string, mutate: (b: Buffer) => Buffer): Promise<void> {
  const bytes = await readAll(storage, key)
  await storage.write(key, mutate(Buffer.from(bytes)))
}

/** Flips every bit of the byte at `at` (negative: from the end). */
export function flipByte(at: number): (b: Buffer) => Buffer {
  return (b) => {
    const i = at < 0 ? b.length + at : at
    b[i] = b[i]! ^ 0xff
    return b
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes running the compiled repository code.

/**
 * Compiles the repository layer, the storage drivers and this file into a private directory under .tmp/ (so a
 * concurrent `npm run build` of other work cannot interfere) and returns its path. Only the import closure of
 * these entries is compiled, so unrelated work in progress does not break it.
 */
export function compileForChildren(): { dir: string; remove: () => void } {
  const dir = path.join(PROJECT_ROOT, '.tmp', `repo-children-${process.pid}-${Date.now()}`)
  mkdirSync(dir, { recursive: true })
  const entries = ['src/repo/index.ts', 'src/storage/open.ts', 'test/harness/repo-fixtures.ts']
  const tsc = path.join(PROJECT_ROOT, 'node_modules/typescript/bin/tsc')
  const args = [
    tsc,
    '--outDir',
    dir,
    '--rootDir',
    PROJECT_ROOT,
    '--module',
    'nodenext',
    '--moduleResolution',
    'nodenext',
    '--target',
    'es2022',
    '--esModuleInterop',
    '--skipLibCheck',
    '--types',
    'node',
    ...entries.map((e) => path.join(PROJECT_ROOT, e)),
  ]
  // Type errors do not stop the emit; only missing output does (others' work in progress may not typecheck).
  const r = spawnSync(process.execPath, args, { cwd: PROJECT_ROOT, encoding: 'utf8' })
  if (!existsSync(path.join(dir, 'src/repo/index.js')) || !existsSync(path.join(dir, 'test/harness/repo-fixtures.js'))) {
    throw new Error(`tsc did not compile the child processes:\n${r.stdout}\n${r.stderr}`)
  }
  writeFileSync(path.join(dir, 'child.mjs'), "import { runChild } from './test/harness/repo-fixtures.js'\nawait runChild(process.argv.slice(2))\n")
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/** A running child with its stdout lines collected as they arrive. */
export interface Child {
  readonly process: ChildProcess
  readonly lines: string[]
  /** Resolves with the first line matching `re` (rejects when the child exits first). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>
}

/** Starts `node child.mjs <mode> <json>` from a directory made by compileForChildren. */
export function startChild(compiledDir: string, mode: string, params: object, env: Record<string, string> = {}): Child {
  const proc = spawn(process.execPath, [path.join(compiledDir, 'child.mjs'), mode, JSON.stringify(params)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...env },
  })
  const lines: string[] = []
  const listeners = new Set<() => void>()
  let partial = ''
  proc.stdout!.setEncoding('utf8').on('data', (s: string) => {
    partial += s
    const parts = partial.split('\n')
    partial = parts.pop()!
    lines.push(...parts)
    for (const l of listeners) l()
  })
  let stderr = ''
  proc.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    proc.on('exit', (code, signal) => {
      for (const l of listeners) l()
      resolve({ code, signal, stderr })
    }),
  )
  const waitFor = (re: RegExp, timeoutMs = 30_000) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const hit = lines.find((l) => re.test(l))
        if (hit !== undefined) return done(() => resolve(hit))
        if (proc.exitCode !== null || proc.signalCode !== null) {
          return done(() => reject(new Error(`child exited before printing ${re}: ${stderr}`)))
        }
      }
      const timer = setTimeout(() => done(() => reject(new Error(`timeout waiting for ${re}; stderr: ${stderr}`))), timeoutMs)
      const done = (f: () => void) => {
        clearTimeout(timer)
        listeners.delete(check)
        f()
      }
      listeners.add(check)
      check()
    })
  return { process: proc, lines, waitFor, exited }
}

/**
 * A Storage decorator that runs `before(key)` ahead of every write: it may wait (a slow link, a gate a test opens)
 * or throw (a store refusing writes to some keys). Everything else goes straight to `storage`.
 */
export function withWriteHook(storage: Storage, before: (key: string) => void | Promise<void>): Storage {
  return {
    name: storage.name,
    features: storage.features,
    stat: (k, o) => storage.stat(k, o),
    read: (k, o) => storage.read(k, o),
    list: (p, o) => storage.list(p, o),
    remove: (k, o) => storage.remove(k, o),
    close: () => storage.close(),
    async write(key, body, o) {
      await before(key)
      return storage.write(key, body, o)
    },
  }
}

/**
 * A Storage decorator that runs `before(prefix)` ahead of every listing, before the first object is listed: a test
 * makes another writer store something at the very moment a reader starts a listing.
 */
export function withListHook(storage: Storage, before: (prefix: string) => void | Promise<void>): Storage {
  return {
    ...withWriteHook(storage, () => {}),
    async *list(prefix, o) {
      await before(prefix)
      yield* storage.list(prefix, o)
    },
  }
}

/**
 * A Storage decorator whose pack writes take `delayMs` longer, as over a slow link to an object store where a
 * 16 MiB pack takes far longer than a small index object: it widens the window in which a wrong write order
 * (index before its packs) would be visible after a crash.
 */
export function withSlowPackWrites(storage: Storage, delayMs: number): Storage {
  return withWriteHook(storage, async (key) => {
    if (key.startsWith('packs/')) await new Promise((r) => setTimeout(r, delayMs))
  })
}

/**
 * A Storage whose writes under `locks/` fail (a retryable StorageError) while `faults.failing` is true, as a
 * store that stops accepting a lock holder's refreshes; `faults.refused` counts the refused writes.
 */
export function withLockWriteFaults(storage: Storage): { storage: Storage; faults: { failing: boolean; refused: number } } {
  const faults = { failing: false, refused: 0 }
  const wrapped = withWriteHook(storage, (key) => {
    if (faults.failing && key.startsWith('locks/')) {
      faults.refused++
      throw new StorageError(`injected fault: the write of '${key}' was refused`, { retryable: true })
    }
  })
  return { storage: wrapped, faults }
}

/**
 * The child side (runs compiled, in its own process). Modes:
 * - `writer {spec, seed, count, flushEvery, passphrase?}`: puts blobContent(seed, i) for i < count, flushing every
 *   `flushEvery` blobs; after each flush prints `COMMITTED <i>:<id> …` for the blobs that flush made durable.
 *   `packWriteDelayMs` slows pack writes (see withSlowPackWrites).
 * - `lock {spec, kind, purpose, staleAfterMs?}`: takes a lock, prints `LOCKED <key>`, prints `LOST` if the lock
 *   is lost, and otherwise waits until killed.
 */
export async function runChild(argv: string[]): Promise<void> {
  const [mode, json] = argv
  const params = JSON.parse(json!) as Record<string, unknown>
  const { openRepository } = await import('../../src/repo/index.js')
  let storage = await openSpec(params.spec as StorageSpec)
  if (typeof params.packWriteDelayMs === 'number') storage = withSlowPackWrites(storage, params.packWriteDelayMs)
  const repo = await openRepository(storage, { passphrase: params.passphrase as string | undefined })
  if (mode === 'writer') {
    const seed = params.seed as number
    const count = params.count as number
    const flushEvery = params.flushEvery as number
    let batch: string[] = []
    process.stdout.write('READY\n')
    for (let i = 0; i < count; i++) {
      const { id } = await repo.putBlob(i % 7 === 0 ? 'meta' : 'data', blobContent(seed, i))
      batch.push(`${i}:${id}`)
      if (batch.length === flushEvery || i === count - 1) {
        await repo.flush()
        process.stdout.write(`COMMITTED ${batch.join(' ')}\n`)
        batch = []
      }
    }
    await repo.close()
    await storage.close()
    process.stdout.write('DONE\n')
    return
  }
  if (mode === 'lock') {
    const lock = await repo.acquireLock(params.kind as 'shared' | 'exclusive', {
      purpose: params.purpose as string,
      staleAfterMs: params.staleAfterMs as number | undefined,
    })
    lock.signal.addEventListener('abort', () => process.stdout.write('LOST\n'))
    process.stdout.write(`LOCKED ${lock.key}\n`)
    setInterval(() => {}, 1 << 30)
    return
  }
  throw new Error(`unknown child mode '${mode}'`)
}
