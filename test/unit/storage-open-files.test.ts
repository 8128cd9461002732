// Range reads of immutable objects (packs) through the directory driver keep files open between reads
// (src/storage/open-files.ts): the bytes are the same as a plain read's, a missing object is still NotFoundError,
// and the driver holds no more than its bound of descriptors, none once idle.

import { readdirSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Codes } from '../../src/errors.js'
import { openFsStorage } from '../../src/storage/fs.js'
import type { Storage } from '../../src/storage/storage.js'

const openDescriptors = () => readdirSync('/proc/self/fd').length

async function readAll(storage: Storage, key: string, o: { offset?: number; length?: number; immutable?: boolean }): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const c of storage.read(key, o)) parts.push(c)
  return Buffer.concat(parts)
}

describe('immutable reads of the directory driver', () => {
  let root: string
  let storage: Storage
  const objects = new Map<string, Buffer>()
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'pgkeep-open-files-'))
    storage = await openFsStorage(root, { fsync: false })
    for (let i = 0; i < 40; i++) {
      const bytes = Buffer.alloc(10_000 + i, i)
      for (let k = 0; k < bytes.length; k += 7) bytes[k] = (k * 31 + i) & 0xff
      objects.set(`packs/p${i}`, bytes)
      await storage.write(`packs/p${i}`, bytes)
    }
  })
  afterAll(async () => {
    if (root) await rm(root, { recursive: true, force: true })
  })

  it('reads the same bytes as a plain read, ranges and past the end included', async () => {
    for (const [key, bytes] of objects) {
      for (const [offset, length] of [
        [0, undefined],
        [5, 100],
        [bytes.length - 3, 50],
        [bytes.length + 10, 5],
      ] as const) {
        const plain = await readAll(storage, key, { offset, length })
        expect(plain.equals(bytes.subarray(offset, length === undefined ? undefined : offset + length))).toBe(true)
        expect((await readAll(storage, key, { offset, length, immutable: true })).equals(plain), `${key} ${offset}+${length}`).toBe(true)
      }
    }
  })

  it('still names a missing object NotFoundError, and does not keep the failure', async () => {
    await expect(readAll(storage, 'packs/missing', { immutable: true })).rejects.toMatchObject({ code: Codes.NOT_FOUND })
    const late = Buffer.from('written after the first attempt')
    await storage.write('packs/missing', late)
    expect((await readAll(storage, 'packs/missing', { immutable: true })).equals(late)).toBe(true)
  })

  it('keeps at most 32 files open while reading many, and none once idle', async () => {
    // What the reads above kept open closes once idle: that is the baseline.
    await new Promise((r) => setTimeout(r, 2_500))
    const before = openDescriptors()
    for (let round = 0; round < 3; round++) for (const key of objects.keys()) await readAll(storage, key, { offset: 1, length: 10, immutable: true })
    expect(openDescriptors() - before).toBeLessThanOrEqual(32)
    expect(openDescriptors() - before).toBeGreaterThan(0)
    await new Promise((r) => setTimeout(r, 2_500))
    expect(openDescriptors()).toBeLessThanOrEqual(before)
  }, 15_000)
})
