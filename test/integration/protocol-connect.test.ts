// protocol/ against real servers of every major: authentication methods, transports, and the simple replication
// commands, each checked against what the server says about itself over plain SQL.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  AuthError,
  ConnectionError,
  connect,
  createReplicationSlot,
  dropReplicationSlot,
  identifySystem,
  parseLsn,
  readReplicationSlot,
  ServerError,
  show,
  timelineHistory,
} from '../../protocol/index.js'
import { type Cluster, PASSWORD, ROLES, startCluster } from '../harness/cluster.js'
import { MAJORS } from '../harness/pg-binaries.js'

describe.each(MAJORS)('replication connection to PG %i', (major) => {
  let pg: Cluster
  beforeAll(async () => {
    pg = await startCluster({ major })
  })
  afterAll(async () => pg?.destroy())

  it('authenticates with SCRAM-SHA-256 and identifies the system', async () => {
    const c = await connect(pg.url())
    try {
      const id = await identifySystem(c)
      const [row] = await pg.sql<{ sid: string; lsn: string }>(
        `select system_identifier::text sid, pg_current_wal_flush_lsn()::text lsn from pg_control_system()`,
      )
      expect(id.systemId).toBe(BigInt(row.sid))
      expect(id.timeline).toBe(1)
      expect(id.dbName).toBeNull()
      expect(c.serverMajor).toBe(major)
      expect(c.backendPid).toBeGreaterThan(0)
      expect(await show(c, 'wal_segment_size')).toBe('16MB')
      expect(await show(c, 'data_checksums')).toBe('on')
    } finally {
      await c.close()
    }
  })

  it.each([
    ['md5', ROLES.md5],
    ['cleartext', ROLES.cleartext],
    ['trust', ROLES.trust],
  ])('authenticates with %s', async (_method, user) => {
    const c = await connect(pg.url({ user, password: user === ROLES.trust ? null : PASSWORD }))
    expect((await identifySystem(c)).timeline).toBe(1)
    await c.close()
  })

  it('connects over the Unix socket', async () => {
    const c = await connect(`host=${pg.socketDir} port=${pg.port} user=${ROLES.repl}`)
    expect((await identifySystem(c)).timeline).toBe(1)
    await c.close()
  })

  it('takes the password from .pgpass when none is given', async () => {
    const { writeFile } = await import('node:fs/promises')
    const file = `${pg.baseDir}/pgpass`
    await writeFile(file, `# comment\nother:*:*:*:nope\n127.0.0.1:${pg.port}:replication:${ROLES.repl}:${PASSWORD}\n`, { mode: 0o600 })
    const c = await connect(`host=127.0.0.1 port=${pg.port} user=${ROLES.repl} passfile=${file}`)
    expect((await identifySystem(c)).timeline).toBe(1)
    await c.close()
  })

  it('reports a wrong password, a pg_hba.conf rejection and a role without REPLICATION as AuthError', async () => {
    const wrong = await connect(pg.url({ password: 'wrong' })).catch((e) => e)
    expect(wrong).toBeInstanceOf(AuthError)
    expect(wrong.sqlState).toBe('28P01')
    expect(wrong.hint).toMatch(/password/)

    const rejected = await connect(pg.url({ user: ROLES.rejected })).catch((e) => e)
    expect(rejected).toBeInstanceOf(AuthError)
    expect(rejected.sqlState).toBe('28000')
    expect(rejected.hint).toMatch(/pg_hba\.conf/)

    const norepl = await connect(pg.url({ user: ROLES.noReplication })).catch((e) => e)
    expect(norepl).toBeInstanceOf(AuthError)
    expect(norepl.sqlState).toBe('42501')
    expect(norepl.hint).toMatch(/REPLICATION/)

    const nopw = await connect(`host=127.0.0.1 port=${pg.port} user=${ROLES.repl} passfile=/nonexistent`).catch((e) => e)
    expect(nopw).toBeInstanceOf(AuthError)
    expect(nopw.message).toMatch(/password required/)
  })

  it('reports an unreachable server as a retryable ConnectionError', async () => {
    const err = await connect(`host=127.0.0.1 port=1 user=x password=y`).catch((e) => e)
    expect(err).toBeInstanceOf(ConnectionError)
    expect(err.retryable).toBe(true)
    expect(err.hint).toMatch(/running/)
  })

  it('creates, reads and drops physical slots; reports timeline 1 has no history', async () => {
    const c = await connect(pg.url())
    try {
      const created = await createReplicationSlot(c, 'pgkeep_test_slot', { reserveWal: true })
      expect(created.slotName).toBe('pgkeep_test_slot')
      const [row] = await pg.sql<{ restart_lsn: string | null; temporary: boolean }>(
        `select restart_lsn::text, temporary from pg_replication_slots where slot_name = 'pgkeep_test_slot'`,
      )
      expect(row.restart_lsn).not.toBeNull()
      expect(row.temporary).toBe(false)
      if (major >= 15) {
        const info = await readReplicationSlot(c, 'pgkeep_test_slot')
        expect(info?.slotType).toBe('physical')
        expect(info?.restartTimeline).toBe(1)
        // Compared as values: 19 prints LSNs zero-padded (0/017501E8), 14–18 do not.
        expect(info!.restartLsn).toBe(parseLsn(row.restart_lsn!))
        expect(await readReplicationSlot(c, 'pgkeep_no_such_slot')).toBeNull()
      }
      await dropReplicationSlot(c, 'pgkeep_test_slot')
      expect(await pg.sql(`select 1 from pg_replication_slots where slot_name = 'pgkeep_test_slot'`)).toHaveLength(0)

      await createReplicationSlot(c, 'pgkeep_temp_slot', { temporary: true, reserveWal: true })
      const [t] = await pg.sql<{ temporary: boolean }>(`select temporary from pg_replication_slots where slot_name = 'pgkeep_temp_slot'`)
      expect(t.temporary).toBe(true)

      const noHistory = await timelineHistory(c, 1).catch((e) => e)
      expect(noHistory).toBeInstanceOf(ServerError)
      expect(noHistory.sqlState).toBe('58P01')
    } finally {
      await c.close()
    }
    // The temporary slot died with its session.
    await expect.poll(async () => (await pg.sql(`select 1 from pg_replication_slots where slot_name = 'pgkeep_temp_slot'`)).length).toBe(0)
  })
})
