// IDENTIFY_SYSTEM, SHOW and TIMELINE_HISTORY (protocol-replication.html).

import { ProtocolError, ServerError } from '../errors.js'
import { type Lsn, parseLsn } from '../lsn.js'
import type { ReplicationConnection } from '../session/connection.js'
import { MAX_TIMELINE_HISTORY_BYTES, TIMELINE_HISTORY_RESULT } from '../session/result-limits.js'
import { onlyRow, requiredText, text } from './text.js'

export interface SystemIdentity {
  /** The cluster's unique system identifier (a u64, kept as decimal text's bigint). */
  readonly systemId: bigint
  /** Current timeline (on a standby: the timeline being replayed). */
  readonly timeline: number
  /** Current WAL flush position (on a standby: flush/replay position). */
  readonly xlogPos: Lsn
  /** Database name; null in physical replication mode. */
  readonly dbName: string | null
}

export async function identifySystem(c: ReplicationConnection, o: { signal?: AbortSignal } = {}): Promise<SystemIdentity> {
  const row = onlyRow(await c.simpleQuery('IDENTIFY_SYSTEM', o), 'IDENTIFY_SYSTEM')
  return {
    systemId: BigInt(requiredText(row[0], 'systemid')),
    timeline: Number(requiredText(row[1], 'timeline')),
    xlogPos: parseLsn(requiredText(row[2], 'xlogpos')),
    dbName: text(row[3]),
  }
}

/** SHOW name: the setting's value as text (`16MB`, `on`, …). */
export async function show(c: ReplicationConnection, name: string, o: { signal?: AbortSignal } = {}): Promise<string> {
  if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(name)) throw new ServerError({ sqlState: '42601', message: `invalid setting name '${name}'` })
  return requiredText(onlyRow(await c.simpleQuery(`SHOW ${name}`, o), 'SHOW')[0], name)
}

export interface TimelineHistoryFile {
  /** `%08X.history` */
  readonly fileName: string
  /** The file's raw bytes (restore point names in it need not be UTF-8). */
  readonly content: Buffer
}

/**
 * Fetches a timeline's history file. Timeline 1 has none: the server answers with ServerError 58P01.
 * @throws ProtocolError when the file is larger than MAX_TIMELINE_HISTORY_BYTES or its name is not `%08X.history`
 */
export async function timelineHistory(c: ReplicationConnection, timeline: number, o: { signal?: AbortSignal } = {}): Promise<TimelineHistoryFile> {
  const tli = timeline >>> 0
  const row = onlyRow(await c.simpleQuery(`TIMELINE_HISTORY ${tli}`, { signal: o.signal, limits: TIMELINE_HISTORY_RESULT }), 'TIMELINE_HISTORY')
  const fileName = requiredText(row[0], 'filename')
  const expected = `${tli.toString(16).toUpperCase().padStart(8, '0')}.history`
  if (fileName !== expected) throw new ProtocolError(`TIMELINE_HISTORY ${tli} answered with file name '${fileName.slice(0, 40)}', not '${expected}'`)
  const content = row[1] ?? Buffer.alloc(0)
  if (content.length > MAX_TIMELINE_HISTORY_BYTES) {
    throw new ProtocolError(`the history file of timeline ${tli} has ${content.length} bytes; at most ${MAX_TIMELINE_HISTORY_BYTES} are accepted`)
  }
  return { fileName, content: Buffer.from(content) }
}
