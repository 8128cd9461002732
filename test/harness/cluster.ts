// Real PostgreSQL clusters for tests: initdb (data checksums on), a replication role with a SCRAM password, roles
// for every authentication method, an extra tablespace, loopback only, a free port; run as user `postgres`.
// Every cluster started here is stopped by `destroy()` (tests call it in afterAll) or, failing that, at exit.

import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm, writeFile, chmod, appendFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { type Major, pgBinaries } from './pg-binaries.js'
import { handOver, runAsServer, serverUser } from './server-user.js'
import { tlsFiles } from './tls.js'

export interface ClusterOptions {
  major: Major
  /** Extra tablespaces to create (default 1). */
  tablespaces?: number
  /** Extra postgresql.conf settings. */
  conf?: Record<string, string | number | boolean>
  /** Serve TLS with a throw-away self-signed certificate. */
  ssl?: boolean
  /** Do not start after initdb. */
  noStart?: boolean
}

/** Roles every cluster has, all with password `PASSWORD` except where noted. */
export const ROLES = {
  /** REPLICATION, SCRAM-SHA-256 over TCP. */
  repl: 'repl',
  /** REPLICATION, password stored as MD5, `md5` in pg_hba.conf. */
  md5: 'repl_md5',
  /** REPLICATION, `password` (cleartext) in pg_hba.conf. */
  cleartext: 'repl_clear',
  /** REPLICATION, `trust` in pg_hba.conf. */
  trust: 'repl_trust',
  /** LOGIN without REPLICATION. */
  noReplication: 'norepl',
  /** Rejected by pg_hba.conf. */
  rejected: 'rejected',
} as const

export const PASSWORD = 'Secr3t pw'

export interface Cluster {
  readonly major: Major
  readonly host: '127.0.0.1'
  readonly port: number
  readonly socketDir: string
  readonly dataDir: string
  readonly tablespaceDirs: readonly string[]
  /** Scratch directory of this cluster; removed by destroy(). Tests may create files under it. */
  readonly baseDir: string
  /** A postgres:// URI for the replication role (or `user`), over TCP. */
  url(o?: { user?: string; password?: string | null; params?: Record<string, string> }): string
  /** Runs SQL as the superuser over the Unix socket; returns the rows. */
  sql<R extends Record<string, unknown> = Record<string, unknown>>(text: string, params?: unknown[], database?: string): Promise<R[]>
  start(): Promise<void>
  stop(mode?: 'fast' | 'immediate' | 'smart'): Promise<void>
  restart(): Promise<void>
  /** Appends settings to postgresql.auto.conf (takes effect at the next reload or restart). */
  configure(settings: Record<string, string | number | boolean>): Promise<void>
  reload(): Promise<void>
  log(): Promise<string>
  destroy(): Promise<void>
}

const live = new Set<{ pgCtl: string; dataDir: string }>()
process.once('exit', () => {
  // Last resort: a test file that crashed must not leave servers behind.
  for (const c of live) {
    try {
      const u = serverUser()
      execFileSync(c.pgCtl, ['-D', c.dataDir, '-m', 'immediate', 'stop'], {
        stdio: 'ignore',
        ...(u.drop ? { uid: u.uid, gid: u.gid } : {}),
      })
    } catch {
      /* already down */
    }
  }
})

/** Ends the server of `dataDir` by its postmaster's pid, when pg_ctl could not stop it (`why`): SIGQUIT, then SIGKILL. */
async function endPostmaster(dataDir: string, why: unknown): Promise<void> {
  const pid = Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0])
  if (!Number.isInteger(pid) || pid <= 0) return
  // A stale postmaster.pid may name a process that is not a server any more: signal only a postgres.
  if ((await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim() !== 'postgres') return
  process.stderr.write(`harness: pg_ctl could not stop the server of ${dataDir} (${(why as Error).message}); ending postmaster ${pid}\n`)
  const alive = () => {
    try {
      process.kill(pid, 0)
      return true
    } catch {
      return false
    }
  }
  for (const signal of ['SIGQUIT', 'SIGKILL'] as const) {
    if (!alive()) return
    try {
      process.kill(pid, signal)
    } catch {
      return // gone meanwhile
    }
    for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 100))
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port
      srv.close(() => resolve(port))
    })
  })
}

export function formatConf(settings: Record<string, string | number | boolean>): string {
  return (
    Object.entries(settings)
      .map(([k, v]) => `${k} = ${typeof v === 'string' ? `'${v.replace(/'/g, "''")}'` : v === true ? 'on' : v === false ? 'off' : v}`)
      .join('\n') + '\n'
  )
}

