// The configuration file (TOML): the repository, the passphrase file, named clusters with their connection
// strings, and the settings of freshness checks, retention and drills, so that archive_command, restore_command
// and cron lines stay short. Which file: `--config F` (main strips it from the arguments), else PGKEEP_CONFIG,
// else the first that exists of $XDG_CONFIG_HOME/pgkeep/config.toml (~/.config/pgkeep/config.toml) and
// /etc/pgkeep/config.toml; `--no-config` reads none. A file or directory other users may write is refused (it
// could point pgkeep at another repository or server), and so is an unknown key. docs/operations.md describes it.

import { readFile, stat } from 'node:fs/promises'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import type { Writable } from 'node:stream'
import { ConfigError } from '../errors.js'
import type { CliContext } from './command.js'
import { closestWord } from './did-you-mean.js'

/** The system-wide file, read when no user file exists. */
export const SYSTEM_CONFIG_FILE = '/etc/pgkeep/config.toml'

/** One `[clusters.NAME]` table. */
export interface ClusterConfig {
  /** libpq connection string (URI or key=value) of a role with the REPLICATION attribute. */
  readonly conninfo?: string
  /** The replication slot `wal stream` uses. */
  readonly slot?: string
}

/** A configuration file, read and checked. Paths in it are absolute (relative ones are taken from its directory). */
export interface ConfigFile {
  readonly path: string
  readonly repository?: string
  readonly passphraseFile?: string
  readonly clusters: Readonly<Record<string, ClusterConfig>>
  /** `[check]`: the default limits of `pgkeep check` (durations such as '26h', '5m', '8d'). */
  readonly check: { readonly maxBackupAge?: string; readonly maxWalAge?: string; readonly maxDrillAge?: string }
  /** `[retention]`, as written: handed to the retention engine, which checks it. */
  readonly retention?: Readonly<Record<string, unknown>>
  /** `[drill]`, as written: handed to the drill engine, which checks it. */
  readonly drill?: Readonly<Record<string, unknown>>
}

/** Where the configuration came from. */
export type ConfigSource = '--config' | 'PGKEEP_CONFIG' | 'default location' | '--no-config' | 'none found'

/** The configuration in effect for one command. */
export interface LoadedConfig {
  /** The file read; undefined when none was. */
  readonly file: ConfigFile | undefined
  readonly source: ConfigSource
  /** The default locations looked at (when no file was named). */
  readonly searched: readonly string[]
}

const TOP_KEYS = ['repository', 'passphrase_file', 'clusters', 'check', 'retention', 'drill'] as const
const CLUSTER_KEYS = ['conninfo', 'slot'] as const
const CHECK_KEYS = ['max_backup_age', 'max_wal_age', 'max_drill_age'] as const
const CLUSTER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

const loaded = new WeakMap<CliContext, Promise<LoadedConfig>>()

/** The configuration of this command run (read once, however many parts ask). */
export function cliConfig(ctx: CliContext): Promise<LoadedConfig> {
  let p = loaded.get(ctx)
  if (!p) {
    p = loadConfig(ctx)
    loaded.set(ctx, p)
  }
  return p
}

async function loadConfig(ctx: CliContext): Promise<LoadedConfig> {
  if (ctx.configFile === false) return { file: undefined, source: '--no-config', searched: [] }
  if (ctx.configFile !== undefined) return { file: await readConfigFile(resolve(ctx.configFile), ctx.stderr), source: '--config', searched: [] }
  const fromEnv = ctx.env.PGKEEP_CONFIG
  if (fromEnv) return { file: await readConfigFile(resolve(fromEnv), ctx.stderr), source: 'PGKEEP_CONFIG', searched: [] }
  const searched = defaultConfigPaths(ctx.env)
  for (const path of searched) {
    const found = await stat(path).catch((err: NodeJS.ErrnoException) => {
      // A default location this user may not even look into (HOME still naming root's home in a command the
      // server runs as postgres: restore_command, archive_command) holds no file of this user's: passed over.
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR' || err.code === 'EACCES' || err.code === 'EPERM') return undefined
      throw new ConfigError(`cannot read config file '${path}': ${err.code ?? err.message}`, { cause: err, hint: 'check its permissions' })
    })
    if (found) return { file: await readConfigFile(path, ctx.stderr), source: 'default location', searched }
  }
  return { file: undefined, source: 'none found', searched }
}

/** The default locations, in the order they are tried: the user's (XDG), then the system's. */
export function defaultConfigPaths(env: Readonly<Record<string, string | undefined>>): string[] {
  const paths: string[] = []
  const xdg = env.XDG_CONFIG_HOME
  // The user's directory comes from the environment only: a command run with an emptied environment (tests, some
  // service managers) reads only the system file.
  if (xdg && isAbsolute(xdg)) paths.push(join(xdg, 'pgkeep', 'config.toml'))
  else if (env.HOME && isAbsolute(env.HOME)) paths.push(join(env.HOME, '.config', 'pgkeep', 'config.toml'))
  paths.push(SYSTEM_CONFIG_FILE)
  return paths
}

/**
 * Reads and checks a configuration file: it must be a regular file that only its owner (this user or root) may
 * write, in a directory others may not write; valid TOML; only known keys with values of the right type.
 * @throws ConfigError naming the file and what is wrong, with a hint
 */
