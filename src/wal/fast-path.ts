// The shell fast path of `wal get` (bin/pgkeep, function wal_get_fast): PostgreSQL runs restore_command once per WAL
// segment, and starting node costs about 0.1 s a call on a small machine, more than replaying the segment. When a
// `wal get` run by node has been served a segment by the prefetch daemon (after every check: the daemon's binding to
// the repository and cluster, the data directory's cluster, the segment's first page), it leaves a key in the spool
// that lets the launcher serve the next prefetched segments of exactly the same invocation with a rename:
//   - the same arguments, the destination (%p) last and the segment's name (%f) where this call had them;
//   - the same working directory (the data directory) and the same server run (postmaster.pid's process id and
//     start time: a restarted server may run with another environment, so with another repository);
//   - the same daemon, alive and still the spool's holder (daemon.json), which removes the key with everything
//     else in the spool when it starts and when it leaves;
//   - the default spool beside the destination, owned by the user and mode 0700, and files owned by the user.
// Anything else, and the launcher starts node as always. The daemon writes a segment into the spool only after
// verifying it against the repository; the launcher checks its size. The key, line by line:
//   pgkeep-wal-get-fast 1 | daemon pid | segment size | working directory | postmaster.pid line 1 | line 3 |
//   argument count | one line per argument: '=' and the argument, or %f (the name) or %p (the destination)

import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { isWalSegmentName } from '../pg/wal-names.js'
import { writeFileAtomic } from '../storage/durable-file.js'
import { defaultSpoolDir, type SpoolPaths, type SpoolResponse } from './prefetch-spool.js'

/** The key's file in the spool (the daemon removes it with every other file when it starts or leaves). */
export const FAST_PATH_FILE = 'fast-path'
const MAGIC = 'pgkeep-wal-get-fast 1'

/** A `wal get` that the daemon has just served. */
export interface ServedCall {
  paths: SpoolPaths
  /** The arguments of this process as the launcher passed them (`process.argv.slice(2)`). */
  argv: readonly string[]
  name: string
  dest: string
  /** The daemon's answer (its pid and the segment's size). */
  response: SpoolResponse
  /** The working directory, physical (`process.cwd()`): restore_command runs in the data directory. */
  cwd: string
}

/**
 * The key for the launcher's fast path for calls like `c`, or undefined when the fast path must not serve them: a
 * file other than a segment, another spool than the default, arguments that do not end with the name and the
 * destination, an argument with a line break, or no server running in the working directory.
 */
export async function fastPathKey(c: ServedCall): Promise<string | undefined> {
  const { argv, name, dest, response } = c
  if (!isWalSegmentName(name) || response.pid === undefined || response.sizeBytes === undefined) return undefined
  if (c.paths.dir !== defaultSpoolDir(dest, c.cwd)) return undefined
  if (argv.length < 4 || argv[argv.length - 2] !== name || argv[argv.length - 1] !== dest) return undefined
  if (argv.some((a) => /[\n\r]/.test(a)) || /[\n\r]/.test(c.cwd)) return undefined
  let pidLines: string[]
  try {
    pidLines = (await readFile(join(c.cwd, 'postmaster.pid'), 'utf8')).split('\n')
  } catch {
    return undefined
  }
  if (pidLines.length < 3 || !/^\d+$/.test(pidLines[0]!) || pidLines[2] === '') return undefined
  const args = argv.map((a, i) => (i === argv.length - 2 ? '%f' : i === argv.length - 1 ? '%p' : `=${a}`))
  return [MAGIC, String(response.pid), String(response.sizeBytes), c.cwd, pidLines[0], pidLines[2], String(argv.length), ...args, ''].join('\n')
}

/** Leaves the key for calls like `c` in the spool, when they may take the fast path; never fails the call. */
export async function leaveFastPathKey(c: ServedCall): Promise<void> {
  try {
    const key = await fastPathKey(c)
    if (key !== undefined) await writeFileAtomic(join(c.paths.dir, FAST_PATH_FILE), key, { tmpDir: c.paths.tmpDir })
  } catch {
    // Only the next calls' speed depends on it.
  }
}
