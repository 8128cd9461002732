import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import type { PackEntry } from '../../src/repo/pack-format.js'
import { PendingBlobs } from '../../src/repo/pending-blobs.js'

const idOf = (n: number) => createHash('sha256').update(`blob ${n}`).digest()

/** An entry of blob n at `offset`, with lengths that name it. */
const entryOf = (n: number, offset: number): PackEntry => ({ id: idOf(n), type: 'data', flags: n % 2, offset, storedLength: 100 + n, plainLength: 200 + n })

describe('pending blobs (a session’s blobs not indexed yet)', () => {
  it('finds every blob of several packs through building, sealing, upload and indexing, and forgets a pack as a whole', () => {
    const pending = new PendingBlobs()
    const a = pending.start()
    const b = pending.start()
    const bytesA = Buffer.alloc(16)
    const grownA = Buffer.alloc(32)
    const bytesB = Buffer.alloc(8)
    // More than one BlobIndex's initial capacity (1,024) in pack a, so its table grows while blobs are pending.
    for (let n = 0; n < 3000; n++) pending.add(a, entryOf(n, n * 10), n < 2000 ? bytesA : grownA)
    for (let n = 3000; n < 3100; n++) pending.add(b, entryOf(n, n), bytesB)

    for (const n of [0, 1999, 2999, 3000, 3099]) expect(pending.has(idOf(n))).toBe(true)
    expect(pending.has(idOf(3100))).toBe(false)
    expect(pending.get(idOf(3100))).toBeUndefined()
    // While building, a blob is read from the builder's latest buffer (it may have grown), at its own offset.
    const early = pending.get(idOf(7))!
    expect(early.bytes).toBe(grownA)
    expect(early.entry).toMatchObject({ type: 'data', flags: 1, offset: 70, storedLength: 107, plainLength: 207 })

    const sealedA = Buffer.alloc(64)
    pending.sealed(a, 'pa', sealedA)
    pending.sealed(b, 'pb', bytesB)
    expect(pending.get(idOf(7))!.bytes).toBe(sealedA)
    expect(pending.get(idOf(7))!.entry.packId).toBe('pa')

    // Durable: no bytes any more, the pack names where the blob is.
    pending.durable('pa')
    const durable = pending.get(idOf(2500))!
    expect(durable.bytes).toBeUndefined()
    expect(durable.entry).toEqual({ packId: 'pa', type: 'data', flags: 0, offset: 25_000, storedLength: 2600, plainLength: 2700 })
    expect(pending.get(idOf(3050))!.bytes).toBe(bytesB)

    // Indexed: the pack's blobs leave together; the other pack's stay.
    pending.indexed('pa')
    for (const n of [0, 1999, 2999]) expect(pending.has(idOf(n))).toBe(false)
    for (const n of [3000, 3099]) expect(pending.has(idOf(n))).toBe(true)
    pending.durable('pb')
    pending.indexed('pb')
    expect(pending.has(idOf(3000))).toBe(false)
  })

  it('leaves other packs alone when told about a pack it does not track', () => {
    const pending = new PendingBlobs()
    const a = pending.start()
    pending.add(a, entryOf(1, 0), Buffer.alloc(4))
    pending.sealed(a, 'pa', Buffer.alloc(4))
    pending.durable('other')
    pending.indexed('other')
    expect(pending.get(idOf(1))!.bytes).toBeDefined()
    expect(pending.has(idOf(1))).toBe(true)
  })
})
