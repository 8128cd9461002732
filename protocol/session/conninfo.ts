// Connection options the way libpq reads them: a `postgres://` URI or a `key=value` conninfo string, then PG*
// environment variables, then defaults; and the password file (.pgpass). The environment is passed in by the
// caller (only the CLI reads process.env).

import { readFile, stat } from 'node:fs/promises'
import { userInfo } from 'node:os'
import { join } from 'node:path'
import { ConnectionConfigError } from '../errors.js'

export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const
export type SslMode = (typeof SSL_MODES)[number]

export interface HostPort {
  /** A host name, an IP address, or an absolute directory holding the Unix socket. */
  readonly host: string
  readonly port: number
}

/** Everything needed to open a physical replication connection. */
export interface ConnectOptions {
  /** Tried in order until one accepts the connection (libpq's host list). */
  readonly hosts: readonly HostPort[]
  readonly user: string
  readonly password?: string
  readonly passfile?: string
  readonly applicationName: string
  readonly sslmode: SslMode
  readonly sslrootcert?: string
  readonly sslcert?: string
  readonly sslkey?: string
  readonly connectTimeoutMs?: number
  /** Server settings sent at startup (libpq `options` as `-c name=value`). */
  readonly options?: string
}

/** Connection parameters pgkeep understands; anything else in a conninfo is an error, as in libpq. */
const KNOWN = new Set([
  'host',
  'hostaddr',
  'port',
  'user',
  'password',
  'passfile',
  'dbname',
  'application_name',
  'fallback_application_name',
  'sslmode',
  'sslrootcert',
  'sslcert',
  'sslkey',
  'connect_timeout',
  'options',
  'replication',
  'target_session_attrs',
  'keepalives',
  'keepalives_idle',
  'keepalives_interval',
  'keepalives_count',
  'gssencmode',
  'sslcompression',
  'channel_binding',
])

const ENV: Record<string, string> = {
  PGHOST: 'host',
  PGHOSTADDR: 'hostaddr',
  PGPORT: 'port',
  PGUSER: 'user',
  PGPASSWORD: 'password',
  PGPASSFILE: 'passfile',
  PGAPPNAME: 'application_name',
  PGSSLMODE: 'sslmode',
  PGSSLROOTCERT: 'sslrootcert',
  PGSSLCERT: 'sslcert',
  PGSSLKEY: 'sslkey',
  PGCONNECT_TIMEOUT: 'connect_timeout',
  PGOPTIONS: 'options',
}

/** Parses a conninfo string: a URI (`postgres://…`, `postgresql://…`) or `key=value` pairs. */
export function parseConninfo(text: string): Record<string, string> {
  const t = text.trim()
  if (/^postgres(ql)?:\/\//.test(t)) return parseUri(t)
  return parseKeyValue(t)
}

function parseKeyValue(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  let i = 0
  const ws = () => {
    while (i < text.length && /\s/.test(text[i])) i++
  }
  while (true) {
    ws()
    if (i >= text.length) break
    const keyStart = i
    while (i < text.length && text[i] !== '=' && !/\s/.test(text[i])) i++
    const key = text.slice(keyStart, i)
    ws()
    if (text[i] !== '=') {
      throw new ConnectionConfigError(`missing "=" after "${key}" in connection string`, {
        hint: "use key=value pairs such as 'host=db1 port=5432 user=backup', or a URI 'postgres://backup@db1:5432/'",
      })
    }
    i++
    ws()
    let value = ''
    if (text[i] === "'") {
      i++
      let closed = false
      while (i < text.length) {
        const ch = text[i++]
        if (ch === '\\' && i < text.length) value += text[i++]
        else if (ch === "'") {
          closed = true
          break
        } else value += ch
      }
      if (!closed) throw new ConnectionConfigError('unterminated quoted string in connection string')
    } else {
      while (i < text.length && !/\s/.test(text[i])) {
        if (text[i] === '\\' && i + 1 < text.length) i++
        value += text[i++]
      }
    }
    out[key] = value
  }
  return out
}

function parseUri(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  let rest = text.replace(/^postgres(ql)?:\/\//, '')
  const q = rest.indexOf('?')
  const query = q >= 0 ? rest.slice(q + 1) : ''
  if (q >= 0) rest = rest.slice(0, q)
  const slash = rest.indexOf('/')
  const authority = slash >= 0 ? rest.slice(0, slash) : rest
  if (slash >= 0 && rest.length > slash + 1) out.dbname = decode(rest.slice(slash + 1))
  const at = authority.lastIndexOf('@')
  const hostPart = at >= 0 ? authority.slice(at + 1) : authority
  if (at >= 0) {
    const userInfoPart = authority.slice(0, at)
    const colon = userInfoPart.indexOf(':')
    if (colon >= 0) {
      out.user = decode(userInfoPart.slice(0, colon))
      out.password = decode(userInfoPart.slice(colon + 1))
    } else out.user = decode(userInfoPart)
  }
  if (hostPart) {
    const hosts: string[] = []
    const ports: string[] = []
    for (const item of hostPart.split(',')) {
      const m = /^(\[[^\]]*\]|[^:]*)(?::(\d*))?$/.exec(item)
      if (!m) throw new ConnectionConfigError(`invalid host '${item}' in connection URI`)
      hosts.push(decode(m[1].replace(/^\[|\]$/g, '')))
      ports.push(m[2] ?? '')
    }
    if (hosts.some((h) => h)) out.host = hosts.join(',')
    if (ports.some((p) => p)) out.port = ports.join(',')
  }
  for (const pair of query.split('&')) {
    if (!pair) continue
    const eq = pair.indexOf('=')
    if (eq < 0) throw new ConnectionConfigError(`invalid URI query parameter '${pair}'`, { hint: 'use ?key=value' })
    const key = decode(pair.slice(0, eq))
    const value = decode(pair.slice(eq + 1))
    // libpq accepts the JDBC-style `ssl=true` and treats it as sslmode=require.
    if (key === 'ssl') {
      if (value === 'true') out.sslmode = 'require'
      continue
    }
    out[key] = value
  }
  return out
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    throw new ConnectionConfigError(`invalid percent-encoding in connection URI: '${s}'`)
  }
}

