// The retry decorator against a small in-memory stub of OUR Storage interface that fails on command: retryable
// failures are retried with the body replayed byte for byte, others are not, aborts stop waiting, reads resume
// at the byte they reached, listings retry only before their first entry.

import { createHash, randomBytes } from 'node:crypto'

import { describe, expect, it } from 'vitest'

import { AlreadyExistsError, NotFoundError, StorageError } from '../../src/errors.js'
import { withRetry, type RetryEvent } from '../../src/storage/retry.js'
import type { Body, ObjectInfo, OpOptions, ReadOptions, Storage, WriteOptions } from '../../src/storage/storage.js'

type Op = 'stat' | 'read' | 'write' | 'list' | 'remove'

/** An in-memory Storage that throws the queued errors, one per call, before doing the real work. */
class FlakyStorage implements Storage {
  readonly name = 'flaky'
  readonly features = { fsync: false, conditionalWrite: true, remote: false }
  readonly objects = new Map<string, Buffer>()
  readonly calls: { op: Op; key: string; offset?: number; length?: number }[] = []
  /** Bytes each write attempt received from its body. */
  readonly writeBodies: Buffer[] = []
  /** Errors to throw, per operation, one per call (before any work). */
  readonly failBefore: Record<Op, unknown[]> = { stat: [], read: [], write: [], list: [], remove: [] }
  /** For writes: errors thrown after the object was stored (its answer lost), one per call. */
  readonly failAfterWrite: unknown[] = []
  /** For reads and lists: fail after this many chunks/entries, one entry per call (undefined = do not). */
  readonly failAfter: { items: number; error: unknown }[] = []
  readsReturned = 0

  private before(op: Op): void {
    const e = this.failBefore[op].shift()
    if (e !== undefined) throw e
  }

  async stat(key: string, _o?: OpOptions): Promise<ObjectInfo | undefined> {
    this.calls.push({ op: 'stat', key })
    this.before('stat')
    const b = this.objects.get(key)
    return b === undefined ? undefined : { key, sizeBytes: b.byteLength, modifiedAt: new Date(0) }
  }

  async *read(key: string, o: ReadOptions = {}): AsyncGenerator<Uint8Array> {
    this.calls.push({ op: 'read', key, offset: o.offset, length: o.length })
    const after = this.failAfter.shift()
    let finished = false
    try {
      this.before('read')
      const b = this.objects.get(key)
      if (b === undefined) throw new NotFoundError(`object '${key}' not found`)
      const start = o.offset ?? 0
      const end = o.length === undefined ? b.byteLength : Math.min(b.byteLength, start + o.length)
      let n = 0
      for (let pos = start; pos < end; pos += 1000) {
        if (after !== undefined && n === after.items) throw after.error
        yield b.subarray(pos, Math.min(end, pos + 1000))
        n++
      }
      finished = true
    } finally {
      if (!finished) this.readsReturned++
    }
  }

  async write(key: string, body: Body, o?: WriteOptions): Promise<void> {
    this.calls.push({ op: 'write', key })
    const parts: Uint8Array[] = []
    if (body instanceof Uint8Array) parts.push(body)
    else for await (const c of body()) parts.push(c)
    this.writeBodies.push(Buffer.concat(parts))
    this.before('write')
    if (o?.ifAbsent === true && this.objects.has(key)) throw new AlreadyExistsError(`object '${key}' already exists`)
    this.objects.set(key, Buffer.concat(parts))
    const lost = this.failAfterWrite.shift()
    if (lost !== undefined) throw lost
  }

  async *list(prefix: string, _o?: OpOptions): AsyncGenerator<ObjectInfo> {
    this.calls.push({ op: 'list', key: prefix })
    this.before('list')
    const after = this.failAfter.shift()
    let n = 0
    for (const [key, b] of this.objects) {
      if (!key.startsWith(prefix)) continue
      if (after !== undefined && n === after.items) throw after.error
      yield { key, sizeBytes: b.byteLength, modifiedAt: new Date(0) }
      n++
    }
  }

  async remove(key: string, _o?: OpOptions): Promise<void> {
    this.calls.push({ op: 'remove', key })
    this.before('remove')
    this.objects.delete(key)
  }

  async close(): Promise<void> {}
}

const transient = (): StorageError => new StorageError('connection reset', { retryable: true })
const fast = { attempts: 4, baseDelayMs: 2, maxDelayMs: 10 }
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

async function readAll(s: Storage, key: string, o: ReadOptions = {}): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const c of s.read(key, o)) parts.push(c)
  return Buffer.concat(parts)
}

