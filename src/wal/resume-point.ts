// Where `wal stream` starts: after the newest WAL the catalog holds for the cluster, unless the slot shows that an
// older stretch is missing (15+, READ_REPLICATION_SLOT), else where the slot or the server stands.

import type { Lsn } from '../../protocol/index.js'
import type { Repository } from '../repo/index.js'
import { listWalKeys, parseWalKey } from '../repo/index.js'
import { segmentsPerXlogId } from '../pg/wal-names.js'

/** Where and on which timeline `wal stream` starts, and why. */
export interface ResumePoint {
  /** A segment start. */
  startLsn: Lsn
  timeline: number
  /** What decided it: the catalog's newest segment, a gap the slot reveals, the slot, or the server's position. */
  source: 'catalog' | 'catalog-gap' | 'slot' | 'server'
}

/** What the resume decision looks at besides the catalog. */
export interface ResumeInputs {
  systemId: bigint
  segmentSizeBytes: number
  /** The slot's restart position (PostgreSQL 15+, once the slot reserved WAL). */
  slot?: { restartLsn: Lsn; timeline: number } | undefined
  /** IDENTIFY_SYSTEM: the server's timeline and flush position. */
  server: { timeline: number; xlogPos: Lsn }
  signal?: AbortSignal
}

interface Best {
  tli: number
  complete: boolean
}

/** Per segment number, the best stored copy: higher timeline first, then complete over partial (pg_receivewal's rule). */
export async function catalogSegments(
  repo: Repository,
  systemId: bigint,
  segmentSizeBytes: number,
  o: { signal?: AbortSignal } = {},
): Promise<Map<bigint, Best>> {
  const perId = segmentsPerXlogId(segmentSizeBytes)
  const best = new Map<bigint, Best>()
  for (const key of await listWalKeys(repo, systemId, '', o)) {
    const k = parseWalKey(key)
    if (!k || (k.kind !== 'segment' && k.kind !== 'partial')) continue
    const segno = BigInt(`0x${k.name.slice(8, 16)}`) * perId + BigInt(`0x${k.name.slice(16, 24)}`)
    const cand = { tli: k.tli, complete: k.kind === 'segment' }
    const cur = best.get(segno)
    if (!cur || cand.tli > cur.tli || (cand.tli === cur.tli && cand.complete && !cur.complete)) best.set(segno, cand)
  }
  return best
}

/** The resume point (see the file header); the rules are in docs/wal.md. */
export async function findResumePoint(repo: Repository, i: ResumeInputs): Promise<ResumePoint> {
  const seg = BigInt(i.segmentSizeBytes)
  const best = await catalogSegments(repo, i.systemId, i.segmentSizeBytes, { signal: i.signal })
  if (best.size === 0) {
    if (i.slot) return { startLsn: i.slot.restartLsn - (i.slot.restartLsn % seg), timeline: i.slot.timeline, source: 'slot' }
    return { startLsn: i.server.xlogPos - (i.server.xlogPos % seg), timeline: i.server.timeline, source: 'server' }
  }
  let top = -1n
  for (const s of best.keys()) if (s > top) top = s
  const newest = best.get(top)!
  const candidate = newest.complete ? top + 1n : top
  if (i.slot) {
    // Everything from the slot's restart segment up to the candidate must be stored complete; another writer (a
    // backup's WAL stream, `wal push`) may have stored later segments while this streamer was away.
    for (let s = i.slot.restartLsn / seg; s < candidate; s++) {
      if (!best.get(s)?.complete) return { startLsn: s * seg, timeline: best.get(s)?.tli ?? i.slot.timeline, source: 'catalog-gap' }
    }
  }
  return { startLsn: candidate * seg, timeline: newest.tli, source: 'catalog' }
}
