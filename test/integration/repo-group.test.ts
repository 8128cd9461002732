// `pgkeep init --group G`: a directory repository the group may read (the server's user runs `wal get` in
// restore_command while backups run as root). The fs driver writes everything group-readable there, and keeps
// every other repository private.

import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runBin, runMain } from '../harness/cli.js'
import { serverUser } from '../harness/server-user.js'

const u = serverUser()

async function modes(dir: string): Promise<Map<string, { mode: string; gid: number }>> {
  const out = new Map<string, { mode: string; gid: number }>()
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const p = join(e.parentPath, e.name)
    const st = await stat(p)
    out.set(p.slice(dir.length + 1), { mode: (st.mode & 0o7777).toString(8), gid: st.gid })
  }
  return out
}

describe('init --group', () => {
  let base: string
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'pgkeep-group-'))
    await chmod(base, 0o755)
  })
  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true })
  })

  it.runIf(u.drop)('shares a new repository with the group: 02750 directories, 0640 files; its members can read it', async () => {
    const repo = join(base, 'backups', 'shared')
    const init = await runMain(['init', '--repo', repo, '--group', 'postgres', '--encrypt'], { PGKEEP_PASSPHRASE: 'pw' })
    expect(init.code, init.stderr).toBe(0)
    const top = await stat(repo)
    expect((top.mode & 0o7777).toString(8)).toBe('2750')
    expect(top.gid).toBe(u.gid)
    expect(((await stat(join(base, 'backups'))).mode & 0o777).toString(8)).toBe('755')
    const all = await modes(repo)
    expect(all.size).toBeGreaterThan(2)
    for (const [path, m] of all) {
      expect(m.gid, path).toBe(u.gid)
      expect(m.mode, path).toBe((await stat(join(repo, path))).isDirectory() ? '2750' : '640')
    }
    const info = await runBin(['info', '--repo', repo], { PGKEEP_PASSPHRASE: 'pw' }, { asServerUser: true })
    expect(info.code, info.stderr).toBe(0)
    expect(info.stdout).toContain('is empty')

    // Without --group a repository stays private: the server's user cannot read it.
    const private_ = join(base, 'private')
    expect((await runMain(['init', '--repo', private_])).code).toBe(0)
    for (const [path, m] of await modes(private_)) expect(m.mode, path).toMatch(/^(600|700)$/)
    const denied = await runBin(['info', '--repo', private_], {}, { asServerUser: true })
    expect(denied.code).not.toBe(0)
  })

  it('refuses what it cannot share', async () => {
    const full = join(base, 'full')
    await mkdir(full)
    await writeFile(join(full, 'something'), 'x')
    const cases: [string[], RegExp][] = [
      [['--repo', 's3://bucket/prefix', '--group', 'postgres'], /--group is for a directory repository/],
      [['--repo', full, '--group', 'postgres'], /--group needs a new or empty directory, and '.*full' is not empty/],
      [['--repo', join(base, 'new'), '--group', 'no_such_group_x'], /there is no group 'no_such_group_x'/],
    ]
    for (const [args, message] of cases) {
      const r = await runMain(['init', ...args])
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr).toMatch(message)
    }
  })
})
