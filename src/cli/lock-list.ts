// Printing repository locks for `pgkeep unlock` and `pgkeep info`: an aligned table for people, one object per
// lock for --json. Times are relative to the moment of listing (the states are judged by this host's clock).

import { formatLockAge, type LockStatus } from '../repo/index.js'

/** One lock as `--json` prints it. */
export function lockForJson(l: LockStatus, now = Date.now()) {
  const i = l.info
  return {
    key: l.key,
    state: l.state,
    kind: i?.kind ?? null,
    purpose: i?.purpose ?? null,
    host: i?.host ?? null,
    pid: i?.pid ?? null,
    session: i?.session ?? null,
    createdAt: i?.createdAt ?? null,
    refreshedAt: i?.refreshedAt ?? null,
    expiresAt: i?.expiresAt ?? null,
    ageMs: i ? l.ageMs : null,
    /** Negative once expired. */
    expiresInMs: i ? Date.parse(i.expiresAt) - now : null,
    description: l.description,
  }
}

/** The locks as table lines (header first), indented by `indent`; no lines for no locks. */
export function lockTable(locks: readonly LockStatus[], indent = '', now = Date.now()): string[] {
  if (locks.length === 0) return []
  const rows = locks.map((l) => {
    const i = l.info
    if (!i) return [l.state, '-', '-', '-', '-', '-', '-', l.key]
    const left = Date.parse(i.expiresAt) - now
    return [
      l.state,
      i.kind,
      i.purpose,
      i.host,
      String(i.pid),
      formatLockAge(l.ageMs),
      left >= 0 ? `in ${formatLockAge(left)}` : `${formatLockAge(-left)} ago`,
      l.key,
    ]
  })
  const header = ['STATE', 'KIND', 'HELD FOR', 'HOST', 'PID', 'AGE', 'EXPIRES', 'OBJECT']
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)))
  const line = (r: string[]) => indent + r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')
  return [line(header), ...rows.map(line)]
}
