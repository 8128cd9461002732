// Running PostgreSQL's binaries as an unprivileged user: initdb and postgres refuse to run as root, so when the
// tests run as root they run the server as user `postgres` (created when missing) and hand it the directories.

import { execFileSync, spawn, type SpawnOptions } from 'node:child_process'
import { chown } from 'node:fs/promises'

export interface ServerUser {
  readonly name: string
  readonly uid: number
  readonly gid: number
  /** True when this process is root and so must drop to `name` to run the server. */
  readonly drop: boolean
}

let cached: ServerUser | undefined

/** The user the server binaries run as: `postgres` when we are root (created if needed), else ourselves. */
export function serverUser(): ServerUser {
  if (cached) return cached
  if (process.getuid?.() !== 0) {
    cached = { name: 'self', uid: process.getuid!(), gid: process.getgid!(), drop: false }
    return cached
  }
  const lookup = () => {
    try {
      const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim())
      const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim())
      return { uid, gid }
    } catch {
      return undefined
    }
  }
  let ids = lookup()
  if (!ids) {
    execFileSync('useradd', ['--system', '--user-group', '--create-home', '--shell', '/bin/sh', 'postgres'])
    ids = lookup()
    if (!ids) throw new Error('could not create user postgres to run the test servers')
  }
  cached = { name: 'postgres', ...ids, drop: true }
  return cached
}

/** Gives a path (not recursively) to the server user. */
export async function handOver(path: string): Promise<void> {
  const u = serverUser()
  if (u.drop) await chown(path, u.uid, u.gid)
}

/** Spawns a PostgreSQL binary as the server user. */
export function spawnAsServer(file: string, args: string[], o: SpawnOptions = {}) {
  const u = serverUser()
  return spawn(file, args, { ...o, ...(u.drop ? { uid: u.uid, gid: u.gid } : {}) })
}

/** Runs a binary as the server user and resolves with its output; rejects with stderr on a non-zero exit. */
export function runAsServer(file: string, args: string[], o: SpawnOptions & { input?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawnAsServer(file, args, { ...o, stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout!.on('data', (d) => (out += d))
    child.stderr!.on('data', (d) => (err += d))
    child.on('error', reject)
    child.on('close', (code) => {
      if (code === 0) resolve(out)
      else reject(new Error(`${file} ${args.join(' ')} exited ${code}: ${err || out}`))
    })
    // A child that exits before reading its input (pg_ctl does) makes the write fail with EPIPE: not an error here.
    child.stdin!.on('error', () => {})
    child.stdin!.end(o.input ?? '')
  })
}
