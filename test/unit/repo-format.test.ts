// The bytes the repository writes, decoded by this test from docs/repository-format.md alone (node:crypto and
// zstd-napi's high-level API, none of src/repo's decoders): key objects, sealing, blob ids, packs and their headers,
// index objects, records. If the code and the document drift apart, these fail.

import { afterAll, describe, expect, it } from 'vitest'
import { createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, scryptSync } from 'node:crypto'
import { decompress } from 'zstd-napi'

import { RepoFormatError } from '../../src/errors.js'
import { conditionalWriteOf, decodeConfig, newConfig } from '../../src/repo/config.js'
import { initRepository } from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import type { Storage } from '../../src/storage/storage.js'
import { blobContent, listKeys, readAll, tempDir } from '../harness/repo-fixtures.js'

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest()

/** §4 sealing: nonce [12] | ciphertext | tag [16]. */
function open(key: Buffer, sealed: Buffer, aad?: Buffer): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12))
  if (aad) d.setAAD(aad)
  d.setAuthTag(sealed.subarray(sealed.length - 16))
  return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()])
}

interface Entry {
  type: number
  flags: number
  id: string
  offset: number
  storedLength: number
  plainLength: number
}

/** §6 entry: type u8 | flags u8 | id [32] | offset u32le | stored_length u32le | plain_length u32le. */
function entryAt(b: Buffer, at: number): Entry {
  return {
    type: b[at]!,
    flags: b[at + 1]!,
    id: b.toString('hex', at + 2, at + 34),
    offset: b.readUInt32LE(at + 34),
    storedLength: b.readUInt32LE(at + 38),
    plainLength: b.readUInt32LE(at + 42),
  }
}

const dirs: { remove: () => void }[] = []
const storages: Storage[] = []
afterAll(async () => {
  for (const s of storages) await s.close()
  for (const d of dirs) d.remove()
})

async function makeRepo(encrypted: boolean) {
  const d = tempDir('fmt')
  dirs.push(d)
  const storage = await openFsStorage(d.dir)
  storages.push(storage)
  const passphrase = 'format test ünïcode'
  const repo = await initRepository(storage, {
    compression: { level: 3 },
    packTargetBytes: 1 << 20,
    encrypt: encrypted ? { passphrase, scrypt: { N: 1 << 12, r: 8, p: 1 } } : undefined,
  })
  const contents = [blobContent(1, 0), blobContent(1, 1), Buffer.from(createHash('sha512').update('x').digest()), Buffer.alloc(0)]
  const ids: string[] = []
  for (const c of contents) ids.push((await repo.putBlob('data', c)).id)
  const metaId = (await repo.putBlob('meta', Buffer.from('{"meta":true}'))).id
  await repo.writeRecord('backup', 'c1/b1', { label: 'x'.repeat(2000) }, { blobRefs: [metaId] })
  await repo.close()
  return { storage, passphrase, contents, ids, metaId, config: await readAll(storage, 'config') }
}

