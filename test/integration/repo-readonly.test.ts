// Read-only access to a repository, as a disaster-recovery credential has it: the repository belongs to root and
// is only readable (directories 0755, files 0644) by the user `postgres`, who runs the real binary. info, verify,
// unlock (listing), restore and `wal get` work, restore and verify saying once that they go on without a lock; a
// write (`wal push`) fails with a permission error, which shows the access really is read-only. The restored
// server recovers through `wal get` (WAL pushed after the backup) and holds the source's rows; `wal get` hands out
// the server's own segment byte for byte. (Run as a non-root user, the repository is made read-only instead.)

import { execFileSync } from 'node:child_process'
import { chmod, copyFile, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runBin, runMain } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { serverUser } from '../harness/server-user.js'
import { startRestored, stopRestored, tableChecksums, waitForPromotion } from './restore-fixture.js'
import { ensureBuilt } from './wal-helpers.js'

describe('read-only access to an fs repository (PG 17)', () => {
  let pg: Cluster
  let repoBase: string
  let repo: string
  let pushed: { name: string; copy: string }
  let want: Record<string, string>
  const asReader = (args: string[]) => runBin(args, {}, { asServerUser: true })

  beforeAll(async () => {
    ensureBuilt()
    pg = await startCluster({ major: 17 })
    repoBase = await mkdtemp(join(tmpdir(), 'pgkeep-ro-'))
    await chmod(repoBase, 0o755)
    repo = join(repoBase, 'repo')
    await pg.sql('create table ro_rows (id int primary key, v text) tablespace ts1')
    await pg.sql(`insert into ro_rows select g, md5(g::text) from generate_series(1, 20000) g`)
    expect((await runMain(['init', '--repo', repo])).code).toBe(0)
    const b = await runMain(['backup', '-d', pg.url(), '--repo', repo])
    expect(b.code, b.stderr).toBe(0)
    // WAL after the backup, archived with `wal push`: only restore_command (wal get) can bring it back.
    await pg.sql(`insert into ro_rows select g, 'after the backup' from generate_series(20001, 21000) g`)
    const [{ name }] = await pg.sql<{ name: string }>('select pg_walfile_name(pg_current_wal_lsn()) as name')
    await pg.sql('select pg_switch_wal()')
    const copy = join(repoBase, `${name}.server`)
    await copyFile(join(pg.dataDir, 'pg_wal', name), copy)
    pushed = { name, copy }
    const p = await runMain(['wal', 'push', '--repo', repo, join(pg.dataDir, 'pg_wal', name)])
    expect(p.code, p.stderr).toBe(0)
    want = await tableChecksums(pg)
    // Readable, never writable, by the reader.
    if (serverUser().drop) execFileSync('chmod', ['-R', 'u=rwX,go=rX', repo])
    else execFileSync('chmod', ['-R', 'a-w', repo])
  }, 180_000)
  afterAll(async () => {
    await pg?.destroy()
    if (repoBase) {
      execFileSync('chmod', ['-R', 'u+w', repoBase])
      await rm(repoBase, { recursive: true, force: true })
    }
  })

  it('refuses writes: wal push fails with a permission error (exit 20)', async () => {
    const push = await asReader(['wal', 'push', '--repo', repo, join(pg.dataDir, 'pg_wal', pushed.name)])
    expect(push.code, push.stderr).toBe(20)
    expect(push.stderr).toMatch(/permission denied/)
  })

  it('info, unlock and verify work and write nothing', async () => {
    const info = await asReader(['info', '--repo', repo, '--json'])
    expect(info.code, info.stderr).toBe(0)
    const parsed = JSON.parse(info.stdout) as { clusters: { backups: unknown[] }[]; locks: unknown[] }
    expect(parsed.clusters.flatMap((c) => c.backups)).toHaveLength(1)
    expect(parsed.locks).toEqual([])
    const unlock = await asReader(['unlock', '--repo', repo])
    expect(unlock.code, unlock.stderr).toBe(0)
    expect(unlock.stdout).toMatch(/holds no locks/)
    const verify = await asReader(['verify', '--repo', repo])
    expect(verify.code, verify.stdout + verify.stderr).toBe(0)
    expect(verify.stdout).toMatch(/no problems found/)
    expect(verify.stderr.match(/no write access to repository/g)).toHaveLength(1)
  })

  it("wal get hands out the server's own segment byte for byte", async () => {
    const out = join(pg.baseDir, `wal-get-${pushed.name}`)
    const get = await asReader(['wal', 'get', '--repo', repo, '--prefetch', '0', pushed.name, out])
    expect(get.code, get.stderr).toBe(0)
    expect((await readFile(out)).equals(await readFile(pushed.copy))).toBe(true)
  })

  it('restore works, says once that it has no lock, and the restored server recovers through wal get', async () => {
    const dir = join(pg.baseDir, 'restored-ro')
    const ts = join(pg.baseDir, 'restored-ro-ts1')
    const res = await asReader(['restore', '--repo', repo, '--pgdata', dir, '--tablespace-mapping', `${pg.tablespaceDirs[0]}=${ts}`])
    expect(res.code, res.stderr).toBe(0)
    expect(res.stderr.match(/no write access to repository '[^']+': restoring without a lock/g)).toHaveLength(1)
    const c = await startRestored(17, dir, pg.baseDir, [ts])
    try {
      await waitForPromotion(c)
      expect(await tableChecksums(c)).toEqual(want)
      expect(await c.log()).toContain(`restored log file "${pushed.name}" from archive`)
    } finally {
      await stopRestored(c)
    }
  })
})
