// Object stores as they are: whether a store enforces conditional writes is found out by a probe at init and
// recorded in the config; stores that refuse them (a loopback proxy answering 501, as OpenStack Swift's S3 layer
// does) or ignore them (s3rver itself) get the check-and-read-back protocol, which keeps racing record writers
// apart and locks exclusive; a 501 without that fallback is one clear, non-retried error; and an if-absent write
// whose answer was lost (the TCP fault proxy cuts the response after the request was delivered) succeeds when
// its own object is what is there.

import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { AlreadyExistsError, LockedError, StorageError } from '../../src/errors.js'
import { CONFIG_KEY } from '../../src/repo/layout.js'
import { encodeConfig, newConfig } from '../../src/repo/config.js'
import { initRepository, openRepository, type Repository } from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import { openStorage } from '../../src/storage/open.js'
import { withRetry } from '../../src/storage/retry.js'
import { openS3Storage, type S3StorageOptions } from '../../src/storage/s3.js'
import type { Storage } from '../../src/storage/storage.js'
import { startS3ConditionalProxy, type S3ConditionalProxy } from '../harness/s3-conditional-proxy.js'
import { startS3Server, type S3TestServer } from '../harness/s3-server.js'
import { startTcpProxy, type TcpProxy } from '../harness/tcp-proxy.js'

let server: S3TestServer
let refusing: S3ConditionalProxy
let enforcing: S3ConditionalProxy
let tmp: string
let n = 0

beforeAll(async () => {
  server = await startS3Server({ conditionalWrites: 'server' })
  refusing = await startS3ConditionalProxy(server.endpoint, 'refuse')
  enforcing = await startS3ConditionalProxy(server.endpoint, 'enforce')
  tmp = await mkdtemp(path.join(os.tmpdir(), 'pgkeep-cond-'))
})
afterAll(async () => {
  await refusing?.close()
  await enforcing?.close()
  await server?.stop()
  if (tmp) await rm(tmp, { recursive: true, force: true })
})

/** A fresh prefix on the harness's bucket, reached through `endpoint`, as the CLI opens it (retry + limit). */
function s3Env(endpoint: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: server.accessKeyId,
    AWS_SECRET_ACCESS_KEY: server.secretAccessKey,
    AWS_REGION: server.region,
    AWS_ENDPOINT_URL: endpoint,
    ...extra,
  }
}
/** The S3 driver alone on a fresh prefix, without the SDK's own retry (so only a decorator can retry). */
const rawDriver = (endpoint: string, extra: Partial<S3StorageOptions> = {}): Promise<Storage> =>
  openS3Storage({
    bucket: server.bucket,
    prefix: `${server.prefix}raw-${++n}-${randomBytes(3).toString('hex')}`,
    endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    sdkMaxAttempts: 1,
    ...extra,
  })
const freshUrl = (): string => `s3://${server.bucket}/${server.prefix}cond-${++n}-${randomBytes(3).toString('hex')}`

async function listAll(s: Storage, prefix = ''): Promise<string[]> {
  const out: string[] = []
  for await (const o of s.list(prefix)) out.push(o.key)
  return out.sort()
}

async function readAll(s: Storage, key: string): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const c of s.read(key)) parts.push(c)
  return Buffer.concat(parts)
}

