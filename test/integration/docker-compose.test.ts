// docker/ cannot run here (no Docker daemon), so this proves what can be proved without it: compose.yaml is valid
// YAML of the expected shape on official images, the Dockerfile builds the package with `npm ci` on the official
// node image, and every pgkeep command line in compose.yaml and docker/README.md runs — as written, with only
// host, bucket and paths substituted — against a real PostgreSQL 17 server and an S3 server.

import { execFileSync, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, PASSWORD, startCluster, startOnDataDir } from '../harness/cluster.js'
import { runBin } from '../harness/cli.js'
import { noteSkip } from '../harness/reference-tools.js'
import { startS3Server, type S3TestServer } from '../harness/s3-server.js'

const ROOT = join(import.meta.dirname, '..', '..')
const DOCKER = join(ROOT, 'docker')
const COMPOSE_TEXT = readFileSync(join(DOCKER, 'compose.yaml'), 'utf8')
const README = readFileSync(join(DOCKER, 'README.md'), 'utf8')
const DOCKERFILE = readFileSync(join(DOCKER, 'Dockerfile'), 'utf8')

/** What the compose file and the walkthrough name, and what stands in for it here. */
const PRIMARY_URL = 'postgres://repl@primary:5432/'
const REPO_URL = 's3://pgkeep/demo'
const PRIMARY_TABLESPACE = '/var/lib/postgresql/tablespaces/ts1'
const PLACEHOLDER_TIME = '2026-11-21 10:15:00.123+00'

interface ComposeService {
  image?: string
  command?: string[] | string
  environment?: Record<string, string>
  volumes?: string[]
  build?: { context: string; dockerfile: string }
  profiles?: string[]
}

