// The operating-system user a PostgreSQL server runs as. PostgreSQL refuses to run as root, so a drill, the demo
// or a restore run as root hands the files it wrote to that user (normally `postgres`) and starts the server as
// it. Users are looked up with `id`, so users from NSS (LDAP, sssd) count as well as /etc/passwd.

import { execFile } from 'node:child_process'
import { lchown, lstat, readdir, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { UsageError } from '../errors.js'

const run = promisify(execFile)

export interface OsUser {
  readonly name: string
  readonly uid: number
  readonly gid: number
}

/** True when this process runs as root. */
export function isRoot(): boolean {
  return process.getuid?.() === 0
}

/** This process's own user (its name from `id -un`, else its uid). */
export async function currentUser(): Promise<OsUser> {
  const uid = process.getuid?.() ?? 0
  const gid = process.getgid?.() ?? 0
  const name = await run('id', ['-un'], { timeout: 10_000 }).then(
    (r) => r.stdout.trim(),
    () => String(uid),
  )
  return { name, uid, gid }
}

/** The user `name` (uid and primary group), or undefined when there is none. */
export async function findOsUser(name: string): Promise<OsUser | undefined> {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\$?$/.test(name)) throw new UsageError(`'${name}' is not a user name`)
  try {
    const uid = Number((await run('id', ['-u', '--', name], { timeout: 10_000 })).stdout.trim())
    const gid = Number((await run('id', ['-g', '--', name], { timeout: 10_000 })).stdout.trim())
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) return undefined
    return { name, uid, gid }
  } catch {
    return undefined
  }
}

/**
 * The user a server runs as when this process is root: `name` (default `postgres`), which must exist and must not
 * be root. Undefined when this process is not root (the server then runs as this process's user).
 * @throws UsageError when the user does not exist or is root
 */
export async function serverUserForRoot(name = 'postgres'): Promise<OsUser | undefined> {
  if (!isRoot()) return undefined
  const user = await findOsUser(name)
  if (!user) {
    throw new UsageError(`there is no user '${name}' to run PostgreSQL as`, {
      hint: `PostgreSQL refuses to run as root: create the user (useradd --system --user-group --create-home ${name}) or name another with --owner`,
    })
  }
  if (user.uid === 0) throw new UsageError(`user '${name}' is root, and PostgreSQL refuses to run as root`, { hint: 'name an unprivileged user with --owner' })
  return user
}

/** The group `name` (its gid), or undefined when there is none. */
export async function findGroupId(name: string): Promise<number | undefined> {
  if (/^[0-9]+$/.test(name)) return Number(name)
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(name)) throw new UsageError(`'${name}' is not a group name`)
  const line = await run('getent', ['group', name], { timeout: 10_000 }).then(
    (r) => r.stdout.trim(),
    () => '',
  )
  const gid = Number(line.split(':')[2])
  return line !== '' && Number.isInteger(gid) ? gid : undefined
}

/**
 * Gives every entry under each of `roots` (and the roots) to `user`, without following links: a link is given
 * over itself (lchown), and what it points to only when it is one of the roots. Only for trees this process
 * just wrote (a restored data directory and its tablespace locations, a drill's scratch directory).
 *
 * Children before their directory: a directory is handed over only once everything below it is, so `user` never
 * owns a directory this walk still has to enter (an owner could otherwise swap a subdirectory for a link between
 * the walk's lstat and readdir, and have root hand over whatever the link leads to).
 */
export async function chownTree(roots: readonly string[], user: OsUser): Promise<void> {
  const walk = async (path: string): Promise<void> => {
    const st = await lstat(path)
    if (st.isDirectory()) for (const name of await readdir(path)) await walk(join(path, name))
    await lchown(path, user.uid, user.gid)
  }
  for (const root of roots) await walk(root)
}

/** The groups of `user` (primary and supplementary), from `id -G`; the primary group alone when that fails. */
export async function groupsOf(user: OsUser): Promise<number[]> {
  const text = await run('id', ['-G', '--', user.name], { timeout: 10_000 }).then(
    (r) => r.stdout.trim(),
    () => '',
  )
  const ids = text
    .split(/\s+/)
    .filter((t) => /^[0-9]+$/.test(t))
    .map(Number)
  return ids.length ? ids : [user.gid]
}

/**
 * Why `user` cannot reach `path` (traverse every directory down to it, and read and list it, or read a file), or
 * undefined when it can. Judged from owners and mode bits with the user's groups (ACLs are not looked at); root
 * reaches everything.
 */
export async function unreachableBy(path: string, user: OsUser, o: { execute?: boolean } = {}): Promise<string | undefined> {
  if (user.uid === 0) return undefined
  const groups = new Set(await groupsOf(user))
  const allows = (st: { uid: number; gid: number; mode: number }, bit: 4 | 2 | 1) => {
    if (st.uid === user.uid) return (st.mode & (bit << 6)) !== 0
    if (groups.has(st.gid)) return (st.mode & (bit << 3)) !== 0
    return (st.mode & bit) !== 0
  }
  const parts = resolve(path).split('/').filter(Boolean)
  let cur = '/'
  for (let i = 0; i <= parts.length; i++) {
    const st = await stat(cur).catch(() => undefined)
    if (!st) return `'${cur}' does not exist`
    const last = i === parts.length
    if (st.isDirectory() && !allows(st, 1)) return `it may not enter '${cur}' (owner ${st.uid}:${st.gid}, mode ${modeText(st.mode)})`
    if (last && !allows(st, 4)) return `it may not read '${cur}' (owner ${st.uid}:${st.gid}, mode ${modeText(st.mode)})`
    if (last && o.execute && !st.isDirectory() && !allows(st, 1)) return `it may not run '${cur}' (mode ${modeText(st.mode)})`
    if (!last) cur = join(cur, parts[i]!)
  }
  return undefined
}

function modeText(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0')
}

/**
 * The user `name`, created (a system user with its own group and a home directory, as distributions create
 * `postgres`) when missing. Only for root; says whether it was created.
 */
export async function ensureOsUser(name: string): Promise<{ user: OsUser; created: boolean }> {
  const found = await findOsUser(name)
  if (found) return { user: found, created: false }
  try {
    await run('useradd', ['--system', '--user-group', '--create-home', '--shell', '/bin/sh', '--', name], { timeout: 60_000 })
  } catch (err) {
    throw new UsageError(`cannot create user '${name}': ${(err as Error).message.split('\n')[0]}`, {
      hint: `create it yourself (useradd --system --user-group --create-home ${name}) and run this again`,
    })
  }
  const user = await findOsUser(name)
  if (!user) throw new UsageError(`user '${name}' was created but cannot be found`)
  return { user, created: true }
}
