// The harness itself: every supported major starts with the settings the rest of the suite relies on.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { MAJORS } from '../harness/pg-binaries.js'

describe.each(MAJORS)('test cluster PG %i', (major) => {
  let c: Cluster
  beforeAll(async () => {
    c = await startCluster({ major })
  })
  afterAll(async () => c?.destroy())

  it('runs the requested major with checksums, replica WAL and a tablespace', async () => {
    const [row] = await c.sql<{ v: string; ck: string; wl: string; ts: string }>(
      `select current_setting('server_version_num') v, current_setting('data_checksums') ck,
              current_setting('wal_level') wl, (select count(*) from pg_tablespace where spcname like 'ts%')::text ts`,
    )
    expect(Math.floor(Number(row.v) / 10000)).toBe(major)
    expect(row.ck).toBe('on')
    expect(row.wl).toBe('replica')
    expect(row.ts).toBe('1')
    if (major >= 17) expect((await c.sql(`select current_setting('summarize_wal') s`))[0].s).toBe('on')
  })
})
