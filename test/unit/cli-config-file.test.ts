// The configuration file through the CLI (no server needed): a file or directory other users may write, an unknown
// key, bad TOML or a wrong type are refused with exit status 3 and a hint, before anything is opened; which file is
// read (--config, PGKEEP_CONFIG, --no-config); and precedence as docs/operations.md says it: options over
// environment variables over the file, key by key. The effect is checked on real repositories (`info --json` names
// the repository it read), not only in `config show`.

import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { defaultConfigPaths } from '../../src/cli/config-file.js'
import { maskConninfo } from '../../src/cli/commands/config-show.js'
import { runMain } from '../harness/cli.js'

let dir: string
const repos = { a: '', b: '', c: '' }

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pgkeep-config-'))
  await chmod(dir, 0o700)
  for (const k of Object.keys(repos) as (keyof typeof repos)[]) {
    repos[k] = join(dir, `repo-${k}`)
    const r = await runMain(['init', '--repo', repos[k]])
    expect(r.code, r.stderr).toBe(0)
  }
})
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

let n = 0
/** Writes a config file with `text` and `mode` in a fresh subdirectory (mode `dirMode`) of the test directory. */
async function configFile(text: string, mode = 0o600, dirMode = 0o700): Promise<string> {
  const sub = join(dir, `conf-${n++}`)
  await mkdir(sub)
  const file = join(sub, 'config.toml')
  await writeFile(file, text)
  await chmod(file, mode)
  await chmod(sub, dirMode)
  return file
}

/** The repository `info --json` read. */
async function repoUsed(args: string[], env: Record<string, string> = {}): Promise<string> {
  const r = await runMain(['info', '--json', ...args], env)
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout).repository
}

