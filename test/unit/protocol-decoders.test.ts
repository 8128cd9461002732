// Decoders over bytes recorded from real PG 14 and 15 servers (test/fixtures/protocol, made by
// test/integration/record-protocol-fixtures.test.ts), checked against facts recorded beside them.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { baseBackupCommand } from '../../protocol/commands/base-backup.js'
import { ProtocolError } from '../../protocol/errors.js'
import { formatLsn, parseLsn } from '../../protocol/lsn.js'
import { type BackendMessage, decodeBackend } from '../../protocol/messages/backend.js'
import { decodeBaseBackupMessage } from '../../protocol/messages/base-backup.js'
import { decodeReplicationMessage, encodeStandbyStatusUpdate } from '../../protocol/messages/replication.js'
import { type Frame, FrameReader } from '../../protocol/wire/frame-reader.js'

const dir = join(import.meta.dirname, '..', 'fixtures', 'protocol')
const bytes = (name: string) => readFileSync(join(dir, name))
const facts = (name: string) => JSON.parse(readFileSync(join(dir, name), 'utf8'))

function framesOf(buf: Buffer): Frame[] {
  const f = new FrameReader()
  f.push(buf)
  const out: Frame[] = []
  for (let fr = f.next(); fr; fr = f.next()) out.push(fr)
  return out
}

describe.each([14, 15])('recorded PG %i replication session', (major) => {
  const frames = framesOf(bytes(`session-pg${major}.bin`))
  const msgs = frames.map(decodeBackend)
  const known = facts(`session-pg${major}.json`)

  it('decodes SCRAM authentication, startup parameters and ReadyForQuery', () => {
    expect(msgs.slice(0, 4).map((m) => m.type)).toEqual(['AuthenticationSASL', 'AuthenticationSASLContinue', 'AuthenticationSASLFinal', 'AuthenticationOk'])
    expect((msgs[0] as Extract<BackendMessage, { type: 'AuthenticationSASL' }>).mechanisms).toContain('SCRAM-SHA-256')
    const params = new Map(msgs.filter((m) => m.type === 'ParameterStatus').map((m) => [(m as { name: string }).name, (m as { value: string }).value]))
    expect(params.get('server_version')).toMatch(new RegExp(`^${major}\\.`))
    expect(msgs.find((m) => m.type === 'BackendKeyData')).toBeDefined()
  })

  it('decodes IDENTIFY_SYSTEM, SHOW, the TIMELINE_HISTORY error and CREATE_REPLICATION_SLOT', () => {
    const rows = msgs.filter((m) => m.type === 'DataRow') as Extract<BackendMessage, { type: 'DataRow' }>[]
    expect(rows[0].values[0]!.toString()).toBe(known.systemId)
    expect(rows[0].values[1]!.toString()).toBe('1')
    expect(() => parseLsn(rows[0].values[2]!.toString())).not.toThrow()
    expect(rows[0].values[3]).toBeNull()
    expect(rows[1].values[0]!.toString()).toBe('16MB')
    const err = msgs.find((m) => m.type === 'ErrorResponse') as Extract<BackendMessage, { type: 'ErrorResponse' }>
    expect(err.fields.sqlState).toBe('58P01')
    expect(err.fields.severity).toBe('ERROR')
    expect(rows[2].values[0]!.toString()).toBe('fixture_slot')
    const tags = msgs.filter((m) => m.type === 'CommandComplete').map((m) => (m as { tag: string }).tag)
    expect(tags).toContain('IDENTIFY_SYSTEM')
  })

  it('decodes the WAL stream: contiguous XLogData starting at a segment boundary', () => {
    const start = msgs.findIndex((m) => m.type === 'CopyBothResponse')
    expect(start).toBeGreaterThan(0)
    const wal = msgs
      .slice(start + 1)
      .filter((m): m is Extract<BackendMessage, { type: 'CopyData' }> => m.type === 'CopyData')
      .map((m) => decodeReplicationMessage(m.data))
      .filter((m) => m.type === 'XLogData')
    expect(wal.length).toBeGreaterThan(1)
    expect(wal[0].walStart % (16n << 20n)).toBe(0n)
    for (let i = 1; i < wal.length; i++) {
      const prev = wal[i - 1] as Extract<(typeof wal)[number], { type: 'XLogData' }>
      expect(wal[i].walStart).toBe(prev.walStart + BigInt(prev.data.length))
    }
    // The first page of a segment carries the long header: magic, LONG_HEADER flag, page address = segment start.
    const first = wal[0] as Extract<(typeof wal)[number], { type: 'XLogData' }>
    expect(first.data.readUInt16LE(0)).toBe(major === 14 ? 0xd10d : 0xd110)
    expect(first.data.readUInt16LE(2) & 0x2).toBe(0x2)
    expect(first.data.readBigUInt64LE(8)).toBe(first.walStart)
    expect(first.data.readBigUInt64LE(24).toString()).toBe(known.systemId)
  })

  it('rejects every truncation of a control message with ProtocolError', () => {
    let checked = 0
    for (const fr of frames) {
      if (fr.type === 0x64) continue
      const msg = decodeBackend(fr)
      // These end in a free-length byte string, so a shorter payload is still well-formed.
      const openEnded = msg.type === 'AuthenticationSASLContinue' || msg.type === 'AuthenticationSASLFinal' || msg.type === 'BackendKeyData'
      for (let k = 0; k < fr.payload.length; k++) {
        if (openEnded && k >= 4) continue
        expect(() => decodeBackend({ type: fr.type, payload: fr.payload.subarray(0, k) }), `type ${fr.type} cut at ${k}`).toThrow(ProtocolError)
        checked++
      }
    }
    expect(checked).toBeGreaterThan(200)
  })
})

