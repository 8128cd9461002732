// `pgkeep check` against real servers: ready on every major; each way of not being ready named with a hint.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect, type ReplicationConnection } from '../../protocol/index.js'
import { runBin, runMain } from '../harness/cli.js'
import { type Cluster, PASSWORD, ROLES, startCluster } from '../harness/cluster.js'
import { MAJORS } from '../harness/pg-binaries.js'

const json = (stdout: string) => JSON.parse(stdout)

describe.each(MAJORS)('pgkeep check on a ready PG %i', (major) => {
  let pg: Cluster
  beforeAll(async () => {
    pg = await startCluster({ major })
  })
  afterAll(async () => pg?.destroy())

  it('exits 0 and reports what the server says about itself', async () => {
    const r = await runMain(['check', '-d', pg.url(), '--json'])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    const report = json(r.stdout)
    const [facts] = await pg.sql<{ sid: string; ver: string; ts: string; oid: number }>(
      `select system_identifier::text sid, current_setting('server_version') ver,
              pg_tablespace_location(t.oid) ts, t.oid::int oid
         from pg_control_system(), pg_tablespace t where t.spcname = 'ts1'`,
    )
    expect(report.ready).toBe(true)
    expect(report.serverVersion).toBe(facts.ver)
    expect(report.systemId).toBe(facts.sid)
    expect(report.timeline).toBe(1)
    expect(report.walLevel).toBe('replica')
    expect(report.maxWalSenders).toBe(10)
    expect(report.walSendersFree).toBe(10)
    expect(report.role).toEqual({ name: ROLES.repl, mayReplicate: true })
    expect(report.dataChecksums).toBe(true)
    expect(report.fullPageWrites).toBe(true)
    expect(report.summarizeWal).toBe(major >= 17 ? true : null)
    expect(report.archiveMode).toBe('off')
    expect(report.tablespaces).toEqual([{ oid: facts.oid, name: 'ts1', location: facts.ts }])
    expect(report.problems).toEqual([])
  })
})

describe('pgkeep check on servers that are not ready (PG 16)', () => {
  let pg: Cluster
  beforeAll(async () => {
    pg = await startCluster({ major: 16, conf: { max_wal_senders: 2 } })
  })
  afterAll(async () => pg?.destroy())

  const problemsOf = async (args: string[], env: Record<string, string> = {}) => {
    const r = await runMain(['check', ...args, '--json'], env)
    expect(r.code).toBe(1)
    return json(r.stdout).problems as { code: string; message: string; hint: string }[]
  }

  it('names an unreachable server', async () => {
    const [p] = await problemsOf(['-d', `host=127.0.0.1 port=1 user=${ROLES.repl}`])
    expect(p.code).toBe('SERVER_UNREACHABLE')
    expect(p.hint).toMatch(/running/)
  })

  it('names a wrong password, a pg_hba.conf rejection and a role without REPLICATION', async () => {
    expect((await problemsOf(['-d', pg.url({ password: 'nope' })]))[0]).toMatchObject({ code: 'AUTH_FAILED', hint: expect.stringMatching(/password/) })
    expect((await problemsOf(['-d', pg.url({ user: ROLES.rejected })]))[0]).toMatchObject({ code: 'HBA_REJECTED', hint: expect.stringMatching(/pg_hba\.conf/) })
    expect((await problemsOf(['-d', pg.url({ user: ROLES.noReplication })]))[0]).toMatchObject({
      code: 'ROLE_NO_REPLICATION',
      hint: expect.stringMatching(/ALTER ROLE norepl REPLICATION/),
    })
  })

  it('names a server without a free WAL sender', async () => {
    const held: ReplicationConnection = await connect(pg.url())
    try {
      const problems = await problemsOf(['-d', pg.url()])
      expect(problems.map((p) => p.code)).toContain('NO_FREE_WAL_SENDER')
      expect(problems.find((p) => p.code === 'NO_FREE_WAL_SENDER')!.hint).toMatch(/max_wal_senders/)
    } finally {
      await held.close()
    }
  })

  it('prints a human report with the error and its hint on stderr, via the installed binary', async () => {
    const r = await runBin(['check', '-h', '127.0.0.1', '-p', String(pg.port), '-U', ROLES.repl], { PGPASSWORD: 'wrong' })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^pgkeep: error: password authentication failed for user "repl"\nHINT: /m)
    const ok = await runBin(['check', '-h', '127.0.0.1', '-p', String(pg.port), '-U', ROLES.repl], { PGPASSWORD: PASSWORD })
    expect(ok.code).toBe(0)
    expect(ok.stdout).toMatch(/ready: pgkeep can back up this server/)
    expect(ok.stdout).toMatch(/max_wal_senders\s+2 \(2 free\)/)
  })
})

describe('pgkeep check on a server with wal_level = minimal (PG 15)', () => {
  let pg: Cluster
  beforeAll(async () => {
    pg = await startCluster({ major: 15, conf: { wal_level: 'minimal', max_wal_senders: 0 } })
  })
  afterAll(async () => pg?.destroy())

  it('says wal_level is minimal and how to fix it', async () => {
    const r = await runMain(['check', '-d', pg.url(), '--json'])
    expect(r.code).toBe(1)
    const report = json(r.stdout)
    expect(report.walLevel).toBe('minimal')
    expect(report.problems.map((p: { code: string }) => p.code)).toContain('WAL_LEVEL_MINIMAL')
    expect(report.problems.find((p: { code: string }) => p.code === 'WAL_LEVEL_MINIMAL').hint).toMatch(/wal_level = 'replica'/)
  })
})
