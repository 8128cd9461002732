// PostgreSQL builds from Debian's newer suites, run on this (older) Debian without installing anything: the
// PostgreSQL 19 server (initdb, pg_ctl, postgres, pg_upgrade, …), Debian's 18 server (pg_upgrade's old bindir) and
// pg_verifybackup/pg_waldump of 17, 18 and 19 (oracles for manifest version 2 and its WAL).
//
// How: apt-get with private source lists and private state directories resolves the packages and the closure of
// their libraries (glibc included) in sid/experimental/trixie and downloads them; `dpkg-deb -x` unpacks them into
// one directory; every program in usr/lib/postgresql/<major>/bin is replaced by a small shell wrapper that
// runs the real program (moved to bin/.elf/) through the unpacked, newer `ld-linux-x86-64.so.2` with
// `--library-path` pointing at the unpacked libraries and `--argv0` set to the wrapper's own path (all found from the
// wrapper's real location, so the tree works from any path that reaches it). PostgreSQL finds
// its share/ and lib/ directories relative to argv[0], and initdb/pg_ctl/pg_upgrade exec `postgres` and friends
// from the directory of their own argv[0], so they find the wrappers. `--library-path` is not inherited by
// children, so archive_command and restore_command run on the system's own C library.
//
// Nothing is written outside the cache directory: the system's apt configuration, lists and dpkg database are
// never touched. The result is cached in node_modules/.cache/pgkeep-debian-pg/<key>, where <key> is a hash of
// what is asked for; a build happens in a temporary directory beside it and appears by one atomic rename, so two
// test processes that start at once cannot see a half-built tree (the loser of the race drops its copy).