describe.each([14, 15])('recorded PG %i BASE_BACKUP response', (major) => {
  const msgs = framesOf(bytes(`base-backup-pg${major}.bin`)).map(decodeBackend)
  const known = facts(`base-backup-pg${major}.json`)

  it('decodes start position, tablespace list, archives, manifest and end position', () => {
    const rowsets: string[][][] = []
    for (const m of msgs) {
      if (m.type === 'RowDescription') rowsets.push([])
      if (m.type === 'DataRow') rowsets[rowsets.length - 1].push(m.values.map((v) => (v === null ? '<null>' : v.toString())))
    }
    expect(rowsets).toHaveLength(3)
    const [start, spaces, end] = rowsets
    expect(start[0][1]).toBe('1')
    expect(spaces).toHaveLength(2)
    expect(spaces[1][0]).toBe('<null>') // the data directory is last
    expect(Number(spaces[1][2])).toBeGreaterThan(1000) // PROGRESS gives sizes in kB (the tablespace here is empty)
    expect(parseLsn(end[0][0])).toBe(BigInt(known.endLsn))
    expect(parseLsn(end[0][0])).toBeGreaterThan(parseLsn(start[0][0]))

    const copies = msgs.filter((m) => m.type === 'CopyOutResponse').length
    const manifest: Buffer[] = []
    const archives: string[] = []
    if (major >= 15) {
      expect(copies).toBe(1)
      let inManifest = false
      for (const m of msgs) {
        if (m.type !== 'CopyData') continue
        const b = decodeBaseBackupMessage(m.data)
        if (b.type === 'NewArchive') archives.push(b.name)
        if (b.type === 'ManifestFollows') inManifest = true
        if (b.type === 'Data' && inManifest) manifest.push(b.data)
        if (b.type === 'Progress') expect(b.bytesDone).toBeGreaterThan(0n)
      }
    } else {
      expect(copies).toBe(3) // one per tablespace archive, one for the manifest
      let copy = -1
      for (const m of msgs) {
        if (m.type === 'CopyOutResponse') copy++
        if (m.type === 'CopyData' && copy === 2) manifest.push(m.data)
      }
      archives.push(...known.archives)
    }
    expect(archives).toEqual(known.archives)
    const json = JSON.parse(Buffer.concat(manifest).toString('utf8'))
    expect(json['PostgreSQL-Backup-Manifest-Version']).toBe(1)
    const paths = json.Files.map((f: { Path: string }) => f.Path)
    expect(paths).toContain('backup_label')
    expect(paths).toContain('global/pg_control')
    expect(formatLsn(parseLsn(json['WAL-Ranges'][0]['End-LSN']))).toBe(end[0][0])
  })
})

describe('replication messages', () => {
  it('encodes a standby status update byte for byte', () => {
    const b = encodeStandbyStatusUpdate({ written: 0x1_0000_0010n, flushed: 0x20n, applied: 0n, replyRequested: true, nowMs: 946_684_800_001 })
    expect(b.toString('hex')).toBe('72' + '0000000100000010' + '0000000000000020' + '0000000000000000' + '00000000000003e8' + '01')
  })

  it('rejects unknown tags and short messages', () => {
    expect(() => decodeReplicationMessage(Buffer.from([0x78]))).toThrow(ProtocolError)
    expect(() => decodeReplicationMessage(Buffer.from([0x77, 0, 0]))).toThrow(ProtocolError)
    expect(() => decodeBaseBackupMessage(Buffer.from([0x7a]))).toThrow(ProtocolError)
  })
})

describe('BASE_BACKUP command text', () => {
  it('uses the old syntax before 15 and the parenthesized one from 15', () => {
    expect(baseBackupCommand(14, { label: "it's", checkpoint: 'fast', progress: true, maxRateKbps: 1024 })).toBe(
      "BASE_BACKUP LABEL 'it''s' PROGRESS FAST NOWAIT MAX_RATE 1024 MANIFEST 'yes'",
    )
    expect(baseBackupCommand(15, { label: 'x', checkpoint: 'fast', manifestChecksums: 'SHA256' })).toBe(
      "BASE_BACKUP (LABEL 'x', CHECKPOINT 'fast', WAIT 0, MANIFEST 'yes', MANIFEST_CHECKSUMS 'SHA256')",
    )
    expect(baseBackupCommand(17, { incremental: true, verifyChecksums: false })).toBe(
      "BASE_BACKUP (CHECKPOINT 'spread', WAIT 0, MANIFEST 'yes', VERIFY_CHECKSUMS 0, INCREMENTAL)",
    )
  })

  it('refuses INCREMENTAL before 17 and rates out of range', () => {
    expect(() => baseBackupCommand(16, { incremental: true })).toThrow(/17 or later/)
    expect(() => baseBackupCommand(14, { incremental: true })).toThrow(/17 or later/)
    expect(() => baseBackupCommand(15, { maxRateKbps: 0 })).toThrow(/out of range/)
  })
})

describe('LSN text', () => {
  it('round-trips random positions and accepts padded input', () => {
    for (let i = 0; i < 1000; i++) {
      const lsn = (BigInt(Math.floor(Math.random() * 2 ** 32)) << 32n) | BigInt(Math.floor(Math.random() * 2 ** 32))
      expect(parseLsn(formatLsn(lsn))).toBe(lsn)
    }
    expect(parseLsn('0/03000028')).toBe(0x3000028n)
    expect(formatLsn(0x3000028n)).toBe('0/3000028')
    expect(() => parseLsn('0/')).toThrow(ProtocolError)
    expect(() => parseLsn('123456789/0')).toThrow(ProtocolError)
  })
})
