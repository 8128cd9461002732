import { describe, expect, it } from 'vitest'
import type { FileEntry } from '../../src/repo/index.js'
import type { FileTask } from '../../src/restore/file-restorer.js'
import { FileTasks, LOOKAHEAD_BYTES, LOOKAHEAD_ENTRIES } from '../../src/restore/restore-files.js'

const file = (i: number, sizeBytes = 8192): FileEntry => ({
  path: `base/5/${String(i).padStart(6, '0')}`,
  type: 'file',
  mode: 0o600,
  mtime: 0,
  sizeBytes,
  extents: [{ offset: 0, length: sizeBytes, blob: 'ab'.repeat(32), blobOffset: 0 }],
})

/** The chunks as a file list's reader yields them, and whether the generator was closed. */
function chunksOf(sizes: number[], entry = (i: number) => file(i)) {
  const state = { closed: false, taken: 0 }
  let n = 0
  const gen = (async function* () {
    try {
      for (const size of sizes) {
        const chunk = Array.from({ length: size }, () => entry(n++))
        state.taken += size
        yield chunk
      }
    } finally {
      state.closed = true
    }
  })()
  return { iterator: gen[Symbol.asyncIterator](), state }
}

const asTask = (e: FileEntry): FileTask => ({ kind: 'file', entry: e })

describe("restore's file tasks", () => {
  it('hands out every entry in order, across chunks (empty ones too), fetching ahead at most LOOKAHEAD_ENTRIES', async () => {
    const { iterator } = chunksOf([300, 0, 700, 5])
    const prefetched: string[] = []
    const tasks = new FileTasks(iterator, (e) => prefetched.push(e.path), asTask)
    const out: string[] = []
    let maxAhead = 0
    for (let r = await tasks.next(); !r.done; r = await tasks.next()) {
      if (r.value.kind !== 'file') throw new Error('a piece from the source')
      out.push(r.value.entry.path)
      maxAhead = Math.max(maxAhead, prefetched.length - out.length)
      expect(prefetched.length, 'an entry is fetched ahead before it is handed out').toBeGreaterThanOrEqual(out.length)
    }
    expect(out).toEqual(Array.from({ length: 1005 }, (_, i) => file(i).path))
    expect(prefetched).toEqual(out)
    expect(maxAhead).toBe(LOOKAHEAD_ENTRIES - 1)
    // Refilled when half are taken, not for every entry.
    expect(maxAhead).toBeGreaterThan(LOOKAHEAD_ENTRIES / 2)
  })

  it('fetches ahead no more than LOOKAHEAD_BYTES of small files', async () => {
    const size = 256 << 10
    const { iterator } = chunksOf([100], (i) => file(i, size))
    let prefetched = 0
    const tasks = new FileTasks(iterator, () => prefetched++, asTask)
    await tasks.next()
    expect(prefetched).toBe(LOOKAHEAD_BYTES / size)
  })

  it('skips entries without a task and waits for the work of those done on the spot before the next', async () => {
    const { iterator } = chunksOf([6])
    const events: string[] = []
    const tasks = new FileTasks(
      iterator,
      () => {},
      (e) => {
        const i = Number(e.path.slice(-1))
        if (i % 3 === 1) return undefined
        if (i % 3 === 2) {
          return new Promise<void>((resolve) =>
            setTimeout(() => {
              events.push(`made ${i}`)
              resolve()
            }, 5),
          )
        }
        return asTask(e)
      },
    )
    for (let r = await tasks.next(); !r.done; r = await tasks.next()) if (r.value.kind === 'file') events.push(`task ${r.value.entry.path.slice(-1)}`)
    expect(events).toEqual(['task 0', 'made 2', 'task 3', 'made 5'])
  })

  it('closes the list when the pool stops early', async () => {
    const { iterator, state } = chunksOf([600, 600, 600])
    const tasks = new FileTasks(iterator, () => {}, asTask)
    await tasks.next()
    expect(state.closed).toBe(false)
    expect(await tasks.return()).toEqual({ value: undefined, done: true })
    expect(state.closed).toBe(true)
    expect(state.taken).toBeLessThan(1800)
    expect((await tasks.next()).done).toBe(true)
  })
})
