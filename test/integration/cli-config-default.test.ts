// The default config file locations as a command the server runs sees them: `wal get` as restore_command runs as
// the server's user (postgres when the tests run as root) with the environment of whoever started the server, so
// HOME may name a home that user cannot look into. Such a location is passed over, never an error (an error there
// stopped recovery: "cannot read config file '/root/.config/pgkeep/config.toml': EACCES"). A file that user can
// reach is still read.

import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runBin } from '../harness/cli.js'
import { serverUser } from '../harness/server-user.js'
import { ensureBuilt } from './wal-helpers.js'

beforeAll(() => ensureBuilt(), 300_000)

describe('default config locations seen by the server user', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-config-home-'))
  })
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it.skipIf(!serverUser().drop)('passes over a HOME the user cannot look into, and reads one it can', async () => {
    // This process's user's home, closed to others, with a config file in it.
    const closed = join(dir, 'closed-home')
    await mkdir(join(closed, '.config', 'pgkeep'), { recursive: true })
    await writeFile(join(closed, '.config', 'pgkeep', 'config.toml'), 'repository = "/nowhere"\n', { mode: 0o600 })
    await chmod(closed, 0o700)
    const shown = await runBin(['config', 'show', '--json'], { HOME: closed }, { asServerUser: true })
    expect(shown.stderr).toBe('')
    expect(shown.code).toBe(0)
    expect(JSON.parse(shown.stdout)).toMatchObject({
      configFile: null,
      configSource: 'none found',
      searched: [join(closed, '.config', 'pgkeep', 'config.toml'), '/etc/pgkeep/config.toml'],
    })

    // A file it can reach (root's, which it may read and nobody else may write) under XDG_CONFIG_HOME is read.
    const xdg = join(dir, 'xdg')
    await mkdir(join(xdg, 'pgkeep'), { recursive: true })
    await writeFile(join(xdg, 'pgkeep', 'config.toml'), 'repository = "/srv/pgkeep"\n', { mode: 0o644 })
    await chmod(dir, 0o755)
    const own = await runBin(['config', 'show', '--json'], { HOME: closed, XDG_CONFIG_HOME: xdg }, { asServerUser: true })
    expect(own.code, own.stderr).toBe(0)
    expect(JSON.parse(own.stdout)).toMatchObject({ configSource: 'default location', repository: { value: '/srv/pgkeep' } })
  })
})