import { execFile, execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, statSync } from 'node:fs'
import { chmod, mkdir, mkdtemp, readdir, rename, rm, writeFile, readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const execFileP = promisify(execFile)

/** Where Debian's packages come from; the first suite listed that has a package does not matter: see below. */
const SOURCES = [
  'deb http://deb.debian.org/debian experimental main',
  'deb http://deb.debian.org/debian sid main',
  'deb http://deb.debian.org/debian trixie main',
]

/**
 * The packages to fetch with their library closure. For each, the newest version any suite has is taken (so a
 * 19.1 in sid wins over 19~rc1 in experimental once it exists). libpq5 is asked for explicitly because the 19
 * client needs the newest one, which only experimental may have.
 */
const WITH_DEPENDENCIES = ['postgresql-19', 'postgresql-client-19', 'libpq5', 'postgresql-18', 'postgresql-client-18', 'postgresql-client-17']

/**
 * Packages fetched without their dependencies: the 17 server package only for its pg_waldump (which needs nothing
 * beyond libc, zlib, lz4 and zstd, all in the closure above); its postgres would need trixie's ICU and LLVM.
 */
const WITHOUT_DEPENDENCIES = ['postgresql-17']

/**
 * Dependencies that the unpacked programs do not need (maintainer scripts, perl wrappers, locale and certificate
 * packages): declared installed in the private dpkg status so that apt does not pull them and their closure.
 */
const PROVIDED = ['postgresql-common', 'postgresql-client-common', 'locales', 'locales-all', 'ssl-cert', 'tzdata', 'debconf', 'sensible-utils']

/** Bump when the layout of the cache changes. */
const LAYOUT_VERSION = 2

/** The majors whose programs this provides, and which of them have a usable server. */
export const DEBIAN_TOOL_MAJORS = [17, 18, 19] as const
export const DEBIAN_SERVER_MAJORS = [18, 19] as const

const HERE = dirname(fileURLToPath(import.meta.url))
/** node_modules/.cache of this checkout: outside the sources, and readable by the server user like node_modules. */
const CACHE_DIR = process.env.PGKEEP_TEST_DEBIAN_PG_CACHE ?? join(HERE, '..', '..', 'node_modules', '.cache', 'pgkeep-debian-pg')

const KEY = createHash('sha256')
  .update(JSON.stringify({ LAYOUT_VERSION, SOURCES, WITH_DEPENDENCIES, WITHOUT_DEPENDENCIES, PROVIDED }))
  .digest('hex')
  .slice(0, 16)

/** The directory the unpacked packages live in once installed. */
export const DEBIAN_PG_ROOT = join(CACHE_DIR, KEY)

/** Environment variable through which the global setup tells test workers why the packages are missing. */
export const DEBIAN_PG_SKIP_ENV = 'PGKEEP_TEST_DEBIAN_PG_SKIP'

/** The bin directory of one major inside the unpacked tree (wrappers), or undefined when not installed. */
export function debianPgBin(major: number): string | undefined {
  const bin = join(DEBIAN_PG_ROOT, 'usr', 'lib', 'postgresql', String(major), 'bin')
  return existsSync(join(DEBIAN_PG_ROOT, 'versions.json')) && existsSync(bin) ? bin : undefined
}

/** One program of the unpacked tree, or undefined. */
export function debianPgTool(major: number, name: string): string | undefined {
  const bin = debianPgBin(major)
  if (bin === undefined) return undefined
  const p = join(bin, name)
  return existsSync(p) ? p : undefined
}

/** Why the unpacked tree is missing (for `[skip]` lines). */
export function debianPgMissingReason(): string {
  return (
    process.env[DEBIAN_PG_SKIP_ENV] ??
    `Debian's PostgreSQL 17–19 packages are not unpacked at ${DEBIAN_PG_ROOT} (the integration tests' global setup installs them)`
  )
}

export type EnsureResult = { ok: true; root: string; versions: Record<string, string>; installedMs: number | null } | { ok: false; reason: string }

/**
 * Makes sure the unpacked tree exists and works: reuses a valid cached one, else downloads and unpacks the
 * packages (about 45 MB). Never throws: a missing network, apt or dpkg-deb becomes `{ ok: false, reason }`.
 */
export async function ensureDebianPg(log: (line: string) => void = () => {}): Promise<EnsureResult> {
  if (process.platform !== 'linux' || process.arch !== 'x64')
    return { ok: false, reason: `Debian's amd64 packages do not run on ${process.platform}/${process.arch}` }
  if (existsSync(DEBIAN_PG_ROOT)) {
    const problem = await selfTest(DEBIAN_PG_ROOT)
    if (problem === undefined) return { ok: true, root: DEBIAN_PG_ROOT, versions: await readVersions(DEBIAN_PG_ROOT), installedMs: null }
    // A broken cache (say, a removed file): move it aside atomically, then build anew.
    log(`cached Debian PostgreSQL tree is unusable (${problem}); installing it again`)
    const trash = `${DEBIAN_PG_ROOT}.broken-${process.pid}-${Date.now()}`
    await rename(DEBIAN_PG_ROOT, trash).catch(() => {})
    await rm(trash, { recursive: true, force: true })
  }
  for (const tool of ['apt-get', 'apt-cache', 'dpkg-deb']) {
    if (!onPath(tool)) return { ok: false, reason: `${tool} not found: Debian's PostgreSQL packages cannot be fetched` }
  }
  const started = Date.now()
  await mkdir(CACHE_DIR, { recursive: true })
  const work = await mkdtemp(join(CACHE_DIR, `.build-${KEY}-`))
  try {
    log(`fetching Debian's PostgreSQL 17–19 packages into ${DEBIAN_PG_ROOT}`)
    const versions = await build(work, log)
    const root = join(work, 'root')
    await writeFile(join(root, 'versions.json'), JSON.stringify(versions, null, 2) + '\n')
    const problem = await selfTest(root)
    if (problem !== undefined) return { ok: false, reason: `the unpacked Debian PostgreSQL packages do not run here: ${problem}` }
    try {
      await rename(root, DEBIAN_PG_ROOT)
    } catch (err) {
      // Another process finished first (rename onto a non-empty directory fails): use its tree.
      if (!existsSync(join(DEBIAN_PG_ROOT, 'versions.json'))) throw err
    }
    return { ok: true, root: DEBIAN_PG_ROOT, versions, installedMs: Date.now() - started }
  } catch (err) {
    return { ok: false, reason: `fetching Debian's PostgreSQL packages failed: ${firstLines((err as Error).message)}` }
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}

/** apt-get options that keep every file apt reads or writes inside `work`. */
function aptOptions(work: string): string[] {
  const o = {
    'Dir::Etc::SourceList': join(work, 'sources.list'),
    'Dir::Etc::SourceParts': '/dev/null',
    'Dir::Etc::Preferences': '/dev/null',
    'Dir::Etc::PreferencesParts': '/dev/null',
    'Dir::State': join(work, 'state'),
    'Dir::State::Lists': join(work, 'lists'),
    'Dir::State::status': join(work, 'status'),
    'Dir::Cache': join(work, 'cache'),
    'Dir::Log': join(work, 'log'),
    'Debug::NoLocking': '1',
    // The private directories belong to root; apt's download sandbox user could not write them.
    'APT::Sandbox::User': 'root',
    'APT::Install-Recommends': '0',
    'Acquire::Retries': '2',
    'Acquire::http::Timeout': '30',
  }
  return Object.entries(o).flatMap(([k, v]) => ['-o', `${k}=${v}`])
}

async function build(work: string, log: (line: string) => void): Promise<Record<string, string>> {
  for (const d of ['state', 'lists/partial', 'cache/archives/partial', 'log', 'root', 'debs']) await mkdir(join(work, d), { recursive: true })
  await writeFile(join(work, 'sources.list'), SOURCES.join('\n') + '\n')
  await writeFile(
    join(work, 'status'),
    PROVIDED.map(
      (p) => `Package: ${p}\nStatus: install ok installed\nVersion: 9999\nArchitecture: all\nMaintainer: none\nDescription: not needed by the pgkeep tests\n`,
    ).join('\n'),
  )
  const opts = aptOptions(work)
  const apt = (tool: string, args: string[], cwd = work) =>
    execFileP(tool, [...opts, ...args], { cwd, maxBuffer: 64 << 20, timeout: 600_000, env: { ...process.env, LC_ALL: 'C', DEBIAN_FRONTEND: 'noninteractive' } })

  const { stderr: updateErr } = await apt('apt-get', ['-q', 'update'])
  // apt-get update reports unreachable mirrors as warnings and may still exit 0.
  if (/^(W|E): (Failed to fetch|Some index files failed)/m.test(updateErr)) throw new Error(updateErr)

  const versions: Record<string, string> = {}
  for (const pkg of [...WITH_DEPENDENCIES, ...WITHOUT_DEPENDENCIES]) {
    const { stdout } = await apt('apt-cache', ['madison', pkg])
    // madison lists the version table newest first: "pkg | version | source".
    const newest = stdout
      .split('\n')
      .map((l) => l.split('|').map((s) => s.trim()))
      .find((f) => f[0] === pkg && f[1])
    if (!newest) throw new Error(`package ${pkg} not found in ${SOURCES.map((s) => s.split(' ')[2]).join(', ')}`)
    versions[pkg] = newest[1]!
  }
  log(
    `resolved ${Object.entries(versions)
      .map(([p, v]) => `${p}=${v}`)
      .join(' ')}`,
  )
  await apt('apt-get', ['-q', '-y', '-d', 'install', ...WITH_DEPENDENCIES.map((p) => `${p}=${versions[p]}`)])
  await apt('apt-get', ['-q', 'download', ...WITHOUT_DEPENDENCIES.map((p) => `${p}=${versions[p]}`)], join(work, 'debs'))

  const debs = [
    ...(await readdir(join(work, 'cache', 'archives'))).filter((f) => f.endsWith('.deb')).map((f) => join(work, 'cache', 'archives', f)),
    ...(await readdir(join(work, 'debs'))).filter((f) => f.endsWith('.deb')).map((f) => join(work, 'debs', f)),
  ]
  const root = join(work, 'root')
  for (const deb of debs) await execFileP('dpkg-deb', ['-x', deb, root])
  for (const deb of debs) {
    const { stdout } = await execFileP('dpkg-deb', ['-f', deb, 'Package', 'Version'])
    const [p, v] = stdout
      .trim()
      .split('\n')
      .map((l) => l.replace(/^[^:]+:\s*/, ''))
    if (p && v && !(p in versions)) versions[p] = v
  }
  // Documentation, manual pages, translations and JIT bitcode are not needed; they are most of the size.
  for (const d of ['usr/share/doc', 'usr/share/man', 'usr/share/locale', 'usr/share/lintian']) await rm(join(root, d), { recursive: true, force: true })
  for (const m of DEBIAN_TOOL_MAJORS) await rm(join(root, 'usr/lib/postgresql', String(m), 'lib/bitcode'), { recursive: true, force: true })
  await wrapPrograms(root)
  // mkdtemp made the build directory 0700; the server user must read and traverse the tree.
  await chmod(root, 0o755)
  return versions
}

/** Replaces each program of usr/lib/postgresql/<major>/bin in `root` by a wrapper that runs it through the unpacked loader. */
async function wrapPrograms(root: string): Promise<void> {
  for (const major of DEBIAN_TOOL_MAJORS) {
    const rel = join('usr', 'lib', 'postgresql', String(major), 'bin')
    const bin = join(root, rel)
    if (!existsSync(bin)) continue
    await mkdir(join(bin, '.elf'))
    for (const name of await readdir(bin)) {
      if (name === '.elf' || !statSync(join(bin, name)).isFile()) continue
      await rename(join(bin, name), join(bin, '.elf', name))
      // Paths from the wrapper's own real location, not absolute ones: the tree works wherever it is reached from
      // (a checkout's node_modules may be a link) and wherever it is moved.
      const wrapper = [
        '#!/bin/sh',
        'd=$(cd "$(dirname "$0")" && pwd -P)',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a template
        'r=${d%/usr/lib/postgresql/*/bin}',
        `exec "$r/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$r/usr/lib/x86_64-linux-gnu" --argv0 "$d/${name}" "$d/.elf/${name}" "$@"`,
        '',
      ].join('\n')
      await writeFile(join(bin, name), wrapper, { mode: 0o755 })
    }
  }
}

/** Runs `--version` of the programs the tests use, through their wrappers in `root`. Returns what went wrong, or undefined. */
async function selfTest(root: string): Promise<string | undefined> {
  const checks: Array<[number, string]> = [
    [19, 'postgres'],
    [19, 'initdb'],
    [19, 'pg_ctl'],
    [19, 'pg_verifybackup'],
    [19, 'pg_waldump'],
    [19, 'pg_upgrade'],
    [18, 'postgres'],
    [18, 'pg_controldata'],
    [18, 'pg_verifybackup'],
    [18, 'pg_waldump'],
    [17, 'pg_verifybackup'],
    [17, 'pg_waldump'],
  ]
  for (const [major, name] of checks) {
    const rel = join('usr', 'lib', 'postgresql', String(major), 'bin')
    try {
      const { stdout } = await execFileP(join(root, rel, name), ['--version'], { timeout: 30_000 })
      if (!stdout.includes(`PostgreSQL) ${major}`)) return `${name} ${major} printed ${JSON.stringify(stdout.trim())}`
    } catch (err) {
      return `${name} ${major}: ${firstLines((err as Error).message)}`
    }
  }
  return undefined
}

async function readVersions(root: string): Promise<Record<string, string>> {
  return JSON.parse(await readFile(join(root, 'versions.json'), 'utf8')) as Record<string, string>
}

function onPath(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

function firstLines(s: string): string {
  return s
    .split('\n')
    .filter((l) => l.trim())
    .slice(0, 6)
    .join(' | ')
}
