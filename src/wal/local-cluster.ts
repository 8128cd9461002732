// The cluster of the data directory a WAL command runs in (its pg_control), and the refusal of WAL of any other
// cluster. Apart from cluster-id.ts, which asks the repository, so that the lean `wal get` path
// (src/cli/wal-get-lean.ts) and the spool's client check clusters by these same rules without loading repository code.

import { readFile } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { UsageError } from '../errors.js'
import { type ControlFile, decodeControlFile } from '../pg/pg-control.js'

/** `<data dir>/global/pg_control` decoded, where the data directory holds `pg_wal/<file>`; undefined when unreadable. */
async function controlNearWalPath(walPath: string): Promise<ControlFile | undefined> {
  const dataDir = dirname(dirname(resolve(walPath)))
  try {
    return decodeControlFile(await readFile(join(dataDir, 'global', 'pg_control')))
  } catch {
    return undefined
  }
}

/** The system identifier of the data directory that holds `pg_wal/<file>`; undefined when unreadable. */
export async function systemIdNearWalPath(walPath: string): Promise<string | undefined> {
  return (await controlNearWalPath(walPath))?.systemId.toString()
}

/** The WAL segment size of the data directory that holds `pg_wal/<file>`; undefined when unreadable. */
export async function walSegmentBytesNearWalPath(walPath: string): Promise<number | undefined> {
  return (await controlNearWalPath(walPath))?.walSegSizeBytes
}

/** Refuses a cluster other than the data directory's (from pg_control), when that is known. */
export function assertSameCluster(systemId: string, o: { selector?: string; localSystemId?: string }): void {
  if (o.localSystemId === undefined || o.localSystemId === systemId) return
  throw new UsageError(
    `--cluster ${o.selector ?? systemId} is cluster ${systemId}, but the data directory restore_command runs in is cluster ${o.localSystemId}`,
    { hint: 'WAL of another cluster cannot be replayed here: correct --cluster in restore_command, or leave it out' },
  )
}
