// Physical replication slots: CREATE_REPLICATION_SLOT, READ_REPLICATION_SLOT (15+), DROP_REPLICATION_SLOT.

import { type Lsn, parseLsn } from '../lsn.js'
import type { ReplicationConnection } from '../session/connection.js'
import { checkSlotName, onlyRow, text } from './text.js'

export interface CreateSlotOptions {
  /** Dropped when the session ends or on any error in it (protocol.md §1.3). */
  temporary?: boolean
  /** Reserve WAL from now on instead of from the first START_REPLICATION. */
  reserveWal?: boolean
  signal?: AbortSignal
}

export interface CreatedSlot {
  readonly slotName: string
  /** Always 0/0 for a physical slot. */
  readonly consistentPoint: Lsn
}

export async function createReplicationSlot(c: ReplicationConnection, name: string, o: CreateSlotOptions = {}): Promise<CreatedSlot> {
  const temp = o.temporary ? ' TEMPORARY' : ''
  // 15+ takes parenthesized options; the old form still parses there, but use each era's documented syntax.
  const opts = o.reserveWal ? (c.serverMajor >= 15 ? ' (RESERVE_WAL)' : ' RESERVE_WAL') : ''
  const row = onlyRow(await c.simpleQuery(`CREATE_REPLICATION_SLOT ${checkSlotName(name)}${temp} PHYSICAL${opts}`, o), 'CREATE_REPLICATION_SLOT')
  const point = text(row[1])
  return { slotName: text(row[0]) ?? name, consistentPoint: point ? parseLsn(point) : 0n }
}

export interface SlotInfo {
  readonly slotType: string
  /** NULL until WAL is reserved. */
  readonly restartLsn: Lsn | null
  readonly restartTimeline: number | null
}

/** READ_REPLICATION_SLOT (15+). Resolves null when the slot does not exist. */
export async function readReplicationSlot(c: ReplicationConnection, name: string, o: { signal?: AbortSignal } = {}): Promise<SlotInfo | null> {
  const row = onlyRow(await c.simpleQuery(`READ_REPLICATION_SLOT ${checkSlotName(name)}`, o), 'READ_REPLICATION_SLOT')
  const type = text(row[0])
  if (type === null) return null
  const lsn = text(row[1])
  const tli = text(row[2])
  return { slotType: type, restartLsn: lsn ? parseLsn(lsn) : null, restartTimeline: tli ? Number(tli) : null }
}

/** DROP_REPLICATION_SLOT; with `wait`, blocks while the slot is active instead of failing. */
export async function dropReplicationSlot(c: ReplicationConnection, name: string, o: { wait?: boolean; signal?: AbortSignal } = {}): Promise<void> {
  await c.simpleQuery(`DROP_REPLICATION_SLOT ${checkSlotName(name)}${o.wait ? ' WAIT' : ''}`, o)
}
