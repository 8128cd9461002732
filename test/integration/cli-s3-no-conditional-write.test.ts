// The built CLI on an S3 store that refuses conditional writes (s3rver behind a loopback proxy answering 501 to
// If-None-Match, as OpenStack Swift's S3 layer does): `pgkeep init` records the fallback and warns once, `backup`
// and `restore` work through it without another conditional request, and the restored copy starts and holds the
// source's rows. No command, nor `wal get` run by the restored server, prints the AWS SDK's Node-version warning.

import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { runBin } from '../harness/cli.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { startS3ConditionalProxy, type S3ConditionalProxy } from '../harness/s3-conditional-proxy.js'
import { startS3Server, type S3TestServer } from '../harness/s3-server.js'
import { addOwnTables, startRestored, stopRestored, tableChecksums, waitForPromotion } from './restore-fixture.js'
import { ensureBuilt } from './wal-helpers.js'

beforeAll(() => ensureBuilt(), 120_000)

const MAJOR = 16
/** Text of the SDK's warning (process.emitWarning 'NodeVersionSupportWarning', "…will require node >=22"). */
const SDK_WARNING = /NodeVersionSupportWarning|AWS SDK for JavaScript \(v3\)|will require node/

describe('S3 store without conditional writes, through the CLI', () => {
  let pg: Cluster
  let s3: S3TestServer
  let proxy: S3ConditionalProxy
  let url: string
  let env: Record<string, string>
  beforeAll(async () => {
    pg = await startCluster({ major: MAJOR })
    s3 = await startS3Server()
    proxy = await startS3ConditionalProxy(s3.endpoint, 'refuse')
    url = `s3://${s3.bucket}/${s3.prefix}no-conditional`
    // Only what a user would set: runBin starts the binary with PATH and HOME plus these (nothing inherited, so the
    // test process's own AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED does not reach it).
    env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL: proxy.endpoint }
  })
  afterAll(async () => {
    await pg?.destroy()
    await proxy?.close()
    await s3?.stop()
  })

  it('init records the fallback and says so once; backup and restore work; the copy starts with the same rows', async () => {
    const init = await runBin(['init', '--repo', url], env)
    expect(init.code, init.stderr).toBe(0)
    expect(init.stderr.match(/warning: .*does not enforce conditional writes/g), init.stderr).toHaveLength(1)
    expect(init.stderr).toMatch(/501 NotImplemented/)
    expect(init.stderr).not.toMatch(SDK_WARNING)
    // The probe: one conditional PutObject and one conditional CompleteMultipartUpload, both refused.
    expect(proxy.answered.notImplemented).toBe(2)

    await addOwnTables(pg)
    const backup = await runBin(['backup', '-d', pg.url(), '--repo', url, '--json'], env)
    expect(backup.code, backup.stderr).toBe(0)
    expect(backup.stderr).not.toMatch(SDK_WARNING)
    expect(backup.stderr).not.toMatch(/conditional writes/) // said once, at init
    const want = await tableChecksums(pg)

    const dir = join(pg.baseDir, 'restored')
    const restore = await runBin(
      [
        'restore',
        '--repo',
        url,
        '--pgdata',
        dir,
        '--tablespace-mapping',
        `${pg.tablespaceDirs[0]}=${dir}-ts`,
        '--target-immediate',
        '--target-action',
        'promote',
      ],
      env,
    )
    expect(restore.code, restore.stderr).toBe(0)
    expect(restore.stderr).not.toMatch(SDK_WARNING)
    // Nothing after the probe sent a conditional request: every record, lock and index write took the fallback.
    expect(proxy.answered.notImplemented).toBe(2)

    // The restored server runs `pgkeep wal get` with this process's environment: the AWS variables, and without
    // the SDK switch the test harness sets for itself, so its log would show the SDK's warning if pgkeep printed it.
    const saved = { ...process.env }
    Object.assign(process.env, env)
    delete process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED
    let c: Cluster | undefined
    try {
      c = await startRestored(MAJOR, dir, pg.baseDir, [`${dir}-ts`])
      await waitForPromotion(c)
      expect(await tableChecksums(c)).toEqual(want)
      const log = await c.log()
      expect(log).toMatch(/restored log file "[0-9A-F]{24}" from archive/) // so `wal get` did run
      expect(log).not.toMatch(SDK_WARNING)
    } finally {
      if (c) await stopRestored(c)
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k]
      Object.assign(process.env, saved)
    }
  })
})
