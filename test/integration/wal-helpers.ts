// Shared by the wal-*.test.ts files: the real `pgkeep` binary as a child process (wal stream must be killable),
// a fresh build of dist/ when the WAL sources are newer, and comparisons of the repository's WAL with pg_wal.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'vitest'
import { openRepository, type Repository } from '../../src/repo/index.js'
import { listWalKeys, parseWalKey } from '../../src/repo/wal-catalog.js'
import { findSegmentRecord, readSegmentBytes } from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { startOnDataDir } from '../harness/cluster.js'

export const ROOT = join(import.meta.dirname, '..', '..')
export const BIN = join(ROOT, 'bin', 'pgkeep.js')

function newestMtime(dir: string): number {
  let newest = 0
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith('.ts')) newest = Math.max(newest, statSync(join(e.parentPath, e.name)).mtimeMs)
  }
  return newest
}

/** Builds dist/ when it is missing or older than the sources the WAL commands use (npm test builds it anyway). */
export function ensureBuilt(): void {
  const marker = join(ROOT, 'dist', 'src', 'cli', 'commands', 'wal-get.js')
  const sources = Math.max(newestMtime(join(ROOT, 'src')), newestMtime(join(ROOT, 'protocol')))
  if (existsSync(marker) && statSync(marker).mtimeMs >= sources) return
  try {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.build.json')], { stdio: 'pipe' })
  } catch {
    // Type errors elsewhere in the tree do not stop tsc from emitting; the marker decides.
  }
  if (!existsSync(marker)) throw new Error('dist/ could not be built')
}

export interface PgkeepProcess {
  readonly child: ChildProcess
  /** stderr and stdout so far. */
  output(): string
  /** Resolves with the first output match of `re` (rejects after `timeoutMs` or when the process exits first). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>
  /** Resolves with the exit code (or signal name). */
  readonly exited: Promise<number | string>
  kill(signal: NodeJS.Signals): void
}

/** Spawns `node bin/pgkeep.js ARGS` as this user. */
export function spawnPgkeep(args: string[], env: Record<string, string | undefined> = {}): PgkeepProcess {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  const listeners = new Set<() => void>()
  const onData = (d: Buffer) => {
    out += d.toString()
    for (const l of listeners) l()
  }
  child.stdout!.on('data', onData)
  child.stderr!.on('data', onData)
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, sig) => resolve(code ?? sig ?? -1)))
  let done = false
  void exited.then(() => {
    done = true
    for (const l of listeners) l()
  })
  return {
    child,
    output: () => out,
    exited,
    kill: (s) => {
      if (!done) child.kill(s)
    },
    waitFor(re, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = out.match(re)
          if (m) {
            cleanup()
            resolve(m)
          } else if (done) {
            cleanup()
            reject(new Error(`pgkeep exited before printing ${re}:\n${out}`))
          }
        }
        const timer = setTimeout(() => {
          cleanup()
          reject(new Error(`timed out waiting for ${re}:\n${out}`))
        }, timeoutMs)
        const cleanup = () => {
          clearTimeout(timer)
          listeners.delete(check)
        }
        listeners.add(check)
        check()
      })
    },
  }
}

/**
 * Starts a server on `dataDir` that is expected not to come up (its restore_command must stop recovery): whether
 * it started after all (then it is stopped again), and its log.
 */
export async function startExpectingFailure(
  major: Parameters<typeof startOnDataDir>[0],
  dataDir: string,
  o: Parameters<typeof startOnDataDir>[2],
): Promise<{ started: boolean; log: string }> {
  let started = true
  try {
    const c = await startOnDataDir(major, dataDir, o)
    await c.destroy()
  } catch {
    started = false
  }
  return { started, log: await readFile(`${dataDir}.log`, 'utf8') }
}