describe.each([false, true])('repository bytes follow the format document (encrypted: %s)', (encrypted) => {
  it('decodes config, keys, packs, index objects and records by the document', async () => {
    const r = await makeRepo(encrypted)
    const config = JSON.parse(r.config.toString('utf8'))
    expect(config).toMatchObject({ format: 'pgkeep', version: 1, packTargetBytes: 1 << 20, compression: { algorithm: 'zstd', level: 3 } })
    // §3: init probed the store (a local directory: link(2) refuses an existing name) and removed its probe object.
    expect(config.conditionalWrite).toBe('enforced')
    expect((await listKeys(r.storage, 'probe-')).length).toBe(0)
    expect(config.id).toMatch(/^[0-9a-f]{64}$/)

    // §4: unwrap the master key with scrypt + AES-GCM, derive the keys with HKDF.
    let dataKey: Buffer | undefined
    let idKey: Buffer | undefined
    const keyNames = await listKeys(r.storage, 'keys/')
    if (encrypted) {
      expect(keyNames).toHaveLength(1)
      const bytes = await readAll(r.storage, keyNames[0]!)
      expect(keyNames[0]).toBe(`keys/${sha256(bytes).toString('hex')}`)
      const k = JSON.parse(bytes.toString('utf8'))
      const kek = scryptSync(Buffer.from(r.passphrase.normalize('NFC')), Buffer.from(k.kdf.salt, 'base64'), 32, {
        N: k.kdf.N,
        r: k.kdf.r,
        p: k.kdf.p,
      })
      const plain = open(kek, Buffer.from(k.wrap.data, 'base64'), Buffer.from(`pgkeep key v1 ${config.id}`, 'ascii'))
      expect(plain.length).toBe(64)
      expect(plain.subarray(32).equals(sha256(r.config))).toBe(true)
      const master = plain.subarray(0, 32)
      dataKey = Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), 'pgkeep data key v1', 32))
      idKey = Buffer.from(hkdfSync('sha256', master, Buffer.alloc(32), 'pgkeep blob id key v1', 32)) // empty salt = 32 zero bytes
    } else {
      expect(config.encryption).toBeNull()
      expect(keyNames).toEqual([])
    }
    const blobId = (plain: Buffer) => (idKey ? createHmac('sha256', idKey).update(plain).digest() : sha256(plain)).toString('hex')
    expect(r.ids).toEqual(r.contents.map(blobId))

    // §6: every pack, from its trailing header alone.
    const found = new Map<string, { pack: string; entry: Entry; bytes: Buffer }>()
    for (const name of await listKeys(r.storage, 'packs/')) {
      const pack = await readAll(r.storage, name)
      const id = sha256(pack).toString('hex')
      expect(name).toBe(`packs/${id.slice(0, 2)}/${id}`)
      const headerLength = pack.readUInt32LE(pack.length - 4)
      const headerStart = pack.length - 4 - headerLength
      const stored = pack.subarray(headerStart, pack.length - 4)
      let header: Buffer
      if (dataKey) header = open(dataKey, stored)
      else {
        header = stored.subarray(0, stored.length - 32)
        expect(sha256(header).equals(stored.subarray(stored.length - 32))).toBe(true)
      }
      expect(header.toString('latin1', 0, 4)).toBe('PKPH')
      expect(header[4]).toBe(1)
      expect(header.subarray(5, 8).equals(Buffer.alloc(3))).toBe(true)
      const count = header.readUInt32LE(8)
      expect(header.length).toBe(12 + count * 46)
      let offset = 0
      const types = new Set<number>()
      for (let i = 0; i < count; i++) {
        const e = entryAt(header, 12 + i * 46)
        expect(e.offset).toBe(offset)
        offset += e.storedLength
        types.add(e.type)
        // §5: stored form → plain bytes → id.
        let body = pack.subarray(e.offset, e.offset + e.storedLength)
        if (dataKey) body = open(dataKey, body)
        const plain = e.flags & 1 ? decompress(body) : body
        expect(plain.length).toBe(e.plainLength)
        expect(blobId(plain)).toBe(e.id)
        found.set(e.id, { pack: id, entry: e, bytes: plain })
      }
      expect(offset).toBe(headerStart)
      expect(types.size).toBe(1) // one type per pack
    }
    for (const [i, id] of r.ids.entries()) expect(found.get(id)!.bytes.equals(r.contents[i]!)).toBe(true)
    expect(found.get(r.ids[0]!)!.entry.flags & 1).toBe(1) // compressible: zstd
    expect(found.get(r.ids[2]!)!.entry.flags & 1).toBe(0) // 64 random bytes: stored as they are
    expect(found.get(r.metaId)!.entry.type).toBe(1)
    expect(found.get(r.ids[0]!)!.entry.type).toBe(0)

    // §7: index objects list exactly what the pack headers say.
    const indexNames = await listKeys(r.storage, 'index/')
    expect(indexNames.length).toBeGreaterThan(0)
    let listed = 0
    for (const name of indexNames) {
      const stored = await readAll(r.storage, name)
      expect(name).toBe(`index/${sha256(stored).toString('hex')}`)
      const b = dataKey ? open(dataKey, stored) : stored
      expect(b.toString('latin1', 0, 4)).toBe('PKIX')
      expect(b[4]).toBe(1)
      let at = 8
      const s = b.readUInt32LE(at)
      at += 4 + 32 * s
      const packs = b.readUInt32LE(at)
      at += 4
      for (let p = 0; p < packs; p++) {
        const packId = b.toString('hex', at, at + 32)
        const n = b.readUInt32LE(at + 32)
        at += 36
        for (let i = 0; i < n; i++, at += 46) {
          const e = entryAt(b, at)
          expect(found.get(e.id)).toMatchObject({ pack: packId, entry: e })
          listed++
        }
      }
      expect(at).toBe(b.length)
    }
    expect(listed).toBe(found.size)

    // §9: the record, prefix, body and payload.
    const rec = await readAll(r.storage, 'records/backup/c1/b1')
    expect(rec.toString('latin1', 0, 4)).toBe('PKRC')
    expect(rec[4]).toBe(1)
    const flags = rec[5]!
    expect(flags & 2).toBe(encrypted ? 2 : 0)
    expect(flags & 1).toBe(1) // 2 KB of 'x': compressed
    let payload: Buffer
    if (dataKey) {
      payload = open(dataKey, rec.subarray(8), Buffer.concat([rec.subarray(0, 8), Buffer.from('records/backup/c1/b1')]))
    } else {
      payload = rec.subarray(8, rec.length - 32)
      expect(sha256(payload).equals(rec.subarray(rec.length - 32))).toBe(true)
    }
    const json = JSON.parse(decompress(payload).toString('utf8'))
    expect(json).toMatchObject({ kind: 'backup', key: 'c1/b1', blobRefs: [r.metaId], value: { label: 'x'.repeat(2000) } })
  })
})

