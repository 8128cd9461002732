// Measuring a child process: wall time, user and system CPU and peak RSS through /usr/bin/time, and medians.

import { type SpawnOptions, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'

export interface Measured {
  ms: number
  userS: number | null
  sysS: number | null
  /** Peak resident set size of the child, kB (null when /usr/bin/time is missing). */
  maxRssKb: number | null
  stdout: string
  /** Its standard error (with /usr/bin/time's line at the end): a server's log, say. */
  stderr: string
}

const TIME = '/usr/bin/time'

/**
 * Runs a command to completion and measures it; rejects with its stderr when it fails. `as` runs it as another
 * user (a PostgreSQL server, which refuses to run as root).
 */
export function measure(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, as: Pick<SpawnOptions, 'uid' | 'gid'> = {}): Promise<Measured> {
  const haveTime = existsSync(TIME)
  const t0 = performance.now()
  return new Promise((resolve, reject) => {
    const child = haveTime
      ? spawn(TIME, ['-f', 'PGKEEP-TIME %e %U %S %M', cmd, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'], ...as })
      : spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'], ...as })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => {
      const ms = performance.now() - t0
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.slice(-2000)}`))
      const m = /PGKEEP-TIME ([\d.]+) ([\d.]+) ([\d.]+) (\d+)/.exec(stderr)
      resolve({ ms, userS: m ? Number(m[2]) : null, sysS: m ? Number(m[3]) : null, maxRssKb: m ? Number(m[4]) : null, stdout, stderr })
    })
  })
}

/** The median: the middle value, or the mean of the two middle values of an even count (NaN when empty). */
export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length === 0 ? Number.NaN : s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** A markdown table of medians per variant, with the ratio to `reference`. */
export function table(rows: Record<string, Measured[]>, reference: string): string {
  const ref = median(rows[reference].map((r) => r.ms))
  const lines = ['| variant | wall (median) | ratio | user CPU | sys CPU | peak RSS | runs |', '| --- | --- | --- | --- | --- | --- | --- |']
  for (const [name, ms] of Object.entries(rows)) {
    if (ms.length === 0) continue
    const wall = median(ms.map((r) => r.ms))
    const rss = ms.every((r) => r.maxRssKb !== null) ? `${(median(ms.map((r) => r.maxRssKb!)) / 1024).toFixed(0)} MB` : 'n/a'
    const user = ms.every((r) => r.userS !== null) ? `${median(ms.map((r) => r.userS!)).toFixed(2)} s` : 'n/a'
    const sys = ms.every((r) => r.sysS !== null) ? `${median(ms.map((r) => r.sysS!)).toFixed(2)} s` : 'n/a'
    lines.push(
      `| ${name} | ${(wall / 1000).toFixed(2)} s | ${(wall / ref).toFixed(2)} | ${user} | ${sys} | ${rss} | ${ms.map((r) => (r.ms / 1000).toFixed(2)).join(' ')} |`,
    )
  }
  return lines.join('\n')
}