const HBA = `# written by the pgkeep test harness
local   all          all                          trust
local   replication  all                          trust
host    replication  ${ROLES.md5}      127.0.0.1/32   md5
host    replication  ${ROLES.cleartext}    127.0.0.1/32   password
host    replication  ${ROLES.trust}    127.0.0.1/32   trust
host    replication  ${ROLES.rejected}       127.0.0.1/32   reject
host    all          all               127.0.0.1/32   scram-sha-256
host    replication  all               127.0.0.1/32   scram-sha-256
`

/** Creates, configures and starts a cluster of the given major version. */
export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  const bins = pgBinaries(o.major)
  const baseDir = await mkdtemp(join(tmpdir(), `pgkeep-pg${o.major}-`))
  await chmod(baseDir, 0o755) // the server user must traverse it and create the data directory and log in it
  await handOver(baseDir)
  const dataDir = join(baseDir, 'data')
  const socketDir = join(baseDir, 'sock')
  await mkdir(socketDir, { mode: 0o700 })
  await handOver(socketDir)
  const pwFile = join(baseDir, 'pwfile')
  await writeFile(pwFile, PASSWORD + '\n', { mode: 0o600 })
  await handOver(pwFile)

  await runAsServer(bins.initdb, [
    '-D',
    dataDir,
    '-k',
    '-U',
    'postgres',
    `--pwfile=${pwFile}`,
    '--auth-local=trust',
    '--auth-host=scram-sha-256',
    '-E',
    'UTF8',
    '--locale=C',
    '--no-sync',
  ])
  const port = await freePort()
  const conf: Record<string, string | number | boolean> = {
    listen_addresses: '127.0.0.1',
    port,
    unix_socket_directories: socketDir,
    wal_level: 'replica',
    max_wal_senders: 10,
    max_replication_slots: 10,
    password_encryption: 'scram-sha-256',
    max_wal_size: '1GB',
    fsync: false, // speed only: durability of the test server is not under test
    logging_collector: false,
    ...(o.major >= 17 ? { summarize_wal: true } : {}),
    ...(o.ssl ? await sslSettings(dataDir) : {}),
    ...o.conf,
  }
  await appendFile(join(dataDir, 'postgresql.conf'), '\n# pgkeep test harness\n' + formatConf(conf))
  await writeFile(join(dataDir, 'pg_hba.conf'), HBA)
  await handOver(join(dataDir, 'pg_hba.conf'))

  const cluster = makeCluster(o.major, baseDir, dataDir, socketDir, port)

  if (o.noStart) return cluster
  try {
    await cluster.start()
  } catch (err) {
    const log = await cluster.log()
    await cluster.destroy()
    throw new Error(`PostgreSQL ${o.major} did not start: ${(err as Error).message}\n${log}`)
  }
  await createRoles(cluster)
  for (let i = 0; i < (o.tablespaces ?? 1); i++) {
    const dir = join(baseDir, `ts${i + 1}`)
    await mkdir(dir, { mode: 0o700 })
    await handOver(dir)
    await cluster.sql(`CREATE TABLESPACE ts${i + 1} LOCATION '${dir}'`)
    ;(cluster.tablespaceDirs as string[]).push(dir)
  }
  return cluster
}

/** A Cluster handle over a data directory; `start()` runs it. */
function makeCluster(major: Major, baseDir: string, dataDir: string, socketDir: string, port: number): Cluster {
  const bins = pgBinaries(major)
  let client: pg.Client | undefined
  const logFile = `${dataDir}.log`
  const ctl = { pgCtl: bins.pgCtl, dataDir }
  let running = false

  const cluster: Cluster = {
    major,
    host: '127.0.0.1',
    port,
    socketDir,
    dataDir,
    tablespaceDirs: [],
    baseDir,
    url({ user = ROLES.repl, password = PASSWORD, params = {} } = {}) {
      const auth = password === null ? encodeURIComponent(user) : `${encodeURIComponent(user)}:${encodeURIComponent(password)}`
      const q = new URLSearchParams(params).toString()
      return `postgres://${auth}@127.0.0.1:${port}/${q ? '?' + q : ''}`
    },
    async sql(text, params, database = 'postgres') {
      if (database !== 'postgres') {
        const c = new pg.Client({ host: socketDir, port, user: 'postgres', database })
        c.on('error', () => {}) // a server stopped under it (a failed test's cleanup) is not an uncaught exception
        await c.connect()
        try {
          return (await c.query(text, params)).rows
        } finally {
          await c.end()
        }
      }
      if (!client) {
        client = new pg.Client({ host: socketDir, port, user: 'postgres', database: 'postgres' })
        client.on('error', () => (client = undefined))
        await client.connect()
      }
      return (await client.query(text, params)).rows
    },
    async start() {
      await runAsServer(bins.pgCtl, ['-D', dataDir, '-l', logFile, '-w', '-t', '60', 'start'])
      running = true
      live.add(ctl)
    },
    async stop(mode = 'fast') {
      if (client) {
        const c = client
        client = undefined
        await c.end().catch(() => {})
      }
      if (!running) return
      await runAsServer(bins.pgCtl, ['-D', dataDir, '-m', mode, '-w', '-t', '60', 'stop'])
      running = false
      live.delete(ctl)
    },
    async restart() {
      await cluster.stop()
      await cluster.start()
    },
    async configure(settings) {
      await appendFile(join(dataDir, 'postgresql.auto.conf'), formatConf(settings))
    },
    async reload() {
      await cluster.sql('select pg_reload_conf()')
    },
    async log() {
      return readFile(logFile, 'utf8').catch(() => '')
    },
    async destroy() {
      try {
        await cluster.stop('immediate')
      } catch (err) {
        // Never remove the directory under a live server (it would run on, unseen, after the suite).
        await endPostmaster(dataDir, err)
        running = false
        live.delete(ctl)
      }
      // Retries: a process the test started beside the server (a prefetch daemon with its spool in pg_wal) may
      // still be adding a file while the tree is removed (ENOTEMPTY, seen once in a full run).
      await rm(baseDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 })
    },
  }

  return cluster
}