describe('a config file pgkeep must not trust is refused', () => {
  it.each([
    [0o620, '0620'],
    [0o602, '0602'],
    [0o666, '0666'],
  ])('when other users may write it (mode %o)', async (mode, shown) => {
    const file = await configFile(`repository = "${repos.a}"\n`, mode)
    const r = await runMain(['info', '--config', file])
    expect(r.code).toBe(3)
    expect(r.stdout).toBe('')
    expect(r.stderr).toBe(`pgkeep: error: config file '${file}' can be written by other users (mode ${shown})\nHINT: chmod go-w '${file}'\n`)
  })

  it('when it lies in a directory other users may write, unless the sticky bit protects it', async () => {
    const file = await configFile(`repository = "${repos.a}"\n`, 0o600, 0o777)
    const r = await runMain(['info', '--config', file, '--json'])
    expect(r.code).toBe(3)
    expect(JSON.parse(r.stdout).error).toMatchObject({
      code: 'CONFIG',
      message: expect.stringContaining('which other users can write (mode 0777)'),
      hint: expect.stringContaining('chmod go-w'),
    })
    const sticky = await configFile(`repository = "${repos.a}"\n`, 0o600, 0o1777)
    expect(await repoUsed(['--config', sticky])).toBe(repos.a)
  })

  it('when it has an unknown key, anywhere, naming the key it may have meant', async () => {
    for (const [text, key, near] of [
      [`repositry = "${repos.a}"\n`, 'repositry', 'repository'],
      [`[check]\nmax_backup_ag = "1d"\n`, 'max_backup_ag', 'max_backup_age'],
      [`[clusters.main]\nconnifo = "host=x"\n`, 'connifo', 'conninfo'],
    ]) {
      const file = await configFile(text!)
      const r = await runMain(['info', '--config', file])
      expect(r.code, text).toBe(3)
      expect(r.stderr).toMatch(new RegExp(`^pgkeep: error: unknown key '${key}'.* in config file '${file}'\\nHINT: did you mean '${near}'\\? known keys`))
    }
  })

  it('when it is not TOML, or a value has the wrong type, or a cluster name is unusable', async () => {
    for (const [text, message] of [
      ['repository = \n', /is not valid TOML: .*\(line 1, column/],
      ['repository = 5\n', /'repository' in config file '.*' must be a non-empty string/],
      ['check = "often"\n', /'check' in config file '.*' must be a table/],
      ['[clusters."../x"]\nconninfo = "host=x"\n', /cluster name '\.\.\/x' in config file '.*' is not usable/],
    ] as const) {
      const r = await runMain(['info', '--config', await configFile(text)])
      expect(r.code, text).toBe(3)
      expect(r.stderr, text).toMatch(message)
      expect(r.stderr).toMatch(/\nHINT: /)
    }
  })

  it('when the file named does not exist', async () => {
    const r = await runMain(['info', '--config', join(dir, 'nosuch.toml')])
    expect(r.code).toBe(3)
    expect(r.stderr).toMatch(/config file '.*nosuch\.toml' does not exist\nHINT: check --config and PGKEEP_CONFIG/)
    const env = await runMain(['info'], { PGKEEP_CONFIG: join(dir, 'nosuch.toml') })
    expect(env.code).toBe(3)
  })
})

describe('which settings win', () => {
  it('the repository: --repo over PGKEEP_REPO over the file', async () => {
    const file = await configFile(`repository = "${repos.a}"\n`)
    expect(await repoUsed(['--config', file])).toBe(repos.a)
    expect(await repoUsed(['--config', file], { PGKEEP_REPO: repos.b })).toBe(repos.b)
    expect(await repoUsed(['--config', file, '--repo', repos.c], { PGKEEP_REPO: repos.b })).toBe(repos.c)
    const shown = await runMain(['config', 'show', '--config', file, '--json'], { PGKEEP_REPO: repos.b })
    expect(JSON.parse(shown.stdout)).toMatchObject({ configFile: { path: file, source: '--config' }, repository: { value: repos.b, source: 'PGKEEP_REPO' } })
  })

  it('the file: --config over PGKEEP_CONFIG; --no-config reads none; a relative repository is taken from its directory', async () => {
    const fileA = await configFile(`repository = "${repos.a}"\n`)
    const fileB = await configFile(`repository = "../repo-b"\n`)
    expect(await repoUsed([], { PGKEEP_CONFIG: fileB })).toBe(repos.b)
    expect(await repoUsed(['--config', fileA], { PGKEEP_CONFIG: fileB })).toBe(repos.a)
    const none = await runMain(['info', '--no-config'], { PGKEEP_CONFIG: fileB })
    expect(none.code).toBe(2)
    expect(none.stderr).toMatch(/HINT: give --repo/)
    const both = await runMain(['info', '--config', fileA, '--no-config'])
    expect(both.code).toBe(2)
  })

  it("check's limits: each --max-*-age option over the same key of [check]; the others stay", async () => {
    const file = await configFile(`repository = "${repos.a}"\n[check]\nmax_backup_age = "26h"\nmax_wal_age = "5m"\n`)
    const fromFile = await runMain(['check', '--config', file, '--json'])
    // The repository is empty: late whatever the limits, and the report says which limits it applied.
    expect(fromFile.code).toBe(1)
    expect(JSON.parse(fromFile.stdout)).toMatchObject({
      ok: false,
      limits: { maxBackupAgeMs: 26 * 3_600_000, maxWalAgeMs: 300_000 },
      violations: [{ code: 'NO_CLUSTER' }],
    })
    const merged = JSON.parse((await runMain(['check', '--config', file, '--max-backup-age', '2d', '--max-drill-age', '8d', '--json'])).stdout)
    expect(merged.limits).toEqual({ maxBackupAgeMs: 2 * 86_400_000, maxWalAgeMs: 300_000, maxDrillAgeMs: 8 * 86_400_000 })
    const bad = await runMain(['check', '--config', await configFile(`repository = "${repos.a}"\n[check]\nmax_wal_age = "5"\n`)])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/invalid max_wal_age in config file '.*' '5'\nHINT: give a duration with a unit/)
  })

  it("the server: -d over the file's cluster; config show masks passwords and never prints the passphrase", async () => {
    const pass = join(dir, 'passphrase')
    await writeFile(pass, 'never-shown-passphrase\n', { mode: 0o600 })
    const file = await configFile(
      `repository = "${repos.a}"\npassphrase_file = "${pass}"\n[clusters.main]\nconninfo = "postgres://repl:s3cret@db1:5432/"\nslot = "pgkeep"\n`,
    )
    const fromFile = await runMain(['config', 'show', '--config', file, '--json'])
    expect(fromFile.code, fromFile.stderr).toBe(0)
    expect(fromFile.stdout).not.toMatch(/s3cret|never-shown/)
    expect(JSON.parse(fromFile.stdout)).toMatchObject({
      server: { value: 'postgres://repl:***@db1:5432/', source: `cluster 'main' of config file '${file}'` },
      passphrase: { source: `config file '${file}'`, file: pass },
      clusters: { main: { conninfo: 'postgres://repl:***@db1:5432/', slot: 'pgkeep' } },
    })
    const overridden = JSON.parse((await runMain(['config', 'show', '--config', file, '-d', 'host=db2 password=x', '--json'])).stdout)
    expect(overridden.server).toEqual({ value: 'host=db2 password=***', source: '-d' })
    const env = JSON.parse((await runMain(['config', 'show', '--config', file, '--json'], { PGKEEP_PASSPHRASE_FILE: '/elsewhere' })).stdout)
    expect(env.passphrase).toEqual({ source: 'PGKEEP_PASSPHRASE_FILE', file: '/elsewhere' })
    const text = await runMain(['config', 'show', '--config', file])
    expect(text.stdout).toMatch(/^config file +.*config\.toml \(--config\)$/m)
    expect(text.stdout).not.toMatch(/s3cret|never-shown/)
  })
})

describe('pure parts', () => {
  it('masks every password form of a connection string', () => {
    expect(maskConninfo('postgres://u:p%40ss@h:5432/db?sslmode=require&password=x')).toBe('postgres://u:***@h:5432/db?sslmode=require&password=***')
    expect(maskConninfo('postgresql://u@h/db')).toBe('postgresql://u@h/db')
    expect(maskConninfo("host=h password='a b\\' c' sslpassword=k user=u")).toBe('host=h password=*** sslpassword=*** user=u')
    expect(maskConninfo('host=h password = secret')).toBe('host=h password = ***')
  })

  it('looks for the user file (XDG, else HOME), then the system file', () => {
    expect(defaultConfigPaths({ XDG_CONFIG_HOME: '/x', HOME: '/h' })).toEqual(['/x/pgkeep/config.toml', '/etc/pgkeep/config.toml'])
    expect(defaultConfigPaths({ HOME: '/h' })).toEqual(['/h/.config/pgkeep/config.toml', '/etc/pgkeep/config.toml'])
    // A relative XDG_CONFIG_HOME is ignored, as the XDG specification says.
    expect(defaultConfigPaths({ XDG_CONFIG_HOME: 'rel', HOME: '/h' })).toEqual(['/h/.config/pgkeep/config.toml', '/etc/pgkeep/config.toml'])
    expect(defaultConfigPaths({})).toEqual(['/etc/pgkeep/config.toml'])
  })
})
