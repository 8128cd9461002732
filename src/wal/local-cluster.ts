// The cluster of the data directory a WAL command runs in (its pg_control), and the refusal of WAL of any other
// cluster. Apart from cluster-id.ts, which asks the repository, so that the lean `wal get` path
// (src/cli/wal-get-lean.ts) and the spool's client check clusters by these same rules without loading repository code.

import { readFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { UsageError } from '../errors.js'
import { decodeControlFile } from '../pg/pg-control.js'

/** The system identifier in `<data dir>/global/pg_control`, where the data directory holds `pg_wal/<file>`; undefined when unreadable. */
export async function systemIdNearWalPath(walPath: string): Promise<string | undefined> {
  const dataDir = dirname(dirname(resolve(walPath)))
  try {
    return decodeControlFile(await readFile(join(dataDir, 'global', 'pg_control'))).systemId.toString()
  } catch {
    return undefined
  }
}

/** Refuses a cluster other than the data directory's (from pg_control), when that is known. */
export function assertSameCluster(systemId: string, o: { selector?: string; localSystemId?: string }): void {
  if (o.localSystemId === undefined || o.localSystemId === systemId) return
  throw new UsageError(
    `--cluster ${o.selector ?? systemId} is cluster ${systemId}, but the data directory restore_command runs in is cluster ${o.localSystemId}`,
    { hint: 'WAL of another cluster cannot be replayed here: correct --cluster in restore_command, or leave it out' },
  )
}
