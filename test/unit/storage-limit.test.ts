// The concurrency-limit decorator against an in-memory stub of OUR Storage interface whose operations block
// until released: the number in flight never exceeds the limit, reads hold their slot until they end or are
// returned, listings do not hold one between entries, waiting honours aborts, waiters are served in order.

import { describe, expect, it } from 'vitest'

import { withConcurrencyLimit } from '../../src/storage/limit.js'
import type { Body, ObjectInfo, OpOptions, ReadOptions, Storage } from '../../src/storage/storage.js'

/** A Storage whose stat/write/remove wait on a gate, counting how many run at once. */
class GatedStorage implements Storage {
  readonly name = 'gated'
  readonly features = { fsync: false, conditionalWrite: false, remote: false }
  inFlight = 0
  peak = 0
  started: string[] = []
  private gates: (() => void)[] = []

  /** Lets every operation currently waiting finish. */
  openGates(): void {
    const g = this.gates
    this.gates = []
    for (const f of g) f()
  }

  private async op(label: string): Promise<void> {
    this.started.push(label)
    this.inFlight++
    this.peak = Math.max(this.peak, this.inFlight)
    await new Promise<void>((r) => this.gates.push(r))
    this.inFlight--
  }

  async stat(key: string, _o?: OpOptions): Promise<ObjectInfo | undefined> {
    await this.op(`stat ${key}`)
    return undefined
  }

  async write(key: string, _b: Body): Promise<void> {
    await this.op(`write ${key}`)
  }

  async remove(key: string): Promise<void> {
    await this.op(`remove ${key}`)
  }

  async *read(key: string, _o?: ReadOptions): AsyncGenerator<Uint8Array> {
    this.started.push(`read ${key}`)
    this.inFlight++
    this.peak = Math.max(this.peak, this.inFlight)
    try {
      for (let i = 0; i < 3; i++) yield new Uint8Array([i])
    } finally {
      this.inFlight--
    }
  }

  async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    for (let i = 0; i < 3; i++) yield { key: `${prefix}${i}`, sizeBytes: 1, modifiedAt: new Date(0) }
  }

  async close(): Promise<void> {}
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r))

describe('withConcurrencyLimit', () => {
  it('never runs more than maxConcurrent operations at once', async () => {
    const inner = new GatedStorage()
    const s = withConcurrencyLimit(inner, { maxConcurrent: 3 })
    const all = Array.from({ length: 20 }, (_, i) => (i % 3 === 0 ? s.stat(`k${i}`) : i % 3 === 1 ? s.write(`k${i}`, new Uint8Array(1)) : s.remove(`k${i}`)))
    for (let round = 0; round < 20; round++) {
      await tick()
      expect(inner.inFlight).toBeLessThanOrEqual(3)
      inner.openGates()
    }
    await Promise.all(all)
    expect(inner.peak).toBe(3)
    expect(inner.started.length).toBe(20)
  })

  it('serves waiters in arrival order', async () => {
    const inner = new GatedStorage()
    const s = withConcurrencyLimit(inner, { maxConcurrent: 1 })
    const all = ['a', 'b', 'c', 'd'].map((k) => s.stat(k))
    for (let i = 0; i < 4; i++) {
      await tick()
      inner.openGates()
    }
    await Promise.all(all)
    expect(inner.started).toEqual(['stat a', 'stat b', 'stat c', 'stat d'])
  })

  it('holds a slot for a read until it finishes or is returned', async () => {
    const inner = new GatedStorage()
    const s = withConcurrencyLimit(inner, { maxConcurrent: 1 })
    const it1 = s.read('r')[Symbol.asyncIterator]()
    expect((await it1.next()).value).toEqual(new Uint8Array([0]))
    const waiting = s.stat('after-read')
    await tick()
    expect(inner.started).toEqual(['read r'])
    await it1.return?.(undefined)
    await tick()
    expect(inner.started).toEqual(['read r', 'stat after-read'])
    inner.openGates()
    await waiting

    // A read consumed to its end releases too.
    const chunks: Uint8Array[] = []
    for await (const c of s.read('r2')) chunks.push(c)
    expect(chunks.length).toBe(3)
    const next = s.stat('after-r2')
    await tick()
    inner.openGates()
    await next
    expect(inner.started.at(-1)).toBe('stat after-r2')
  })

  it('does not hold a slot between listed entries, so callers may act on each entry', async () => {
    const inner = new GatedStorage()
    const s = withConcurrencyLimit(inner, { maxConcurrent: 1 })
    const seen: string[] = []
    for await (const i of s.list('p/')) {
      const p = s.remove(i.key)
      await tick()
      inner.openGates()
      await p
      seen.push(i.key)
    }
    expect(seen).toEqual(['p/0', 'p/1', 'p/2'])
  })

  it('rejects a waiting call with the abort reason and gives its place away', async () => {
    const inner = new GatedStorage()
    const s = withConcurrencyLimit(inner, { maxConcurrent: 1 })
    const first = s.stat('first')
    const ac = new AbortController()
    const reason = new Error('gave up')
    const aborted = s.stat('aborted', { signal: ac.signal })
    const third = s.stat('third')
    ac.abort(reason)
    await expect(aborted).rejects.toBe(reason)
    await tick()
    inner.openGates()
    await first
    await tick()
    inner.openGates()
    await third
    expect(inner.started).toEqual(['stat first', 'stat third'])
  })

  it('refuses a limit below 1', () => {
    expect(() => withConcurrencyLimit(new GatedStorage(), { maxConcurrent: 0 })).toThrow(RangeError)
  })
})
