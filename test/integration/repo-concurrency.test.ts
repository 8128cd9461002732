// Two processes writing overlapping content into one repository at the same time. Each deduplicates against what
// it has seen, so a blob new to both can be stored by both (restic has the same property); the repository must
// still verify, every blob must read back, and the merged index must resolve each id to exactly one location
// (chosen the same way whatever order index objects load in).

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { initRepository, openRepository, verifyRepository } from '../../src/repo/index.js'
import { blobContent, compileForChildren, openSpec, sha256Hex, startChild, startStorageFactory, type StorageFactory } from '../harness/repo-fixtures.js'

let compiled: { dir: string; remove: () => void }
beforeAll(() => {
  compiled = compileForChildren()
})
afterAll(() => compiled?.remove())

describe.each(['fs', 's3'] as const)('two concurrent writers on %s', (driver) => {
  let factory: StorageFactory
  beforeAll(async () => {
    factory = await startStorageFactory(driver)
  })
  afterAll(async () => {
    await factory?.stop()
  })

  it('leave a sound repository where every blob reads back and resolves to one location', async () => {
    const spec = factory.spec()
    const storage = await openSpec(spec)
    await (await initRepository(storage, { packTargetBytes: 128 * 1024, compression: { level: 1 } })).close()

    // Both write seed 4 (identical content, same order); the first also writes seed 5 afterwards.
    const a = startChild(compiled.dir, 'writer', { spec, seed: 4, count: 60, flushEvery: 4 })
    const b = startChild(compiled.dir, 'writer', { spec, seed: 4, count: 60, flushEvery: 7 })
    for (const c of [a, b]) {
      const exit = await c.exited
      expect(exit.code, exit.stderr).toBe(0)
    }
    const c = startChild(compiled.dir, 'writer', { spec, seed: 5, count: 20, flushEvery: 5 })
    expect((await c.exited).code).toBe(0)

    const ids = new Map<string, Buffer>()
    for (const [child, seed] of [
      [a, 4],
      [b, 4],
      [c, 5],
    ] as const) {
      for (const line of child.lines.filter((l) => l.startsWith('COMMITTED '))) {
        for (const pair of line.slice(10).split(' ')) {
          const [i, id] = pair.split(':')
          ids.set(id!, blobContent(seed, Number(i)))
        }
      }
    }
    expect(ids.size).toBe(80)

    const repo = await openRepository(await openSpec(spec))
    const result = await verifyRepository(repo, { readData: true })
    expect(result.problems).toEqual([])
    // One index entry per distinct blob; copies stored by both writers are counted, not exposed.
    expect(repo.indexStats.blobs).toBe(80)
    expect(result.stats.indexedBlobs).toBe(80)
    console.log(`${driver}: ${result.stats.duplicateBlobs} of 60 shared blobs were stored by both writers`)
    for (const [id, content] of ids) {
      expect(id).toBe(sha256Hex(content))
      expect((await repo.readBlob(id)).equals(content)).toBe(true)
    }
    // A second instance (index objects listed in another order, perhaps) picks the same location for every id.
    const other = await openRepository(await openSpec(spec))
    for (const id of ids.keys()) expect(other.locateBlob(id)).toEqual(repo.locateBlob(id))
    await repo.close()
    await other.close()
    await storage.close()
  })
})