/** compose.yaml through a real YAML parser (PyYAML of the system Python), as JSON; undefined when missing. */
function parseCompose(): { services: Record<string, ComposeService>; volumes: Record<string, unknown> } | undefined {
  try {
    const json = execFileSync('/usr/bin/python3', ['-c', 'import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'], {
      input: COMPOSE_TEXT,
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    return JSON.parse(json)
  } catch (err) {
    if (/No module named|ENOENT/.test(String((err as { stderr?: string }).stderr ?? err))) return undefined
    throw err
  }
}

/** POSIX shell words of one command line: single and double quotes, backslash escapes; no expansions. */
function shellWords(line: string): string[] {
  const words: string[] = []
  let cur = ''
  let inWord = false
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!
    if (c === "'") {
      const end = line.indexOf("'", i + 1)
      cur += line.slice(i + 1, end)
      i = end
      inWord = true
    } else if (c === '"') {
      let j = i + 1
      for (; line[j] !== '"'; j++) cur += line[j] === '\\' ? line[++j] : line[j]
      i = j
      inWord = true
    } else if (c === '\\') {
      cur += line[++i]
      inWord = true
    } else if (c === ' ' || c === '\t') {
      if (inWord) words.push(cur)
      cur = ''
      inWord = false
    } else {
      cur += c
      inWord = true
    }
  }
  if (inWord) words.push(cur)
  return words
}

/** The pgkeep arguments of a command line, or undefined when it runs no pgkeep. */
function pgkeepArgs(line: string): string[] | undefined {
  const words = shellWords(line)
  const i = words.indexOf('pgkeep')
  return i < 0 ? undefined : words.slice(i + 1)
}

/** Every pgkeep command line of the compose services (exec form, or inside `sh -c` scripts). */
function composeCommands(services: Record<string, ComposeService>): { service: string; args: string[] }[] {
  const out: { service: string; args: string[] }[] = []
  for (const [service, s] of Object.entries(services)) {
    const cmd = s.command
    if (!Array.isArray(cmd)) continue
    if (cmd[0] === 'pgkeep') out.push({ service, args: cmd.slice(1) })
    else if (cmd[0] === 'sh' && cmd[1] === '-c') {
      for (const part of cmd[2]!.split(/;|&&|\|\||\b(?:if|then|else|do|done|fi)\b/)) {
        const args = pgkeepArgs(part.trim())
        if (args) out.push({ service, args })
      }
    }
  }
  return out
}

/** Every pgkeep command line in the README's shell blocks, in order. */
function readmeCommands(): string[][] {
  const out: string[][] = []
  let inBlock = false
  for (const line of README.split('\n')) {
    if (line.startsWith('```')) {
      inBlock = line === '```sh'
      continue
    }
    if (!inBlock) continue
    const args = pgkeepArgs(line)
    if (args) out.push(args)
  }
  return out
}

describe('docker/ files', () => {
  it('compose.yaml is YAML with the primary, its tablespace volume, a standby, MinIO and pgkeep on official images', () => {
    expect(COMPOSE_TEXT).not.toMatch(/\t/) // YAML forbids tabs for indentation
    const compose = parseCompose()
    if (!compose) {
      noteSkip('compose.yaml YAML parse', 'no PyYAML in /usr/bin/python3')
      return
    }
    const s = compose.services
    expect(Object.keys(s).sort()).toEqual(['drill', 'minio', 'minio-bucket', 'pgkeep-backup', 'pgkeep-init', 'pgkeep-wal', 'primary', 'standby'])
    expect(s.primary!.image).toBe('postgres:17-bookworm')
    expect(s.standby!.image).toBe('postgres:17-bookworm')
    expect(s.primary!.volumes).toContain('primary-tablespaces:/var/lib/postgresql/tablespaces')
    expect((s.primary!.command as string[]).join(' ')).toContain('summarize_wal=on')
    expect(s.standby!.volumes).toContain('standby-tablespaces:/var/lib/postgresql/tablespaces')
    expect(s.minio!.image).toMatch(/^minio\/minio:/)
    expect(s['minio-bucket']!.image).toMatch(/^minio\/mc:/)
    for (const name of ['pgkeep-init', 'pgkeep-wal', 'pgkeep-backup', 'drill']) {
      expect(s[name]!.image, name).toBe('pgkeep:local')
      expect(s[name]!.build, name).toEqual({ context: '..', dockerfile: 'docker/Dockerfile' })
      expect(Object.keys(s[name]!.environment ?? {}).sort(), name).toEqual([
        'AWS_ACCESS_KEY_ID',
        'AWS_ENDPOINT_URL',
        'AWS_REGION',
        'AWS_SECRET_ACCESS_KEY',
        'BACKUP_INTERVAL_S',
        'PGPASSWORD',
      ])
    }
    for (const v of Object.values(s).flatMap((x) => x.volumes ?? [])) {
      const source = v.split(':')[0]!
      if (source.startsWith('.')) expect(existsSync(join(DOCKER, source)), v).toBe(true)
      else expect(Object.keys(compose.volumes), v).toContain(source)
    }
  })

  it('the Dockerfile builds the package with npm ci on the official node image and runs it on postgres:17', () => {
    const from = [...DOCKERFILE.matchAll(/^FROM (\S+)/gm)].map((m) => m[1])
    expect(from).toEqual(['node:20-bookworm', 'postgres:17-bookworm'])
    expect(DOCKERFILE).toMatch(/RUN npm ci /)
    // Everything the build copies exists, and `npm ci` finds what `prepare` (the build) needs.
    for (const m of DOCKERFILE.matchAll(/^COPY (?!--from)(.+)$/gm)) {
      const parts = m[1]!.trim().split(/\s+/)
      for (const p of parts.slice(0, -1)) expect(existsSync(join(ROOT, p)), p).toBe(true)
    }
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
    expect(pkg.scripts.prepare).toBe('npm run build')
    expect(pkg.scripts.build).toContain('tsc -p tsconfig.build.json')
  })
})

describe('the pgkeep command lines of compose.yaml and docker/README.md', () => {
  let pg: Cluster
  let s3: S3TestServer
  let scratch: string
  beforeAll(async () => {
    pg = await startCluster({ major: 17 })
    s3 = await startS3Server()
    scratch = await mkdtemp(join(tmpdir(), 'pgkeep-docker-'))
    await chmod(scratch, 0o755) // the server user starts the restored copy below it
  })
  afterAll(async () => {
    await pg?.destroy()
    await s3?.stop()
    if (scratch) await rm(scratch, { recursive: true, force: true })
  })

  it('run as written against PostgreSQL 17 and S3: wal stream, scheduled backup, check, info, verify, restore drill, PITR', async () => {
    const compose = parseCompose()
    if (!compose) {
      noteSkip('compose command lines', 'no PyYAML in /usr/bin/python3 to read compose.yaml')
      return
    }
    const env = {
      PGPASSWORD: PASSWORD,
      AWS_ENDPOINT_URL: s3.endpoint,
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      AWS_REGION: s3.region,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    }
    const drill = join(scratch, 'drill')
    let targetTime = ''
    const substitute = (args: string[]) => {
      const out = args.map((a, i) => {
        if (args[i - 1] === '--target-time') return targetTime
        return a
          .replace(PRIMARY_URL, pg.url({ password: null }))
          .replace(REPO_URL, `s3://${s3.bucket}/${s3.prefix}demo`)
          .replace(`${PRIMARY_TABLESPACE}=`, `${pg.tablespaceDirs[0]}=`)
          .replace(/(^|=)\/drill\//, `$1${drill}/`)
      })
      // Nothing may reach this machine's /drill, or the containers' names.
      expect(out.join(' ')).not.toMatch(/(^|[ =])\/drill\/|s3:\/\/pgkeep\/|@primary:|\/var\/lib\/postgresql\//)
      return out
    }

    const fromCompose = composeCommands(compose.services)
    expect(fromCompose.map((c) => `${c.service}: ${c.args.slice(0, 2).join(' ')}`)).toEqual([
      'pgkeep-init: info --repo',
      'pgkeep-init: init --repo',
      'pgkeep-init: policy set',
      'pgkeep-wal: wal stream',
      'pgkeep-backup: backup -d',
      'pgkeep-backup: gc --repo',
    ])
    const fromReadme = readmeCommands()
    expect(fromReadme.map((a) => a[0])).toEqual(['check', 'backup', 'info', 'verify', 'restore', 'restore'])
    expect(fromReadme[5]).toContain(PLACEHOLDER_TIME) // replaced by the time of the walkthrough's accident

    // pgkeep-init: on the empty location `info` fails and `init` creates the repository; at a restart `info` finds it.
    const [infoArgs, initArgs] = [substitute(fromCompose[0]!.args.slice(0, 3)), substitute(fromCompose[1]!.args)]
    expect((await runBin(infoArgs, env)).code).toBe(22)
    const init = await runBin(initArgs, env)
    expect(init.code, init.stderr).toBe(0)
    expect((await runBin(infoArgs, env)).code).toBe(0)
    const policy = await runBin(substitute(fromCompose[2]!.args), env)
    expect(policy.code, policy.stderr).toBe(0)

    // pgkeep-wal: runs until stopped, and stops cleanly on SIGTERM.
    const walArgs = substitute(fromCompose[3]!.args)
    const streamer = spawn(process.execPath, [join(ROOT, 'bin', 'pgkeep.js'), ...walArgs], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let streamed = ''
    streamer.stderr.on('data', (d) => (streamed += d))
    streamer.stdout.on('data', (d) => (streamed += d))
    const streamerExit = new Promise<number | null>((resolve) => streamer.on('exit', (code) => resolve(code)))
    try {
      for (let i = 0; !/streaming cluster/.test(streamed); i++) {
        if (streamer.exitCode !== null || i > 600) throw new Error(`wal stream did not start:\n${streamed}`)
        await new Promise((r) => setTimeout(r, 100))
      }
      await pg.sql('create table demo tablespace ts1 as select g, md5(g::text) v from generate_series(1, 20000) g')

      // pgkeep-backup: its round, once: a backup that applies the stored policy, then gc.
      const backup = await runBin(substitute(fromCompose[4]!.args), env)
      expect(backup.code, backup.stderr).toBe(0)
      expect(backup.stdout).toMatch(/\[the repository's default\][\s\S]*removed 0 backups and \d+ WAL files?; 1 backup kept/)
      const gc = await runBin(substitute(fromCompose[5]!.args), env)
      expect(gc.code, gc.stderr).toBe(0)

      for (const args of fromReadme) {
        if (args.includes('--target-time')) {
          // The walkthrough's accident: a table, the time, the drop, a segment switch (stored by the streamer).
          await pg.sql('create table important as select g from generate_series(1, 1000) g')
          targetTime = (await pg.sql<{ t: string }>('select now()::text t'))[0]!.t
          await pg.sql('drop table important')
          const [{ w }] = await pg.sql<{ w: string }>('select pg_walfile_name(pg_switch_wal()) w')
          await waitForSegment(() => streamed, w)
        }
        if (args[0] === 'restore') await rm(drill, { recursive: true, force: true })
        const res = await runBin(substitute(args), env)
        expect(res.code, `pgkeep ${args.join(' ')}\n${res.stdout}\n${res.stderr}`).toBe(0)
        if (args[0] === 'restore') {
          expect(existsSync(join(drill, 'data', 'global', 'pg_control'))).toBe(true)
          expect(
            (await readdir(join(drill, 'ts1'))).some((n) => n.startsWith('PG_17_')),
            'the tablespace restored where mapped',
          ).toBe(true)
        }
        if (args[0] === 'info') expect(res.stdout).toMatch(/incremental/)
        if (args.includes('--target-time')) await expectTableBack(join(drill, 'data'), join(drill, 'ts1'), env)
      }
    } finally {
      streamer.kill('SIGTERM')
    }
    expect(await streamerExit, streamed).toBe(0)
    // A guard against a hang, not a speed bar: about two minutes on an idle two-core machine, several times that
    // while the machine is shared.
  }, 600_000)
})

/**
 * Starts the copy the walkthrough's PITR restore made (its restore_command fetches WAL from S3 with the AWS
 * variables of the server's environment, as in the drill container) and checks that the dropped table is back.
 */
async function expectTableBack(dataDir: string, tablespaceDir: string, env: Record<string, string>): Promise<void> {
  const saved = { ...process.env }
  Object.assign(process.env, env)
  const baseDir = join(dataDir, '..')
  const restored = await startOnDataDir(17, dataDir, { baseDir, tablespaceDirs: [tablespaceDir] })
  try {
    const deadline = Date.now() + 60_000
    while ((await restored.sql<{ r: boolean }>('select pg_is_in_recovery() r'))[0]!.r) {
      if (Date.now() > deadline) throw new Error(`the restored copy did not promote:\n${await restored.log()}`)
      await new Promise((r) => setTimeout(r, 100))
    }
    const [{ n }] = await restored.sql<{ n: number }>('select count(*)::int n from important')
    expect(n).toBe(1000)
  } finally {
    await restored.stop()
    process.env = saved
    try {
      const { pid } = JSON.parse(readFileSync(join(dataDir, 'pg_wal', '.pgkeep-prefetch', 'daemon.json'), 'utf8')) as { pid?: number }
      if (typeof pid === 'number' && pid > 1) process.kill(pid, 'SIGTERM')
    } catch {
      // no prefetch process was started, or it is gone
    }
  }
}

/** Waits until the streamer's output names segment `w` as stored (its messages name each stored segment). */
async function waitForSegment(output: () => string, w: string): Promise<void> {
  const deadline = Date.now() + 60_000
  while (!output().includes(`stored segment ${w}`)) {
    if (Date.now() > deadline) throw new Error(`wal stream did not store ${w} within 60 s:\n${output()}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}
