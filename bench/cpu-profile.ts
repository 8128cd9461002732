// Where a profiled command spent its time: reads the .cpuprofile files `node --cpu-prof` wrote into a directory
// (one per process and thread) and sums self time per function, separating idle time (waiting for I/O, the
// server or other threads) from time on the CPU.

import { readdir, readFile } from 'node:fs/promises'
import { basename, join } from 'node:path'

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[]
  startTime: number
  endTime: number
  samples: number[]
  timeDeltas: number[]
}

/** Self time per function over every .cpuprofile in `dir`, as markdown lines: the `top` busiest functions. */
export async function summarizeCpuProfiles(dir: string, top = 12): Promise<string> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'))
  const selfUs = new Map<string, number>()
  let profiledUs = 0
  for (const file of files) {
    const p = JSON.parse(await readFile(join(dir, file), 'utf8')) as CpuProfile
    profiledUs += p.endTime - p.startTime
    const byId = new Map(p.nodes.map((n) => [n.id, n.callFrame]))
    // Sample i lasted until the next one: timeDeltas[i + 1] µs.
    for (let i = 0; i < p.samples.length; i++) {
      const f = byId.get(p.samples[i]!)!
      const where = f.url ? ` ${basename(f.url)}:${f.lineNumber + 1}` : ''
      const key = `${f.functionName || '(anonymous)'}${where}`
      selfUs.set(key, (selfUs.get(key) ?? 0) + (p.timeDeltas[i + 1] ?? 0))
    }
  }
  const idleUs = selfUs.get('(idle)') ?? 0
  const cpuUs = [...selfUs.values()].reduce((a, b) => a + b, 0) - idleUs
  const lines = [
    `${files.length} profile(s), ${(profiledUs / 1e6).toFixed(2)} s profiled in all: ${(cpuUs / 1e6).toFixed(2)} s on the CPU, ` +
      `${(idleUs / 1e6).toFixed(2)} s idle (waiting for I/O, the server or other threads)`,
    '',
    '| self time | share of CPU | function |',
    '| ---: | ---: | --- |',
  ]
  const busiest = [...selfUs]
    .filter(([k]) => k !== '(idle)')
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
  for (const [key, us] of busiest) lines.push(`| ${(us / 1000).toFixed(0)} ms | ${((100 * us) / Math.max(1, cpuUs)).toFixed(1)}% | \`${key}\` |`)
  return lines.join('\n') + '\n'
}
