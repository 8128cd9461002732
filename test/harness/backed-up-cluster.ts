// The setup most integration tests share: a running cluster of one major with data (pgbench and/or the restore
// tests' own tables: TOAST, a tablespace, an unlogged table), a fresh filesystem repository, a first backup of it
// taken through the library, and the per-table checksums of the source at that point. `useBackedUpCluster` wires
// it into a describe block's beforeAll/afterAll.

import { afterAll, beforeAll } from 'vitest'
import { type BackupResult, takeBackup } from '../../src/index.js'
import { addOwnTables, tableChecksums } from '../integration/restore-fixture.js'
import { type Cluster, type ClusterOptions, startCluster } from './cluster.js'
import { loadPgbench } from './load.js'
import type { Major } from './pg-binaries.js'
import { freshFsRepo, type TestRepo } from './repo.js'

export interface BackedUpClusterOptions {
  major: Major
  /** pgbench scale to load first (none when left out). */
  pgbenchScale?: number
  /** The restore tests' own tables (default true). */
  ownTables?: boolean
  /** Take the first backup (default true). */
  backup?: boolean
  cluster?: Omit<ClusterOptions, 'major'>
}

export interface BackedUpCluster {
  pg: Cluster
  r: TestRepo
  /** The first backup (undefined with `backup: false`). */
  backup: BackupResult | undefined
  /** Per-table checksums of the source when the first backup was taken. */
  want: Record<string, string>
  destroy(): Promise<void>
}

export async function backedUpCluster(o: BackedUpClusterOptions): Promise<BackedUpCluster> {
  const pg = await startCluster({ ...o.cluster, major: o.major })
  const r = await freshFsRepo()
  try {
    if (o.pgbenchScale !== undefined) await loadPgbench(pg, o.pgbenchScale)
    if (o.ownTables !== false) await addOwnTables(pg)
    const backup = o.backup === false ? undefined : await takeBackup({ server: { conninfo: pg.url() }, repo: r.repo })
    const want = await tableChecksums(pg)
    return {
      pg,
      r,
      backup,
      want,
      async destroy() {
        await pg.destroy()
        await r.close()
      },
    }
  } catch (err) {
    await pg.destroy().catch(() => {})
    await r.close().catch(() => {})
    throw err
  }
}

/**
 * Registers a backed-up cluster for the enclosing describe block: ready in beforeAll, destroyed in afterAll. Read
 * its fields inside tests (the returned object is filled in by then).
 */
export function useBackedUpCluster(o: BackedUpClusterOptions): BackedUpCluster {
  const handle = {} as BackedUpCluster
  beforeAll(async () => {
    Object.assign(handle, await backedUpCluster(o))
  })
  afterAll(async () => {
    await handle.destroy?.()
  })
  return handle
}
