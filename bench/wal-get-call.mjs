// Per-call cost of `pgkeep wal get` for a segment the prefetch daemon already spooled: one process per call, as
// restore_command runs it. Compares entry points (e.g. this tree's bin/pgkeep.js against an older build) with
// `cp` and `node -e ''` in the same run, alternating, and prints medians. Before each timed call it waits until
// the daemon has the segment in its spool, so the time is the call's own (start, ask, check, rename), not a fetch.
//
//   node bench/wal-get-call.mjs --repo DIR --archive DIR --segments FILE [--runs 4] [--calls 20] [--bin NAME=PATH]...
// DIR of --archive holds the same segments as plain files (for cp); FILE lists their names, one a line.

import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: {
    repo: { type: 'string' },
    archive: { type: 'string' },
    segments: { type: 'string' },
    runs: { type: 'string', default: '4' },
    calls: { type: 'string', default: '20' },
    bin: { type: 'string', multiple: true, default: [`this=${join(import.meta.dirname, '..', 'bin', 'pgkeep.js')}`] },
  },
})
if (!values.repo || !values.archive || !values.segments) throw new Error('give --repo, --archive and --segments')
const segs = readFileSync(values.segments, 'utf8').split('\n').filter(Boolean)
const calls = Math.min(Number(values.calls), segs.length)
const bins = values.bin.map((b) => b.split('='))
const times = new Map()
const add = (k, ms) => times.set(k, [...(times.get(k) ?? []), ms])
const timed = (file, args) => {
  const t = process.hrtime.bigint()
  const r = spawnSync(file, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  const ms = Number(process.hrtime.bigint() - t) / 1e6
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')}: exit ${r.status}: ${r.stderr}`)
  return ms
}
const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)

function stopDaemon(spool) {
  let pid
  try {
    pid = JSON.parse(readFileSync(join(spool, 'daemon.json'), 'utf8')).pid
  } catch {
    return
  }
  try {
    process.kill(pid, 'SIGTERM')
  } catch {
    return
  }
  for (let i = 0; i < 200 && existsSync(`/proc/${pid}`) && !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); i++) sleep(50)
}

for (let run = 0; run < Number(values.runs); run++) {
  const order = run % 2 === 0 ? bins : [...bins].reverse()
  for (const [name, bin] of order) {
    const dest = join(tmpdir(), `pgkeep-wal-get-call-${process.pid}-${name}`)
    rmSync(dest, { recursive: true, force: true })
    mkdirSync(dest)
    const spool = join(dest, '.pgkeep-prefetch')
    try {
      add(`${name} (first call: starts the daemon)`, timed(process.execPath, [bin, 'wal', 'get', '--repo', values.repo, segs[0], join(dest, segs[0])]))
      for (let i = 1; i < calls; i++) {
        for (let w = 0; w < 400 && !existsSync(join(spool, segs[i])); w++) sleep(25)
        add(`${name} (prefetched segment)`, timed(process.execPath, [bin, 'wal', 'get', '--repo', values.repo, segs[i], join(dest, segs[i])]))
        add('cp', timed('cp', [join(values.archive, segs[i]), join(dest, `${segs[i]}.cp`)]))
        add("node -e ''", timed(process.execPath, ['-e', '']))
      }
    } finally {
      stopDaemon(spool)
      rmSync(dest, { recursive: true, force: true })
    }
  }
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
for (const [k, xs] of times) console.log(`${k.padEnd(44)} median ${median(xs).toFixed(1)} ms over ${xs.length} calls`)
