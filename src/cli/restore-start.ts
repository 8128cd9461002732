// What `pgkeep restore` does for the step after it: with --owner (as root) it gives the restored files to the user
// the server will run as and runs the restore_command once as that user, the way the server will (so a
// repository, passphrase or pgkeep installation that user cannot read is reported now, not as a FATAL at start);
// and it prints a line that starts the copy: that user's pg_ctl of the backup's major, on a free port, with
// archiving off (a copy next to its source must not collide with the source's port, nor archive into the
// source's repository).

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { UsageError } from '../errors.js'
import { freePort } from '../local-server/free-port.js'
import { chownTree, currentUser, isRoot, type OsUser, serverUserForRoot } from '../local-server/os-user.js'
import { findPgBinaries } from '../local-server/pg-binaries.js'
import { shellQuote } from '../restore/restore-command.js'

/**
 * The user `--owner` names: resolved when this process is root; when not, it must be this process's own user
 * (then nothing changes hands, and the same command line works for root and for postgres).
 * @throws UsageError for a missing user, root, or another user without root
 */
export async function resolveOwner(name: string | undefined): Promise<OsUser | undefined> {
  if (name === undefined) return undefined
  const forRoot = await serverUserForRoot(name)
  if (forRoot) return forRoot
  const me = await currentUser()
  if (name !== me.name) throw new UsageError(`only root can restore for user '${name}'`, { hint: `run the restore as '${name}', or leave out --owner` })
  return undefined
}

/** Gives the restored data directory and tablespace locations to `owner` (this process is root). */
export async function handOverRestored(pgdata: string, tablespaces: readonly string[], owner: OsUser): Promise<void> {
  await chownTree([pgdata, ...tablespaces], owner)
}

/** PostgreSQL's restore_command placeholders: %f, %p, %r (empty: no cleanup point here) and %%. */
export function expandRestoreCommand(command: string, walFile: string, dest: string): string {
  return command.replace(/%([fpr%])/g, (_, c: string) => (c === 'f' ? walFile : c === 'p' ? dest : c === 'r' ? '' : '%'))
}

/**
 * Runs `restoreCommand` as `owner` through /bin/sh (as the server does), fetching `walFile` into the restored
 * pg_wal under a temporary name. Resolves undefined when it worked, else what it printed.
 */
export async function probeRestoreCommand(
  restoreCommand: string,
  walFile: string,
  pgdata: string,
  owner: OsUser,
  env: NodeJS.ProcessEnv,
): Promise<string | undefined> {
  const dest = join(pgdata, 'pg_wal', `pgkeep-probe-${randomBytes(4).toString('hex')}`)
  try {
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn('/bin/sh', ['-c', expandRestoreCommand(restoreCommand, walFile, dest)], {
        cwd: pgdata,
        env,
        uid: owner.uid,
        gid: owner.gid,
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 120_000,
      })
      let output = ''
      child.stdout.on('data', (d) => (output += d))
      child.stderr.on('data', (d) => (output += d))
      child.on('error', (err) => resolve({ code: null, output: err.message }))
      child.on('close', (c) => resolve({ code: c, output }))
    })
    return code === 0 ? undefined : output.trim().split('\n').slice(-3).join(' ') || `it exited ${code}`
  } finally {
    await rm(dest, { force: true })
  }
}

/**
 * A command line that starts the restored copy: pg_ctl of the backup's major when one is found (else plain
 * `pg_ctl`), the log in the data directory, a free port, archiving off; through `runuser -u USER --` when this
 * process is root.
 */
export async function startCommandLine(o: { pgdata: string; major: number; owner: string; searchPath: string | undefined }): Promise<string> {
  const bins = await findPgBinaries({ major: o.major, searchPath: o.searchPath }).catch(() => undefined)
  const port = await freePort()
  const words = [bins?.pgCtl ?? 'pg_ctl', '-D', o.pgdata, '-l', join(o.pgdata, 'postgresql.log'), '-o', `-c port=${port} -c archive_mode=off`, 'start']
  if (isRoot()) words.unshift('runuser', '-u', o.owner, '--')
  return words.map(shellQuote).join(' ')
}