export interface ResolveOptions {
  /** Environment to read PG* variables, HOME and USER from. */
  env?: Record<string, string | undefined>
  /** Values that win over the conninfo string (command-line -h, -p, -U). */
  overrides?: Partial<Record<'host' | 'port' | 'user' | 'password' | 'application_name' | 'sslmode', string>>
  /** Default application_name (libpq's fallback_application_name). */
  fallbackApplicationName?: string
}

/** Combines conninfo, overrides, PG* variables and defaults into ConnectOptions, the way libpq does. */
export function resolveConnectOptions(conninfo: string | undefined, o: ResolveOptions = {}): ConnectOptions {
  const env = o.env ?? {}
  const p: Record<string, string> = {}
  for (const [name, key] of Object.entries(ENV)) {
    const v = env[name]
    if (v !== undefined && v !== '') p[key] = v
  }
  const fromString = conninfo ? parseConninfo(conninfo) : {}
  for (const key of Object.keys(fromString)) {
    if (!KNOWN.has(key)) {
      throw new ConnectionConfigError(`invalid connection option "${key}"`, {
        hint: 'see the libpq documentation, "Parameter Key Words", for valid option names',
      })
    }
  }
  Object.assign(p, fromString)
  for (const [k, v] of Object.entries(o.overrides ?? {})) if (v !== undefined && v !== '') p[k] = v

  const sslmode = (p.sslmode ?? 'prefer') as SslMode
  if (!SSL_MODES.includes(sslmode)) {
    throw new ConnectionConfigError(`invalid sslmode value: "${p.sslmode}"`, { hint: `use one of ${SSL_MODES.join(', ')}` })
  }
  const hostList = (p.hostaddr ?? p.host ?? '/var/run/postgresql').split(',')
  const portList = (p.port ?? '5432').split(',')
  if (portList.length !== 1 && portList.length !== hostList.length) {
    throw new ConnectionConfigError(`could not match ${portList.length} port numbers to ${hostList.length} hosts`)
  }
  const hosts = hostList.map((host, i) => {
    const portText = portList.length === 1 ? portList[0] : portList[i]
    const port = portText === '' ? 5432 : Number(portText)
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new ConnectionConfigError(`invalid port number: "${portText}"`)
    }
    return { host: host === '' ? '/var/run/postgresql' : host, port }
  })
  let timeout: number | undefined
  if (p.connect_timeout !== undefined) {
    timeout = Number(p.connect_timeout)
    if (!Number.isFinite(timeout) || timeout < 0) {
      throw new ConnectionConfigError(`invalid connect_timeout value: "${p.connect_timeout}"`)
    }
  }
  const user = p.user ?? env.USER ?? safeUserName()
  const home = env.HOME
  return {
    hosts,
    user,
    password: p.password,
    passfile: p.passfile ?? (home ? join(home, '.pgpass') : undefined),
    applicationName: p.application_name ?? o.fallbackApplicationName ?? p.fallback_application_name ?? 'pgkeep',
    sslmode,
    sslrootcert: p.sslrootcert ?? (home ? join(home, '.postgresql', 'root.crt') : undefined),
    sslcert: p.sslcert ?? (home ? join(home, '.postgresql', 'postgresql.crt') : undefined),
    sslkey: p.sslkey ?? (home ? join(home, '.postgresql', 'postgresql.key') : undefined),
    connectTimeoutMs: timeout ? Math.max(2, timeout) * 1000 : undefined,
    options: p.options,
  }
}

function safeUserName(): string {
  try {
    return userInfo().username
  } catch {
    return 'postgres'
  }
}

/**
 * Looks up a password in a libpq password file (`host:port:database:user:password`, `*` wildcards, `\` escapes).
 * For a physical replication connection the database field matches `replication`, and a Unix-socket host matches
 * `localhost`, as in libpq. A file readable by group or others is ignored, as libpq does.
 */
export async function lookupPgpass(file: string, hp: HostPort, user: string): Promise<string | undefined> {
  let text: string
  try {
    const st = await stat(file)
    if (!st.isFile() || (st.mode & 0o077) !== 0) return undefined
    text = await readFile(file, 'utf8')
  } catch {
    return undefined
  }
  const host = hp.host.startsWith('/') ? 'localhost' : hp.host
  const wanted = [host, String(hp.port), 'replication', user]
  for (const line of text.split(/\r?\n/)) {
    if (line === '' || line.startsWith('#')) continue
    const fields = splitPgpassLine(line)
    if (fields.length < 5) continue
    if (wanted.every((w, i) => fields[i] === '*' || fields[i] === w)) return fields.slice(4).join(':')
  }
  return undefined
}

function splitPgpassLine(line: string): string[] {
  const out: string[] = ['']
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]
    if (ch === '\\' && i + 1 < line.length) out[out.length - 1] += line[++i]
    else if (ch === ':' && out.length < 5) out.push('')
    else out[out.length - 1] += ch
  }
  return out
}

/** A connection string for messages and logs: never contains the password. */
export function describeHost(hp: HostPort): string {
  return hp.host.startsWith('/') ? `socket "${join(hp.host, `.s.PGSQL.${hp.port}`)}"` : `"${hp.host}" port ${hp.port}`
}