export async function readConfigFile(path: string, stderr?: Writable): Promise<ConfigFile> {
  const text = await readTrusted(path, stderr)
  const { parse, TomlError } = await import('smol-toml')
  let doc: Record<string, unknown>
  try {
    doc = parse(text) as Record<string, unknown>
  } catch (err) {
    if (!(err instanceof TomlError)) throw err
    throw new ConfigError(`config file '${path}' is not valid TOML: ${err.message.split('\n')[0]} (line ${err.line}, column ${err.column})`, {
      cause: err,
      hint: 'see docs/operations.md for the format',
    })
  }
  return checkConfig(doc, path)
}

async function readTrusted(path: string, stderr: Writable | undefined): Promise<string> {
  const fail = (what: string, hint: string, cause?: unknown) => new ConfigError(`config file '${path}' ${what}`, { hint, cause })
  let st: Awaited<ReturnType<typeof stat>>
  try {
    st = await stat(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw fail(code === 'ENOENT' ? 'does not exist' : `cannot be read: ${code}`, 'check --config and PGKEEP_CONFIG', err)
  }
  if (!st.isFile()) throw fail('is not a regular file', 'name a TOML file with --config or PGKEEP_CONFIG')
  const mode = (n: number) => (n & 0o7777).toString(8).padStart(4, '0')
  // Whoever may write the file decides which repository and server pgkeep uses: only its owner, and only an owner
  // who is this user or root (as ssh treats its configuration).
  if ((st.mode & 0o022) !== 0) throw fail(`can be written by other users (mode ${mode(st.mode)})`, `chmod go-w '${path}'`)
  const uid = process.getuid?.()
  if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
    throw fail(`belongs to another user (uid ${st.uid})`, `only this user's own files and root's are read: chown it, or use a file of your own`)
  }
  const dir = dirname(path)
  const dst = await stat(dir)
  // A directory others may write lets them replace the file, unless the sticky bit keeps them from it.
  if ((dst.mode & 0o022) !== 0 && (dst.mode & 0o1000) === 0) {
    throw fail(`is in directory '${dir}', which other users can write (mode ${mode(dst.mode)})`, `chmod go-w '${dir}', or keep the file elsewhere`)
  }
  const text = await readFile(path, 'utf8')
  if ((st.mode & 0o044) !== 0 && /password\s*=|:\/\/[^/@\s]*:[^/@\s]*@/i.test(text)) {
    stderr?.write(`pgkeep: warning: config file '${path}' holds a password and other users can read it (mode ${mode(st.mode)})\nHINT: chmod 600 '${path}'\n`)
  }
  return text
}

/** Checks the parsed document: known keys, types; relative paths made absolute against the file's directory. */
function checkConfig(doc: Record<string, unknown>, path: string): ConfigFile {
  const dir = dirname(path)
  const unknown = (key: string, known: readonly string[], where: string) => {
    const near = closestWord(key, known)
    return new ConfigError(`unknown key '${key}'${where} in config file '${path}'`, {
      hint: `${near ? `did you mean '${near}'? ` : ''}known keys${where}: ${known.join(', ')} (docs/operations.md)`,
    })
  }
  const wrongType = (key: string, what: string) => new ConfigError(`'${key}' in config file '${path}' must be ${what}`, { hint: 'see docs/operations.md' })
  const isTable = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date)
  const str = (v: unknown, key: string): string | undefined => {
    if (v === undefined) return undefined
    if (typeof v !== 'string' || v === '') throw wrongType(key, 'a non-empty string')
    return v
  }
  const table = (v: unknown, key: string): Record<string, unknown> | undefined => {
    if (v === undefined) return undefined
    if (!isTable(v)) throw wrongType(key, `a table ([${key}])`)
    return v
  }
  for (const key of Object.keys(doc)) if (!(TOP_KEYS as readonly string[]).includes(key)) throw unknown(key, TOP_KEYS, '')

  const clusters: Record<string, ClusterConfig> = {}
  for (const [name, value] of Object.entries(table(doc.clusters, 'clusters') ?? {})) {
    if (!CLUSTER_NAME.test(name)) {
      throw new ConfigError(`cluster name '${name}' in config file '${path}' is not usable`, {
        hint: "a cluster name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
      })
    }
    const c = table(value, `clusters.${name}`)!
    for (const key of Object.keys(c)) if (!(CLUSTER_KEYS as readonly string[]).includes(key)) throw unknown(key, CLUSTER_KEYS, ` of [clusters.${name}]`)
    clusters[name] = { conninfo: str(c.conninfo, `clusters.${name}.conninfo`), slot: str(c.slot, `clusters.${name}.slot`) }
  }
  const check = table(doc.check, 'check') ?? {}
  for (const key of Object.keys(check)) if (!(CHECK_KEYS as readonly string[]).includes(key)) throw unknown(key, CHECK_KEYS, ' of [check]')

  const repository = str(doc.repository, 'repository')
  const passphraseFile = str(doc.passphrase_file, 'passphrase_file')
  return {
    path,
    // A directory repository named relative to the file means relative to it, wherever pgkeep runs.
    repository: repository === undefined || /^[a-z][a-z0-9+.-]*:/i.test(repository) ? repository : resolve(dir, repository),
    passphraseFile: passphraseFile === undefined ? undefined : resolve(dir, passphraseFile),
    clusters,
    check: {
      maxBackupAge: str(check.max_backup_age, 'check.max_backup_age'),
      maxWalAge: str(check.max_wal_age, 'check.max_wal_age'),
      maxDrillAge: str(check.max_drill_age, 'check.max_drill_age'),
    },
    retention: table(doc.retention, 'retention'),
    drill: table(doc.drill, 'drill'),
  }
}
