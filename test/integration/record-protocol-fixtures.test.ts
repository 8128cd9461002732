// Regenerates the recorded server bytes in test/fixtures/protocol/ that the unit tests decode. Runs only when
// PGKEEP_RECORD_FIXTURES=1 (`PGKEEP_RECORD_FIXTURES=1 npx vitest run test/integration/record-protocol-fixtures.test.ts`):
// the fixtures are committed, and re-recording changes them.

import { writeFile } from 'node:fs/promises'
import { createServer, connect as netConnect, type Server } from 'node:net'
import { join } from 'node:path'
import { describe, it } from 'vitest'
import { baseBackup, connect, createReplicationSlot, identifySystem, show, startReplication, timelineHistory } from '../../protocol/index.js'
import { FrameReader } from '../../protocol/wire/frame-reader.js'
import { startCluster } from '../harness/cluster.js'

const OUT = join(import.meta.dirname, '..', 'fixtures', 'protocol')

/** A loopback proxy that records every byte the server sends. */
async function recordingProxy(port: number): Promise<{ port: number; bytes: () => Buffer; server: Server }> {
  const chunks: Buffer[] = []
  const server = createServer((client) => {
    const upstream = netConnect({ host: '127.0.0.1', port })
    client.pipe(upstream)
    upstream.on('data', (d: Buffer) => chunks.push(Buffer.from(d)))
    upstream.pipe(client)
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  return { port: (server.address() as { port: number }).port, bytes: () => Buffer.concat(chunks), server }
}

/**
 * Frames of a recording with bulk data thinned: inside each COPY only the first `keep` data frames of every run are
 * kept (a run restarts at each archive), while control messages and the whole manifest are kept. Every kept frame
 * is byte-exact as the server sent it.
 */
function thin(raw: Buffer, keep: number): Buffer {
  const f = new FrameReader()
  f.push(raw)
  const out: Buffer[] = []
  let inCopy = false
  let manifest = false
  let run = 0
  for (let fr = f.next(); fr; fr = f.next()) {
    const header = Buffer.alloc(5)
    header[0] = fr.type
    header.writeInt32BE(fr.payload.length + 4, 1)
    if (fr.type === 0x48 || fr.type === 0x57) {
      inCopy = true
      manifest = false
      run = 0
    } else if (fr.type === 0x63) inCopy = false
    else if (fr.type === 0x64 && inCopy) {
      const tag = fr.payload[0]
      if (run === 0 && fr.payload.subarray(0, 40).toString('latin1').includes('PostgreSQL-Backup-Manifest')) manifest = true
      if (tag === 0x6d) manifest = true // 'm' (PG 15+)
      if (tag === 0x6e) run = 0 // 'n' new archive (PG 15+)
      const control = tag === 0x6e || tag === 0x70 || tag === 0x6d || tag === 0x6b // n p m, keepalive k
      if (!control && !manifest && ++run > keep) continue
    }
    out.push(header, fr.payload)
  }
  return Buffer.concat(out)
}

describe.runIf(process.env.PGKEEP_RECORD_FIXTURES === '1')('record protocol fixtures', () => {
  for (const major of [14, 15] as const) {
    it(`records a session and a base backup of PG ${major}`, async () => {
      const pg = await startCluster({ major, tablespaces: 1 })
      try {
        const [{ sid }] = await pg.sql<{ sid: string }>(`select system_identifier::text sid from pg_control_system()`)
        // Session: SCRAM startup, IDENTIFY_SYSTEM, SHOW, TIMELINE_HISTORY error, slot, the first 4 XLogData frames.
        const p1 = await recordingProxy(pg.port)
        const c = await connect(`host=127.0.0.1 port=${p1.port} user=repl password='Secr3t pw' sslmode=disable`)
        const id = await identifySystem(c)
        await show(c, 'wal_segment_size')
        await timelineHistory(c, 1).catch(() => {})
        await createReplicationSlot(c, 'fixture_slot', { temporary: true, reserveWal: true })
        await pg.sql(`create table filler as select g from generate_series(1, 20000) g`)
        const stream = await startReplication(c, { slot: 'fixture_slot', startLsn: id.xlogPos - (id.xlogPos % (16n << 20n)) })
        let got = 0
        for await (const e of stream) {
          if (e.type === 'xlogdata') got += e.data.length
          if (got > 256 * 1024) break
        }
        await c.close()
        p1.server.close()
        await writeFile(join(OUT, `session-pg${major}.bin`), thin(p1.bytes(), 4))
        await writeFile(join(OUT, `session-pg${major}.json`), JSON.stringify({ systemId: sid, timeline: 1, major }, null, 2) + '\n')

        // Base backup: result sets, archives and the manifest; only the first 3 tar data frames of each archive are kept.
        const p2 = await recordingProxy(pg.port)
        const b = await connect(`host=127.0.0.1 port=${p2.port} user=repl password='Secr3t pw' sslmode=disable`)
        const archives: string[] = []
        let endLsn = ''
        for await (const e of baseBackup(b, { label: 'fixture', checkpoint: 'fast', progress: true })) {
          if (e.type === 'archive') archives.push(e.name)
          if (e.type === 'end') endLsn = e.endLsn.toString()
        }
        await b.close()
        p2.server.close()
        await writeFile(join(OUT, `base-backup-pg${major}.bin`), thin(p2.bytes(), 3))
        await writeFile(join(OUT, `base-backup-pg${major}.json`), JSON.stringify({ major, archives, endLsn }, null, 2) + '\n')
      } finally {
        await pg.destroy()
      }
    })
  }
})
