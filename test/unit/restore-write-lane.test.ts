// WriteLane (src/restore/file-io.ts): the writes of one file reach it one at a time, in the order given; a write
// that fails is reported to its own caller and does not stop the writes after it.

import { describe, expect, it } from 'vitest'
import { WriteLane } from '../../src/restore/file-io.js'

describe('WriteLane', () => {
  it('runs writes one at a time in order; a failure reaches its caller only', async () => {
    const lane = new WriteLane()
    const log: string[] = []
    let running = 0
    let most = 0
    const write = (name: string, ms: number, fail = false) =>
      lane.run(async () => {
        running++
        most = Math.max(most, running)
        log.push(`start ${name}`)
        await new Promise((resolve) => setTimeout(resolve, ms))
        log.push(`end ${name}`)
        running--
        if (fail) throw new Error(`${name} failed`)
        return name
      })
    const results = await Promise.allSettled([write('a', 20), write('b', 1, true), write('c', 5), write('d', 1)])
    expect(most).toBe(1)
    expect(log).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c', 'start d', 'end d'])
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message))).toEqual(['a', 'b failed', 'c', 'd'])
  })
})