describe('withRetry', () => {
  it('retries retryable write failures and replays the body identically (bytes and factory)', async () => {
    const data = randomBytes(10_000)
    const bodies: [string, Body][] = [
      ['bytes', data],
      [
        'factory',
        async function* () {
          for (let i = 0; i < data.byteLength; i += 999) yield data.subarray(i, i + 999)
        },
      ],
    ]
    for (const [name, body] of bodies) {
      const inner = new FlakyStorage()
      inner.failBefore.write.push(transient(), transient())
      const events: RetryEvent[] = []
      const s = withRetry(inner, { attempts: 3, baseDelayMs: 4, maxDelayMs: 100, onRetry: (e) => events.push(e) })
      await s.write('k', body)
      expect(inner.writeBodies.length, name).toBe(3)
      for (const b of inner.writeBodies) expect(sha(b), name).toBe(sha(data))
      expect(sha(inner.objects.get('k') ?? Buffer.alloc(0)), name).toBe(sha(data))
      expect(
        events.map((e) => [e.op, e.key, e.attempt]),
        name,
      ).toEqual([
        ['write', 'k', 1],
        ['write', 'k', 2],
      ])
      // Equal jitter: between half and all of base × 2^(attempt-1).
      expect(events[0]?.delayMs).toBeGreaterThanOrEqual(2)
      expect(events[0]?.delayMs).toBeLessThanOrEqual(4)
      expect(events[1]?.delayMs).toBeGreaterThanOrEqual(4)
      expect(events[1]?.delayMs).toBeLessThanOrEqual(8)
    }
  })

  it('caps delays at maxDelayMs', async () => {
    const inner = new FlakyStorage()
    inner.failBefore.stat.push(transient(), transient(), transient())
    const events: RetryEvent[] = []
    const s = withRetry(inner, { attempts: 4, baseDelayMs: 8, maxDelayMs: 10, onRetry: (e) => events.push(e) })
    await s.stat('k')
    expect(events.map((e) => e.delayMs).every((d) => d <= 10)).toBe(true)
    expect(events[2]?.delayMs).toBeGreaterThanOrEqual(5)
  })

  it('gives up after the configured attempts with the last error', async () => {
    const inner = new FlakyStorage()
    const errors = [transient(), transient(), transient(), transient(), transient()]
    inner.failBefore.remove.push(...errors)
    const s = withRetry(inner, fast)
    await expect(s.remove('k')).rejects.toBe(errors[3])
    expect(inner.calls.length).toBe(4)
  })

  it('never retries errors that are not retryable', async () => {
    const cases: unknown[] = [
      new StorageError('disk full'),
      new NotFoundError('missing'),
      new AlreadyExistsError('exists'),
      new Error('plain error'),
      Object.assign(new Error('retryable but not true'), { retryable: 'yes' }),
    ]
    for (const e of cases) {
      const inner = new FlakyStorage()
      inner.failBefore.write.push(e)
      await expect(withRetry(inner, fast).write('k', randomBytes(10))).rejects.toBe(e)
      expect(inner.calls.length).toBe(1)
    }
  })

  it('stops waiting at once when the call is aborted, with the reason', async () => {
    const inner = new FlakyStorage()
    inner.failBefore.stat.push(transient(), transient())
    const s = withRetry(inner, { attempts: 5, baseDelayMs: 60_000, maxDelayMs: 60_000 })
    const ac = new AbortController()
    const reason = new Error('shutdown')
    setTimeout(() => ac.abort(reason), 20)
    const started = Date.now()
    await expect(s.stat('k', { signal: ac.signal })).rejects.toBe(reason)
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(inner.calls.length).toBe(1)
  })

  it('honours the decorator-wide signal too', async () => {
    const inner = new FlakyStorage()
    inner.failBefore.write.push(transient())
    const ac = new AbortController()
    const s = withRetry(inner, { attempts: 5, baseDelayMs: 60_000, maxDelayMs: 60_000, signal: ac.signal })
    const reason = new Error('closing')
    setTimeout(() => ac.abort(reason), 20)
    await expect(s.write('k', randomBytes(5))).rejects.toBe(reason)
    await expect(s.stat('k')).rejects.toBe(reason)
  })

  it('resumes a failed read at the byte it reached, for whole and ranged reads', async () => {
    const data = randomBytes(10_000)
    const inner = new FlakyStorage()
    inner.objects.set('k', data)
    const s = withRetry(inner, fast)

    inner.failAfter.push({ items: 3, error: transient() })
    expect((await readAll(s, 'k')).equals(data)).toBe(true)
    expect(inner.calls.map((c) => [c.offset, c.length])).toEqual([
      [0, undefined],
      [3000, undefined],
    ])

    inner.calls.length = 0
    inner.failAfter.push({ items: 2, error: transient() })
    expect((await readAll(s, 'k', { offset: 500, length: 6000 })).equals(data.subarray(500, 6500))).toBe(true)
    expect(inner.calls.map((c) => [c.offset, c.length])).toEqual([
      [500, 6000],
      [2500, 4000],
    ])
  })

  it('keeps resuming a read that makes progress between failures', async () => {
    const data = randomBytes(10_000)
    const inner = new FlakyStorage()
    inner.objects.set('k', data)
    for (let i = 0; i < 5; i++) inner.failAfter.push({ items: 1, error: transient() })
    const s = withRetry(inner, { attempts: 2, baseDelayMs: 1, maxDelayMs: 1 })
    expect((await readAll(s, 'k')).equals(data)).toBe(true)
    expect(inner.calls.length).toBe(6)
  })

  it('does not retry a missing key or a non-retryable read failure', async () => {
    const inner = new FlakyStorage()
    const s = withRetry(inner, fast)
    await expect(readAll(s, 'missing')).rejects.toBeInstanceOf(NotFoundError)
    await expect(readAll(s, 'missing', { offset: 0, length: 0 })).rejects.toBeInstanceOf(NotFoundError)
    inner.objects.set('k', randomBytes(5000))
    const fatal = new StorageError('i/o error')
    inner.failAfter.push({ items: 2, error: fatal })
    await expect(readAll(s, 'k')).rejects.toBe(fatal)
    expect(inner.calls.length).toBe(3)
  })

  it('returns the inner read when the consumer stops early', async () => {
    const inner = new FlakyStorage()
    inner.objects.set('k', randomBytes(10_000))
    const s = withRetry(inner, fast)
    for await (const c of s.read('k')) {
      expect(c.byteLength).toBe(1000)
      break
    }
    expect(inner.readsReturned).toBe(1)
  })

  it('retries a listing only before its first entry', async () => {
    const inner = new FlakyStorage()
    for (const k of ['a/1', 'a/2', 'a/3']) inner.objects.set(k, randomBytes(1))
    const s = withRetry(inner, fast)
    const keys = async (): Promise<string[]> => {
      const out: string[] = []
      for await (const i of s.list('a/')) out.push(i.key)
      return out
    }
    inner.failBefore.list.push(transient(), transient())
    expect(await keys()).toEqual(['a/1', 'a/2', 'a/3'])
    expect(inner.calls.length).toBe(3)

    inner.calls.length = 0
    const late = transient()
    inner.failAfter.push({ items: 1, error: late })
    await expect(keys()).rejects.toBe(late)
    expect(inner.calls.length).toBe(1)
  })

  it('an ifAbsent write whose answer was lost succeeds when its own bytes are there, and only then', async () => {
    const inner = new FlakyStorage()
    const s = withRetry(inner, fast)
    const body = randomBytes(2500)
    inner.failAfterWrite.push(transient())
    await s.write('k', body, { ifAbsent: true })
    expect(inner.objects.get('k')?.equals(body)).toBe(true)
    // write, write (AlreadyExists), read back
    expect(inner.calls.map((c) => c.op)).toEqual(['write', 'write', 'read'])

    // Someone else's bytes under the key: AlreadyExistsError stands.
    inner.calls.length = 0
    inner.objects.set('other', randomBytes(2500))
    inner.failBefore.write.push(transient())
    await expect(s.write('other', body, { ifAbsent: true })).rejects.toBeInstanceOf(AlreadyExistsError)

    // No earlier failure: a plain AlreadyExistsError, nothing read.
    inner.calls.length = 0
    await expect(s.write('k', body, { ifAbsent: true })).rejects.toBeInstanceOf(AlreadyExistsError)
    expect(inner.calls.map((c) => c.op)).toEqual(['write'])

    // collisionFree: the key vouches for the bytes, nothing is read.
    inner.calls.length = 0
    inner.failAfterWrite.push(transient())
    await s.write('cf', body, { ifAbsent: true, collisionFree: true })
    expect(inner.calls.map((c) => c.op)).toEqual(['write', 'write'])
  })

  it('passes name and features through and refuses a bad attempts count', () => {
    const inner = new FlakyStorage()
    const s = withRetry(inner, fast)
    expect(s.name).toBe('flaky')
    expect(s.features).toBe(inner.features)
    expect(() => withRetry(inner, { ...fast, attempts: 0 })).toThrow(RangeError)
  })
})
