// Where this installation's pgkeep lives, and how another process runs it: restore_command of a restored server,
// the prefetch daemon `wal get` starts, the demo's streamer.

import { accessSync, constants, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { UsageError } from '../errors.js'

/** bin/pgkeep.js of this installation: found upwards from this file (src/ when run from sources, dist/src/ when built). */
export function pgkeepEntry(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'bin', 'pgkeep.js')
    if (existsSync(candidate) && existsSync(join(dir, 'package.json'))) return candidate
    dir = dirname(dir)
  }
  throw new UsageError('cannot find bin/pgkeep.js of this installation', {
    hint: 'pgkeep runs from its installation (npm install or a checkout with npm run build); reinstall it if files are missing',
  })
}

/** How to start this installation's pgkeep: a command line to put the arguments after, and variables to add. */
export interface PgkeepInvocation {
  command: string[]
  env?: Record<string, string>
}

/**
 * This installation's `pgkeep` command: its launcher (bin/pgkeep), which runs node with the process settings
 * backups and restores run fastest with (bin/pgkeep says which) and serves prefetched WAL without node
 * (docs/wal.md §4.1), with this node named in PGKEEP_NODE, as another process's PATH may not lead to it; node on
 * bin/pgkeep.js where the launcher cannot be executed (a copy without modes, a noexec mount).
 */
export function pgkeepInvocation(): PgkeepInvocation {
  const entry = pgkeepEntry()
  const launcher = join(dirname(entry), 'pgkeep')
  try {
    accessSync(launcher, constants.X_OK)
    return { command: [launcher], env: { PGKEEP_NODE: process.execPath } }
  } catch {
    return { command: [process.execPath, entry] }
  }
}
