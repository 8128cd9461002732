// The shell fast path of `wal get` (bin/pgkeep, function wal_get_fast): PostgreSQL runs restore_command once per WAL
// file, and starting node costs about 0.1 s a call on a small machine, more than replaying a segment. When a
// `wal get` run by node has had an answer from the prefetch daemon (after every check: the daemon's binding to the
// repository and cluster, the data directory's cluster, the segment's first page), it leaves a key in the spool
// that lets the launcher answer the next calls of exactly the same invocation without node:
//   - the same arguments, the destination (%p) last and the file's name (%f) where this call had them;
//   - the same working directory (the data directory) and the same server run (postmaster.pid's process id and
//     start time: a restarted server may run with another environment, so with another repository);
//   - the same daemon, alive and still the spool's holder (daemon.json), which removes the key with everything
//     else in the spool when it starts and when it leaves;
//   - the default spool beside the destination, owned by the user and mode 0700, and files owned by the user.
// Anything else, and the launcher starts node as always. What the launcher does with a key:
//   - a segment already in the spool is served with a rename (the daemon writes a segment into the spool only after
//     verifying it against the repository; the launcher checks its size);
//   - otherwise (a segment not fetched yet, a history file) it asks the daemon as node's client does, with the
//     request this key holds, and acts on two answers only: the file is not in the repository (said and exited with
//     as the command does: the daemon looked it up for this request, as it does for node's), or a segment was
//     spooled (served as above). Any other answer, or none within seconds, and node runs.
// The key, line by line:
//   pgkeep-wal-get-fast 2 | daemon pid | segment size (from a missing file's answer: pg_control's; empty when not
//   known) | working directory | postmaster.pid line 1 | line 3 | the request's repository and cluster (JSON
//   members) | argument count | one line per argument: '=' and the argument, or %f (the name) or %p (the destination)

import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { isFetchableWalName, isWalSegmentName } from '../pg/wal-names.js'
import { writeFileAtomic } from '../storage/durable-file.js'
import { walSegmentBytesNearWalPath } from './local-cluster.js'
import { defaultSpoolDir, type SpoolPaths, type SpoolRequest, type SpoolResponse } from './prefetch-spool.js'

/** The key's file in the spool (the daemon removes it with every other file when it starts or leaves). */
export const FAST_PATH_FILE = 'fast-path'
const MAGIC = 'pgkeep-wal-get-fast 2'

/** A `wal get` that the daemon has just answered: served, or told the file is not in the repository. */
export interface AnsweredCall {
  paths: SpoolPaths
  /** The arguments of this process as the launcher passed them (`process.argv.slice(2)`). */
  argv: readonly string[]
  name: string
  dest: string
  /** What this call asked the daemon (its repository and cluster go into the key for the launcher's requests). */
  request: Pick<SpoolRequest, 'repo' | 'cluster'>
  /** The daemon's answer (its pid; with a segment served, the segment's size). */
  response: SpoolResponse
  /** The working directory, physical (`process.cwd()`): restore_command runs in the data directory. */
  cwd: string
}

/**
 * The key for the launcher's fast path for calls like `c`, or undefined when the fast path must not serve them: an
 * answer without the daemon's pid or other than served or missing, another spool than the default, arguments that
 * do not end with the name and the destination, --json or --help (the launcher prints what the plain command does),
 * an argument with a line break, or no server running in the working directory.
 */
export async function fastPathKey(c: AnsweredCall): Promise<string | undefined> {
  const { argv, name, dest, response } = c
  if (!isFetchableWalName(name) || response.pid === undefined) return undefined
  const served = response.status === 'ok' && isWalSegmentName(name) && response.sizeBytes !== undefined
  if (!served && response.status !== 'missing') return undefined
  if (c.paths.dir !== defaultSpoolDir(dest, c.cwd)) return undefined
  if (argv.length < 4 || argv[argv.length - 2] !== name || argv[argv.length - 1] !== dest) return undefined
  if (argv.some((a) => a === '--json' || a === '--help' || /[\n\r]/.test(a)) || /[\n\r]/.test(c.cwd)) return undefined
  let pidLines: string[]
  try {
    pidLines = (await readFile(join(c.cwd, 'postmaster.pid'), 'utf8')).split('\n')
  } catch {
    return undefined
  }
  if (pidLines.length < 3 || !/^\d+$/.test(pidLines[0]!) || pidLines[2] === '') return undefined
  // JSON members without their braces: the launcher puts the name before them (JSON escapes every line break).
  const request = JSON.stringify({ repo: c.request.repo, cluster: c.request.cluster }).slice(1, -1)
  const args = argv.map((a, i) => (i === argv.length - 2 ? '%f' : i === argv.length - 1 ? '%p' : `=${a}`))
  // A missing file's key: the data directory's segment size (pg_control), which every segment of the cluster has.
  const size = served ? response.sizeBytes : await walSegmentBytesNearWalPath(resolve(c.cwd, dest))
  return [MAGIC, String(response.pid), String(size ?? ''), c.cwd, pidLines[0], pidLines[2], request, String(argv.length), ...args, ''].join('\n')
}

/**
 * Leaves the key for calls like `c` in the spool, when they may take the fast path; never fails the call. A missing
 * file's key leaves a key of the same daemon that has a segment size as it is (it serves spooled segments too).
 */
export async function leaveFastPathKey(c: AnsweredCall): Promise<void> {
  try {
    const key = await fastPathKey(c)
    if (key === undefined) return
    const path = join(c.paths.dir, FAST_PATH_FILE)
    if (c.response.status !== 'ok') {
      const [magic, pid, size] = (await readFile(path, 'utf8').catch(() => '')).split('\n')
      if (magic === MAGIC && pid === String(c.response.pid) && size) return
    }
    await writeFileAtomic(path, key, { tmpDir: c.paths.tmpDir })
  } catch {
    // Only the next calls' speed depends on it.
  }
}
