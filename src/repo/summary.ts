// What a repository holds, per cluster: its backups and the WAL stored for each timeline as ranges, with gaps.
// Reads only record keys and backup records (small), never data.

import { formatLsn } from '../pg/lsn.js'
import { type BackupRecord, CLUSTER_RECORD_KIND, type ClusterRecord, listBackups } from './backup-record.js'
import { type DrillRecord, latestDrills } from './drill-record.js'
import type { Repository } from './repository.js'
import { readWalRecord, segmentKey, WAL_RECORD_KIND, type WalSegmentRecord } from './wal-catalog.js'

export interface WalRange {
  /** First LSN stored. */
  start: string
  /** End of the WAL stored (exclusive). */
  end: string
  segments: number
  /** The range ends in a partial segment (WAL that was still being written when it was stored). */
  endsPartial: boolean
  /**
   * When the newest record of the range was stored (ISO 8601, the storage's clock): no WAL in the range was written
   * by the server after this, so no commit in it is later.
   */
  storedAt: string
}

export interface TimelineWal {
  timeline: number
  ranges: WalRange[]
  /** Missing stretches between ranges: WAL recovery cannot cross. */
  gaps: { from: string; to: string }[]
  historyStored: boolean
}

export interface ClusterSummary {
  systemId: string
  name: string
  backups: BackupRecord[]
  wal: TimelineWal[]
  /** Restore drills (`pgkeep drill`): the newest, the newest that passed, and how many are recorded. */
  drills: { last: DrillRecord | null; lastPassed: DrillRecord | null; count: number }
}

export async function summarizeRepository(repo: Repository, o: { signal?: AbortSignal } = {}): Promise<ClusterSummary[]> {
  const systemIds = new Set<string>()
  for await (const r of repo.listRecords(CLUSTER_RECORD_KIND, '', o)) systemIds.add(r.key)
  for await (const r of repo.listRecords('wal', '', o)) systemIds.add(r.key.split('/')[0])
  const out: ClusterSummary[] = []
  for (const systemId of [...systemIds].sort()) {
    let name = systemId
    try {
      name = (await repo.readRecord<ClusterRecord>(CLUSTER_RECORD_KIND, systemId, o)).value.name
    } catch {
      // WAL pushed before any backup: the cluster has no record yet.
    }
    const backups = await listBackups(repo, systemId, o)
    const wal = await summarizeClusterWal(repo, systemId, backups[0]?.walSegmentSizeBytes, o)
    out.push({ systemId, name, backups, wal, drills: await latestDrills(repo, systemId, o) })
  }
  return out
}

/**
 * The WAL stored for one cluster, per timeline: the ranges recovery can read without a break, and the gaps between
 * them. `info` shows it, and restore checks a recovery target against it.
 * @param segmentSizeBytes the cluster's WAL segment size; read from a stored segment when undefined
 */
export async function summarizeClusterWal(
  repo: Repository,
  systemId: string,
  segmentSizeBytes: number | undefined,
  o: { signal?: AbortSignal } = {},
): Promise<TimelineWal[]> {
  const stored = new Map<string, number>()
  for await (const r of repo.listRecords(WAL_RECORD_KIND, `${systemId}/`, o)) stored.set(r.key.slice(systemId.length + 1), r.modifiedAt.getTime())
  if (stored.size === 0) return []
  const names = [...stored.keys()].sort()
  let segSize = segmentSizeBytes
  if (segSize === undefined) {
    const firstSegment = names.find((n) => /^[0-9A-F]{24}/.test(n))!
    const rec = await readWalRecord<WalSegmentRecord>(repo, segmentKey(systemId, firstSegment.split('.')[0]), o)
    segSize = rec?.segmentSizeBytes ?? 16 << 20
  }
  const perId = 0x1_0000_0000n / BigInt(segSize)
  // Per timeline: segment number → valid bytes (a complete segment wins over partial ones), and when its newest
  // record was stored.
  const timelines = new Map<number, { valid: Map<bigint, number>; storedAt: Map<bigint, number>; history: boolean }>()
  const tl = (t: number) => timelines.get(t) ?? timelines.set(t, { valid: new Map(), storedAt: new Map(), history: false }).get(t)!
  for (const n of names) {
    const h = /^([0-9A-F]{8})\.history$/.exec(n)
    if (h) {
      tl(parseInt(h[1], 16)).history = true
      continue
    }
    const m = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(?:\.partial\.([0-9A-F]{8}))?$/.exec(n)
    if (!m) continue
    const t = tl(parseInt(m[1], 16))
    const segno = BigInt('0x' + m[2]) * perId + BigInt('0x' + m[3])
    const valid = m[4] === undefined ? segSize : parseInt(m[4], 16)
    t.valid.set(segno, Math.max(t.valid.get(segno) ?? 0, valid))
    t.storedAt.set(segno, Math.max(t.storedAt.get(segno) ?? 0, stored.get(n)!))
  }
  const result: TimelineWal[] = []
  for (const [timeline, t] of [...timelines].sort((a, b) => a[0] - b[0])) {
    const segnos = [...t.valid.keys()].sort((a, b) => (a < b ? -1 : 1))
    const ranges: WalRange[] = []
    const gaps: TimelineWal['gaps'] = []
    let cur: { first: bigint; last: bigint; count: number; storedAt: number } | undefined
    const close = () => {
      if (!cur) return
      const lastValid = t.valid.get(cur.last)!
      ranges.push({
        start: formatLsn(cur.first * BigInt(segSize)),
        end: formatLsn(cur.last * BigInt(segSize) + BigInt(lastValid)),
        segments: cur.count,
        endsPartial: lastValid < segSize,
        storedAt: new Date(cur.storedAt).toISOString(),
      })
    }
    for (const s of segnos) {
      // A range continues only through complete segments.
      if (cur && s === cur.last + 1n && t.valid.get(cur.last) === segSize) {
        cur.last = s
        cur.count++
        cur.storedAt = Math.max(cur.storedAt, t.storedAt.get(s)!)
      } else {
        if (cur) gaps.push({ from: formatLsn(cur.last * BigInt(segSize) + BigInt(t.valid.get(cur.last)!)), to: formatLsn(s * BigInt(segSize)) })
        close()
        cur = { first: s, last: s, count: 1, storedAt: t.storedAt.get(s)! }
      }
    }
    close()
    result.push({ timeline, ranges, gaps, historyStored: t.history })
  }
  return result
}