async function createRoles(c: Cluster): Promise<void> {
  const pw = `'${PASSWORD}'`
  await c.sql(`CREATE ROLE ${ROLES.repl} WITH REPLICATION LOGIN PASSWORD ${pw}`)
  await c.sql(`CREATE ROLE ${ROLES.cleartext} WITH REPLICATION LOGIN PASSWORD ${pw}`)
  await c.sql(`CREATE ROLE ${ROLES.trust} WITH REPLICATION LOGIN`)
  await c.sql(`CREATE ROLE ${ROLES.noReplication} WITH LOGIN PASSWORD ${pw}`)
  await c.sql(`CREATE ROLE ${ROLES.rejected} WITH REPLICATION LOGIN PASSWORD ${pw}`)
  // MD5-stored password, so that the `md5` method really challenges with MD5 instead of upgrading to SCRAM.
  await c.sql(`SET password_encryption = 'md5'`)
  await c.sql(`CREATE ROLE ${ROLES.md5} WITH REPLICATION LOGIN PASSWORD ${pw}`)
  await c.sql(`RESET password_encryption`)
}

async function sslSettings(dataDir: string): Promise<Record<string, string | boolean>> {
  const { certFile, keyFile } = await tlsFiles()
  const cert = join(dataDir, 'server.crt')
  const key = join(dataDir, 'server.key')
  await writeFile(cert, await readFile(certFile))
  await writeFile(key, await readFile(keyFile), { mode: 0o600 })
  await handOver(cert)
  await handOver(key)
  return { ssl: true, ssl_cert_file: 'server.crt', ssl_key_file: 'server.key' }
}

/** A random identifier safe in SQL and file names. */
export const randomName = (prefix: string) => `${prefix}_${randomBytes(4).toString('hex')}`

/**
 * Starts a server on a data directory that pgkeep (or a test) produced, e.g. an extracted or restored backup:
 * hands it to the server user, points port and socket at fresh ones, and starts it. `tablespaceDirs` are handed
 * over too. The returned handle's destroy() stops the server and removes `baseDir`.
 */
export async function startOnDataDir(
  major: Major,
  dataDir: string,
  o: { baseDir: string; tablespaceDirs?: string[]; conf?: Record<string, string | number | boolean> },
): Promise<Cluster> {
  const u = serverUser()
  if (u.drop) execFileSync('chown', ['-R', `${u.uid}:${u.gid}`, o.baseDir, dataDir, ...(o.tablespaceDirs ?? [])])
  await chmod(dataDir, 0o700)
  const socketDir = join(o.baseDir, 'sock-restored')
  await mkdir(socketDir, { recursive: true, mode: 0o700 })
  await handOver(socketDir)
  const port = await freePort()
  await appendFile(join(dataDir, 'postgresql.auto.conf'), formatConf({ port, unix_socket_directories: socketDir, listen_addresses: '127.0.0.1', ...o.conf }))
  const cluster = makeCluster(major, o.baseDir, dataDir, socketDir, port)
  try {
    await cluster.start()
  } catch (err) {
    throw new Error(`PostgreSQL ${major} did not start on ${dataDir}: ${(err as Error).message}\n${await cluster.log()}`)
  }
  return cluster
}
