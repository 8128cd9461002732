// The README's "A first backup and restore", run as written: its command block is read from README.md (so this
// test breaks when the README drifts), the example host, ports and directories are replaced by a real cluster's
// and a temporary directory's, and every line runs through /bin/sh with `pgkeep` on PATH as the README tells users
// to put it there. Then the start line the restore printed is run as printed. Once as root (when the tests run as
// root) and once as the user the servers run as: both copies must start, recover and promote, and hold the rows.

import { execFile } from 'node:child_process'
import { chmod, chown, mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, PASSWORD, startCluster } from '../harness/cluster.js'
import { pgBinaries } from '../harness/pg-binaries.js'
import { runAsServer, serverUser } from '../harness/server-user.js'
import { ensureBuilt, ROOT } from './wal-helpers.js'

beforeAll(() => ensureBuilt(), 120_000)

/** The sh block of a README section: its lines, continuation lines joined, trailing comments removed. */
function readmeBlock(readme: string, heading: string): string[] {
  const section = readme.slice(readme.indexOf(`## ${heading}`))
  const m = /```sh\n([\s\S]*?)```/.exec(section)
  if (!m) throw new Error(`README has no sh block under '## ${heading}'`)
  return m[1]!
    .replace(/\\\n\s*/g, '')
    .split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l !== '')
}

interface Ran {
  code: number | null
  output: string
  stdout: string
}

function sh(command: string, env: NodeJS.ProcessEnv, as?: { uid: number; gid: number }): Promise<Ran> {
  return new Promise((resolve) => {
    execFile('/bin/sh', ['-c', command], { env, cwd: '/', ...as, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, output: `${stdout}${stderr}`, stdout })
    })
  })
}