describe('probing conditional writes', () => {
  it('finds s3rver ignoring If-None-Match, the 501 proxy refusing it, the enforcing proxy and fs enforcing it, and leaves nothing', async () => {
    const cases: [string, () => Promise<Storage>, string][] = [
      ['s3rver', () => openStorage(freshUrl(), s3Env(server.endpoint)), 'ignored'],
      ['refusing proxy', () => openStorage(freshUrl(), s3Env(refusing.endpoint)), 'unsupported'],
      ['enforcing proxy', () => openStorage(freshUrl(), s3Env(enforcing.endpoint)), 'enforced'],
      ['fs', () => openStorage(path.join(tmp, `probe-${++n}`), {}), 'enforced'],
    ]
    for (const [label, open, want] of cases) {
      const s = await open()
      try {
        expect(await s.probeConditionalWrite!('probe-x'), label).toBe(want)
        expect(await listAll(s), label).toEqual([])
      } finally {
        await s.close()
      }
    }
  })

  it('records the answer at init, warns once where it is not enforced, and configures every later open', async () => {
    const cases: [string, string, string][] = [
      ['s3rver', server.endpoint, 'ignored'],
      ['refusing proxy', refusing.endpoint, 'unsupported'],
      ['enforcing proxy', enforcing.endpoint, 'enforced'],
    ]
    for (const [label, endpoint, want] of cases) {
      const url = freshUrl()
      const storage = await openStorage(url, s3Env(endpoint))
      try {
        const messages: { level: string; text: string }[] = []
        const repo = await initRepository(storage, { onMessage: (m) => messages.push(m) })
        expect(repo.config.conditionalWrite, label).toBe(want)
        if (want === 'enforced') {
          expect(messages, label).toEqual([])
        } else {
          expect(messages.length, label).toBe(1)
          expect(messages[0]?.level).toBe('warning')
          expect(messages[0]?.text).toMatch(/does not enforce conditional writes/)
          expect(messages[0]?.text).toMatch(want === 'unsupported' ? /501 NotImplemented/ : /ignores If-None-Match/)
        }
        // The config object itself says it (not only the in-memory copy).
        expect(JSON.parse((await readAll(storage, CONFIG_KEY)).toString()).conditionalWrite, label).toBe(want)
        // Only config is left: the probe object is gone.
        expect(await listAll(storage), label).toEqual([CONFIG_KEY])
        await repo.close()
        const again = await openRepository(storage)
        expect(again.storage.features.conditionalWrite, label).toBe(want === 'enforced' ? storage.features.conditionalWrite : false)
        await again.close()
      } finally {
        await storage.close()
      }
    }
  })

  it('reads a config without the field (written before the probe existed) as enforced', async () => {
    const url = freshUrl()
    const storage = await openStorage(url, s3Env(enforcing.endpoint, { PGKEEP_S3_CONDITIONAL_WRITE: 'true' }))
    try {
      const { conditionalWrite: _dropped, ...old } = newConfig({ id: randomBytes(32).toString('hex'), encrypted: false })
      await storage.write(CONFIG_KEY, encodeConfig(old as never))
      const repo = await openRepository(storage)
      expect(repo.config.conditionalWrite).toBeUndefined()
      // No fallback: the storage the repository writes through is the one it was given.
      expect(repo.storage).toBe(storage)
      await repo.close()
    } finally {
      await storage.close()
    }
  })
})