describe('config §3 conditionalWrite', () => {
  const base = () => newConfig({ id: 'a'.repeat(64), encrypted: false })
  const decode = (c: object) => decodeConfig(Buffer.from(JSON.stringify(c)), 'somewhere')

  it('reads a config without the member as enforced, keeps the three known values, refuses others', () => {
    const { conditionalWrite: _absent, ...old } = base()
    expect(conditionalWriteOf(decode(old))).toBe('enforced')
    for (const v of ['enforced', 'ignored', 'unsupported'] as const) expect(conditionalWriteOf(decode({ ...base(), conditionalWrite: v }))).toBe(v)
    for (const v of ['ENFORCED', 'maybe', '', 1, null]) {
      expect(() => decode({ ...base(), conditionalWrite: v }), String(v)).toThrow(RepoFormatError)
    }
  })
})

describe('packs', () => {
  it('starts a new pack before a blob that would not fit in the open one, and keeps every blob readable', async () => {
    const d = tempDir('packs')
    dirs.push(d)
    const storage = await openFsStorage(d.dir)
    storages.push(storage)
    // Target 64 KiB: a pack's buffer has room for 64 KiB plus 2 MiB. The first blob leaves the pack open (below
    // its target); the second would overflow the buffer, so it goes into a pack of its own.
    const repo = await initRepository(storage, { compression: 'none', packTargetBytes: 64 * 1024 })
    const small = randomBytes(40 * 1024)
    const large = randomBytes(2 * 1024 * 1024 + 100 * 1024)
    const ids = [(await repo.putBlob('data', small)).id, (await repo.putBlob('data', large)).id]
    await repo.flush()
    const packs = await listKeys(storage, 'packs/')
    expect(packs).toHaveLength(2)
    const sizes = (await Promise.all(packs.map((k) => readAll(storage, k)))).map((b) => b.length).sort((a, b) => a - b)
    expect(sizes[0]).toBeLessThan(64 * 1024)
    expect(sizes[1]).toBeGreaterThan(large.length)
    expect((await repo.readBlob(ids[0]!)).equals(small)).toBe(true)
    expect((await repo.readBlob(ids[1]!)).equals(large)).toBe(true)
    await repo.close()
  })
})