describe("the README's first backup and restore", () => {
  let source: Cluster
  let base: string
  let lines: string[]
  const u = serverUser()

  beforeAll(async () => {
    lines = readmeBlock(await readFile(join(ROOT, 'README.md'), 'utf8'), 'A first backup and restore')
    source = await startCluster({ major: 16 })
    await source.sql('create table t (id int primary key, v text)')
    await source.sql('create table in_ts (id int primary key) tablespace ts1')
    await source.sql(`insert into t select g, md5(g::text) from generate_series(1, 5000) g`)
    await source.sql(`insert into in_ts select generate_series(1, 300)`)
    base = await mkdtemp(join(tmpdir(), 'pgkeep-readme-'))
    await chmod(base, 0o755)
    // `pgkeep` on PATH, as the README says: a link to bin/pgkeep.
    await mkdir(join(base, 'bin'), { mode: 0o755 })
    await symlink(join(ROOT, 'bin', 'pgkeep'), join(base, 'bin', 'pgkeep'))
  }, 180_000)
  afterAll(async () => {
    await source?.destroy()
    if (base) await rm(base, { recursive: true, force: true })
  })

  /** Runs the README's lines in `root` (for / of the examples) as `as`; returns the copy's data directory and port. */
  async function runFlow(
    root: string,
    as: { uid: number; gid: number; home: string } | undefined,
    self?: { user: string; group: string },
  ): Promise<{ pgdata: string; port: number }> {
    const env: NodeJS.ProcessEnv = { PATH: `${join(base, 'bin')}:${process.env.PATH}`, HOME: as?.home ?? process.env.HOME }
    const values: Record<string, string> = { PGPASSWORD: PASSWORD, PGKEEP_PASSPHRASE: 'readme passphrase' }
    const concrete = (line: string) =>
      line
        .replaceAll('postgres://repl@db1:5432/', `postgres://repl@127.0.0.1:${source.port}/`)
        .replaceAll('/srv/ts1=', `${source.tablespaceDirs[0]}=`)
        .replaceAll('/backups/', `${root}/backups/`)
        .replaceAll('/srv/', `${root}/srv/`)
        // Not root, the tests cannot be postgres: the user running them stands in for it.
        .replaceAll('--group postgres', self ? `--group ${self.group}` : '--group postgres')
        .replaceAll('--owner postgres', self ? `--owner ${self.user}` : '--owner postgres')
    let restored: Ran | undefined
    for (const line of lines) {
      const exp = /^export ([A-Z_]+)=…$/.exec(line)
      if (exp) {
        expect(values, `the README exports ${exp[1]}`).toHaveProperty(exp[1]!)
        env[exp[1]!] = values[exp[1]!]
        continue
      }
      expect(line, 'every command of the block is a pgkeep command').toMatch(/^pgkeep /)
      const cmd = concrete(line)
      expect(cmd).not.toMatch(/db1|\s\/(srv|backups)\//)
      const t0 = Date.now()
      const r = await sh(cmd, env, as)
      if (process.env.README_DEBUG) console.log(Date.now() - t0, cmd.slice(0, 60))
      expect(r.code, `${cmd}\n${r.output}`).toBe(0)
      if (line.startsWith('pgkeep restore ')) restored = r
    }
    expect(restored, 'the block restores').toBeDefined()
    // The line restore printed, run as printed.
    const start = /^start the copy: (.*)$/m.exec(restored!.stdout)?.[1]
    expect(start, restored!.output).toBeDefined()
    if (process.getuid?.() === 0 && !as) expect(start).toMatch(/^runuser -u postgres -- /)
    const t1 = Date.now()
    const r = await sh(start!, env, as)
    if (process.env.README_DEBUG) console.log(Date.now() - t1, 'start')
    expect(r.code, `${start}\n${r.output}`).toBe(0)
    return { pgdata: /-D (\S+)/.exec(start!)![1]!, port: Number(/port=(\d+)/.exec(start!)![1]) }
  }

  async function checkCopy(copy: { pgdata: string; port: number }): Promise<void> {
    const c = new pg.Client({ host: '127.0.0.1', port: copy.port, user: 'postgres', password: PASSWORD, database: 'postgres' })
    c.on('error', () => {})
    try {
      await c.connect()
      for (let i = 0; (await c.query('select pg_is_in_recovery() as r')).rows[0].r; i++) {
        if (i > 600) throw new Error('the copy did not promote')
        await new Promise((r) => setTimeout(r, 100))
      }
      expect((await c.query('select count(*)::int as n from t')).rows[0].n).toBe(5000)
      expect((await c.query('select count(*)::int as n from in_ts')).rows[0].n).toBe(300)
    } finally {
      await c.end().catch(() => {})
      await runAsServer(pgBinaries(16).pgCtl, ['-D', copy.pgdata, '-m', 'fast', '-w', 'stop']).catch(() => {})
      // The wal get prefetch process of the copy's restore_command.
      const daemon = await readFile(join(copy.pgdata, 'pg_wal', '.pgkeep-prefetch', 'daemon.json'), 'utf8').catch(() => '')
      const pid = daemon ? (JSON.parse(daemon) as { pid?: number }).pid : undefined
      if (pid) process.kill(pid, 'SIGTERM')
    }
  }

  it.runIf(u.drop)('as root: the copy starts as postgres, recovers and promotes', async () => {
    const root = join(base, 'as-root')
    // A host's /srv exists; /backups is made by init.
    await mkdir(join(root, 'srv'), { recursive: true, mode: 0o755 })
    await checkCopy(await runFlow(root, undefined))
  })

  it('as the server user: the same lines, a copy that starts', async () => {
    const root = join(base, 'as-server-user')
    // That user's own directories for the repository and the copy.
    for (const d of ['srv', 'backups']) {
      await mkdir(join(root, d), { recursive: true, mode: 0o755 })
      if (u.drop) await chown(join(root, d), u.uid, u.gid)
    }
    const shell = (cmd: string) => new Promise<string>((resolve) => execFile('sh', ['-c', cmd], (_e, out) => resolve(out.trim())))
    if (u.drop) {
      const home = (await shell(`getent passwd ${u.name} | cut -d: -f6`)) || '/tmp'
      await checkCopy(await runFlow(root, { uid: u.uid, gid: u.gid, home }))
    } else {
      await checkCopy(await runFlow(root, undefined, { user: await shell('id -un'), group: await shell('id -gn') }))
    }
  })
})