describe('a store that refuses conditional writes', () => {
  it('without the fallback, a conditional write fails at once, not retried, with a hint', async () => {
    const storage = await openStorage(freshUrl(), s3Env(refusing.endpoint))
    try {
      const before = refusing.answered.notImplemented
      const err = await storage.write('records/x/y', Buffer.from('v'), { ifAbsent: true }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(StorageError)
      expect((err as StorageError).retryable).toBe(false)
      expect((err as StorageError).message).toMatch(/does not implement conditional writes/)
      expect((err as StorageError).message).not.toMatch(/overloaded|unavailable/)
      expect((err as StorageError).hint).toMatch(/PGKEEP_S3_CONDITIONAL_WRITE=false/)
      // One request reached the store: neither the SDK nor the retry decorator tried again.
      expect(refusing.answered.notImplemented - before).toBe(1)
      expect(await storage.stat('records/x/y')).toBeUndefined()
    } finally {
      await storage.close()
    }
  })

  describe('with the fallback recorded at init', () => {
    let url: string
    const repos: Repository[] = []
    const storages: Storage[] = []
    const openOne = async (): Promise<Repository> => {
      const s = await openStorage(url, s3Env(refusing.endpoint))
      storages.push(s)
      const r = await openRepository(s)
      repos.push(r)
      return r
    }
    beforeAll(async () => {
      url = freshUrl()
      const s = await openStorage(url, s3Env(refusing.endpoint))
      storages.push(s)
      const repo = await initRepository(s)
      expect(repo.config.conditionalWrite).toBe('unsupported')
      repos.push(repo)
    })
    afterAll(async () => {
      for (const r of repos) await r.close().catch(() => {})
      for (const s of storages) await s.close()
    })

    it('two writers of one record key at the same moment: one succeeds, the other gets AlreadyExistsError, the winner stays', async () => {
      const [a, b] = [await openOne(), await openOne()]
      const before = refusing.answered.notImplemented
      for (let round = 0; round < 3; round++) {
        const key = `race-${round}`
        const results = await Promise.allSettled([a.writeRecord('test', key, { writer: 'a', round }), b.writeRecord('test', key, { writer: 'b', round })])
        const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i === 0 ? 'a' : 'b'] : []))
        expect(won.length, `round ${round}: ${JSON.stringify(results)}`).toBe(1)
        for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(AlreadyExistsError)
        // Every reader, whichever instance, sees the winner's record.
        for (const reader of [a, b]) {
          expect((await reader.readRecord<{ writer: string }>('test', key)).value.writer).toBe(won[0])
        }
        // A later writer is turned away by the check, and the record stays.
        await expect(a.writeRecord('test', key, { writer: 'late' })).rejects.toBeInstanceOf(AlreadyExistsError)
        expect((await b.readRecord<{ writer: string }>('test', key)).value.writer).toBe(won[0])
      }
      // The fallback never sent a conditional request to the store.
      expect(refusing.answered.notImplemented).toBe(before)
    })

    it('a writer that stalls 300 ms between its check and its write is caught by the wait before the read-back', async () => {
      // B checks (the key is free), then stalls before it writes; A checks in that stall and writes at once. B's
      // object lands ~300 ms after A's. Without the wait before the read-back A would read its own object back,
      // B later its own, and both would be told they wrote the record.
      let onStall: (() => void) | undefined
      const sb = await openStorage(url, s3Env(refusing.endpoint))
      storages.push(sb)
      const stalling: Storage = {
        name: sb.name,
        features: sb.features,
        stat: (k, o) => sb.stat(k, o),
        read: (k, o) => sb.read(k, o),
        list: (p, o) => sb.list(p, o),
        remove: (k, o) => sb.remove(k, o),
        close: () => sb.close(),
        async write(k, body, o) {
          if (k.startsWith('records/') && onStall) {
            onStall()
            await new Promise((r) => setTimeout(r, 300))
          }
          await sb.write(k, body, o)
        },
      }
      const b = await openRepository(stalling)
      repos.push(b)
      const a = await openOne()
      for (let round = 0; round < 2; round++) {
        const key = `stall-${round}`
        let aWrite: Promise<string | unknown> | undefined
        onStall = () => {
          onStall = undefined
          aWrite = a.writeRecord('test', key, { writer: 'a', round }).then(
            () => 'a',
            (e: unknown) => e,
          )
        }
        const bOutcome = await b.writeRecord('test', key, { writer: 'b', round }).then(
          () => 'b',
          (e: unknown) => e,
        )
        expect(aWrite, 'B stalled after its check').toBeDefined()
        const outcomes = [await aWrite, bOutcome]
        const won = outcomes.filter((x) => typeof x === 'string')
        expect(won, JSON.stringify(outcomes)).toEqual(['b'])
        expect(outcomes[0]).toBeInstanceOf(AlreadyExistsError)
        expect((await a.readRecord<{ writer: string }>('test', key)).value.writer).toBe('b')
      }
    })

    it('locks still exclude each other', async () => {
      const [a, b] = [await openOne(), await openOne()]
      const held = await a.acquireLock('exclusive', { purpose: 'test exclusive' })
      await expect(b.acquireLock('exclusive', { purpose: 'other' })).rejects.toBeInstanceOf(LockedError)
      await expect(b.acquireLock('shared', { purpose: 'other shared' })).rejects.toBeInstanceOf(LockedError)
      // Refreshing writes a new lock object (if absent, through the fallback) and removes the old one.
      const oldKey = held.key
      await held.refresh()
      expect(held.key).not.toBe(oldKey)
      await expect(b.acquireLock('shared', { purpose: 'other shared' })).rejects.toBeInstanceOf(LockedError)
      await held.release()
      const shared = await b.acquireLock('shared', { purpose: 'now free' })
      await shared.release()
      // Racing for exclusive locks: never both.
      for (let round = 0; round < 3; round++) {
        const results = await Promise.allSettled([
          a.acquireLock('exclusive', { purpose: `race a ${round}` }),
          b.acquireLock('exclusive', { purpose: `race b ${round}` }),
        ])
        const winners = results.filter((r) => r.status === 'fulfilled')
        expect(winners.length).toBeLessThanOrEqual(1)
        for (const r of results) {
          if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(LockedError)
          else await r.value.release()
        }
      }
    })
  })
})