export async function waitUntil(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 60_000, stepMs = 100): Promise<void> {
  const end = Date.now() + timeoutMs
  for (;;) {
    if (await fn()) return
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`)
    await new Promise((r) => setTimeout(r, stepMs))
  }
}

export async function openFsRepo(dir: string, passphrase?: string): Promise<Repository> {
  return openRepository(await openFsStorage(dir), { passphrase })
}

/** Segment numbers (on `tli`) the catalog holds complete, and the partial ones with their valid length. */
export async function catalogOf(repo: Repository, systemId: string, tli = 1): Promise<{ complete: bigint[]; partial: Map<bigint, number> }> {
  const complete: bigint[] = []
  const partial = new Map<bigint, number>()
  const tliHex = tli.toString(16).toUpperCase().padStart(8, '0')
  for (const key of await listWalKeys(repo, systemId, tliHex)) {
    const k = parseWalKey(key)
    if (!k) continue
    if (k.kind === 'segment') complete.push(segnoOfName(k.name))
    if (k.kind === 'partial') partial.set(segnoOfName(k.name), Math.max(partial.get(segnoOfName(k.name)) ?? 0, k.validBytes))
  }
  return { complete: complete.sort((a, b) => (a < b ? -1 : 1)), partial }
}

/** Segment number of a name, for 16 MiB segments (the test clusters' size). */
export const segnoOfName = (name: string) => BigInt(`0x${name.slice(8, 16)}`) * 256n + BigInt(`0x${name.slice(16, 24)}`)
export const nameOfSegno = (tli: number, segno: bigint) =>
  [BigInt(tli), segno / 256n, segno % 256n].map((n) => n.toString(16).toUpperCase().padStart(8, '0')).join('')

/**
 * Checks that segments `from`..`to` (inclusive) of `tli` are in the repository and byte-identical to the server's
 * own files in `pgWalDir` (the oracle). Returns how many were compared.
 */
export async function expectSameAsPgWal(repo: Repository, systemId: string, pgWalDir: string, tli: number, from: bigint, to: bigint): Promise<number> {
  let n = 0
  for (let s = from; s <= to; s++) {
    const name = nameOfSegno(tli, s)
    const rec = await findSegmentRecord(repo, systemId, name)
    expect(rec, `segment ${name} is in the repository`).toBeDefined()
    expect(rec!.partial, `segment ${name} is stored complete`).toBe(false)
    const ours = await readSegmentBytes(repo, rec!)
    const theirs = await readFile(join(pgWalDir, name))
    expect(ours.equals(theirs), `segment ${name} equals the server's pg_wal/${name}`).toBe(true)
    n++
  }
  return n
}

/**
 * Pids of the `wal get` prefetch daemons whose command line names `spool`, from /proc: node processes running
 * bin/pgkeep.js. The daemon is started through the launcher, a shell that execs node; the shell, and the subshells
 * it forks for a moment (they carry its command line), are not daemons.
 */
export function prefetchDaemons(spool: string): number[] {
  const pids: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let args: string[]
    try {
      args = readFileSync(join('/proc', entry, 'cmdline'), 'utf8').split('\0')
    } catch {
      continue // exited meanwhile
    }
    const at = args.indexOf('--spool')
    const node = args.some((a) => a.endsWith('/pgkeep.js'))
    if (node && args.includes('--daemon') && args.includes('get') && at >= 0 && args[at + 1] === spool) pids.push(Number(entry))
  }
  return pids
}

/**
 * Samples the prefetch daemons of `spool` every few milliseconds until stopped: the most seen alive at once.
 * The daemon is a process of its own, so only the process table can say how many run.
 */
export function watchPrefetchDaemons(spool: string): { max(): number; stop(): void } {
  let max = 0
  const timer = setInterval(() => {
    max = Math.max(max, prefetchDaemons(spool).length)
  }, 20)
  return { max: () => max, stop: () => clearInterval(timer) }
}

/** Ends the prefetch daemons of `spool` that are still lingering (tests leave no process behind). */
export async function stopPrefetchDaemons(spool: string): Promise<void> {
  for (const pid of prefetchDaemons(spool)) {
    try {
      process.kill(pid, 'SIGTERM')
    } catch {
      // gone
    }
  }
  await waitUntil('the prefetch daemons exited', () => prefetchDaemons(spool).length === 0, 30_000)
}
