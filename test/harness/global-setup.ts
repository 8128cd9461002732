// Vitest global setup of the integration tests: makes sure Debian's PostgreSQL 17–19 packages are unpacked
// (test/harness/debian-pg.ts) before any test file is collected, so that the per-major loops can see whether
// PostgreSQL 19 and the 17–19 oracles are there. When they cannot be had, the reason reaches the workers through
// the environment and every test that needs them is skipped with a `[skip]` line; nothing fails.

import { DEBIAN_PG_SKIP_ENV, ensureDebianPg } from './debian-pg.js'

export default async function setup(): Promise<void> {
  const started = Date.now()
  const r = await ensureDebianPg((line) => console.log(`[debian-pg] ${line}`))
  if (r.ok) {
    delete process.env[DEBIAN_PG_SKIP_ENV]
    const how = r.installedMs === null ? `cached, checked in ${Date.now() - started} ms` : `installed in ${(r.installedMs / 1000).toFixed(1)} s`
    console.log(`[debian-pg] PostgreSQL ${r.versions['postgresql-19']} and tools 17–19 ready (${how})`)
  } else {
    process.env[DEBIAN_PG_SKIP_ENV] = r.reason
    console.log(`[skip] PostgreSQL 19 and the pg_verifybackup 17–19 oracles: ${r.reason}`)
  }
}
