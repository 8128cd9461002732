// WalQueue: the bounded hand-over between the socket loop and the storing loop of `wal stream`.

import { describe, expect, it } from 'vitest'
import { WalQueue } from '../../src/wal/wal-queue.js'

const chunk = (at: number, n: number) => ({ walStart: BigInt(at), data: Buffer.alloc(n, at & 0xff) })
const tick = () => new Promise((r) => setImmediate(r))

describe('WalQueue', () => {
  it('hands every chunk over in order and ends after close', async () => {
    const q = new WalQueue(1000)
    await q.push(chunk(0, 10))
    await q.push(chunk(10, 20))
    expect(q.sizeBytes).toBe(30)
    const batch = await q.takeAll()
    expect(batch!.chunks.map((c) => c.walStart)).toEqual([0n, 10n])
    expect(batch!.flushRequested).toBe(false)
    expect(q.sizeBytes).toBe(0)
    await q.push(chunk(30, 5))
    q.close()
    expect((await q.takeAll())!.chunks.map((c) => c.walStart)).toEqual([30n])
    expect(await q.takeAll()).toBeUndefined()
  })

  it('makes the producer wait while full, and lets it go once the consumer takes', async () => {
    const q = new WalQueue(100)
    await q.push(chunk(0, 60))
    let second = false
    const p = q.push(chunk(60, 60)).then(() => (second = true))
    await tick()
    expect(second).toBe(false) // 120 bytes would exceed the bound
    expect((await q.takeAll())!.chunks.length).toBe(1)
    await p
    expect(second).toBe(true)
  })

  it('accepts one chunk larger than the bound when empty (a 128 KiB message must always fit)', async () => {
    const q = new WalQueue(10)
    await q.push(chunk(0, 1000))
    expect(q.sizeBytes).toBe(1000)
  })

  it('wakes the consumer for a flush request even when nothing is queued, once', async () => {
    const q = new WalQueue(10)
    const taken = q.takeAll()
    await tick()
    q.requestFlush()
    expect(await taken).toEqual({ chunks: [], flushRequested: true })
    await q.push(chunk(0, 1))
    expect((await q.takeAll())!.flushRequested).toBe(false)
  })

  it('wakes a waiting consumer on push and a waiting producer on close', async () => {
    const q = new WalQueue(10)
    const taken = q.takeAll()
    await tick()
    await q.push(chunk(0, 5))
    expect((await taken)!.chunks.length).toBe(1)
    await q.push(chunk(5, 10))
    const blocked = q.push(chunk(15, 10))
    q.close()
    expect(await blocked).toBe(false)
  })
})