describe('an if-absent write whose answer was lost', () => {
  let tcp: TcpProxy
  beforeAll(async () => {
    tcp = await startTcpProxy('127.0.0.1', enforcing.port)
  })
  afterAll(async () => {
    await tcp?.close()
  })

  /** Cuts the connection at the first byte of the next answer: the request was delivered and carried out. */
  const loseNextAnswer = (): Promise<void> => tcp.cutAfterBytes(0, { direction: 'down' })

  it("succeeds through openStorage when the store holds its own bytes (the SDK's retry got 412)", async () => {
    const storage = await openStorage(freshUrl(), s3Env(`http://127.0.0.1:${tcp.port}`, { PGKEEP_S3_CONDITIONAL_WRITE: 'true' }))
    try {
      const body = randomBytes(4096)
      const cut = loseNextAnswer()
      const refusedBefore = enforcing.answered.preconditionFailed
      await storage.write('records/k/lost', body, { ifAbsent: true })
      await cut
      // The path really was: first attempt written, answer lost, retry refused with 412, object read back.
      expect(enforcing.answered.preconditionFailed - refusedBefore).toBe(1)
      expect((await readAll(storage, 'records/k/lost')).equals(body)).toBe(true)
      // Other bytes under the same key are still refused: the check compares, it does not wave through.
      await expect(storage.write('records/k/lost', randomBytes(4096), { ifAbsent: true })).rejects.toBeInstanceOf(AlreadyExistsError)
    } finally {
      await storage.close()
    }
  })

  it('succeeds through the retry decorator alone (no SDK retry), also for a factory body', async () => {
    const driver = await rawDriver(`http://127.0.0.1:${tcp.port}`, { conditionalWrite: true })
    const storage = withRetry(driver, { attempts: 3, baseDelayMs: 10, maxDelayMs: 50 })
    try {
      const data = randomBytes(10_000)
      for (const [key, body] of [
        ['a', data],
        [
          'b',
          async function* () {
            yield data.subarray(0, 3000)
            yield data.subarray(3000)
          },
        ],
      ] as const) {
        const cut = loseNextAnswer()
        const refusedBefore = enforcing.answered.preconditionFailed
        await storage.write(key, body, { ifAbsent: true })
        await cut
        expect(enforcing.answered.preconditionFailed - refusedBefore, key).toBe(1)
        expect((await readAll(storage, key)).equals(data), key).toBe(true)
      }
    } finally {
      await storage.close()
    }
  })

  it('a record whose answer was lost is written, not reported as existing', async () => {
    const storage = await openStorage(freshUrl(), s3Env(`http://127.0.0.1:${tcp.port}`, { PGKEEP_S3_CONDITIONAL_WRITE: 'true' }))
    try {
      const repo = await initRepository(storage)
      expect(repo.config.conditionalWrite).toBe('enforced')
      const cut = loseNextAnswer()
      await repo.writeRecord('backup', 'cluster/one', { complete: true })
      await cut
      expect((await repo.readRecord<{ complete: boolean }>('backup', 'cluster/one')).value.complete).toBe(true)
      await expect(repo.writeRecord('backup', 'cluster/one', { complete: false })).rejects.toBeInstanceOf(AlreadyExistsError)
      await repo.close()
    } finally {
      await storage.close()
    }
  })

  it('on a store that ignores the condition, the check before the retry finds its own object and succeeds', async () => {
    // Default wiring for a custom endpoint: HeadObject, then the conditional PutObject (which s3rver ignores).
    const direct = await startTcpProxy('127.0.0.1', Number(new URL(server.endpoint).port))
    const driver = await rawDriver(`http://127.0.0.1:${direct.port}`)
    const storage = withRetry(driver, { attempts: 3, baseDelayMs: 10, maxDelayMs: 50 })
    try {
      const data = randomBytes(2048)
      let cut: Promise<void> | undefined
      // The driver pulls a factory body only after its HeadObject check has its answer: arm the cut then, so the
      // answer lost is the PutObject's. Replays (the read-back) must not arm it again.
      const body = async function* (): AsyncGenerator<Uint8Array> {
        cut ??= direct.cutAfterBytes(0, { direction: 'down' })
        yield data
      }
      await storage.write('y', body, { ifAbsent: true })
      expect(cut).toBeDefined()
      await cut
      expect((await readAll(storage, 'y')).equals(data)).toBe(true)
      await expect(storage.write('y', randomBytes(2048), { ifAbsent: true })).rejects.toBeInstanceOf(AlreadyExistsError)
    } finally {
      await storage.close()
      await direct.close()
    }
  })
})

describe('fs driver probe', () => {
  it('finds link(2) and leaves the directory empty', async () => {
    const root = path.join(tmp, 'fs-probe')
    const s = await openFsStorage(root)
    expect(await s.probeConditionalWrite!('probe-1')).toBe('enforced')
    expect(await listAll(s)).toEqual([])
  })
})
