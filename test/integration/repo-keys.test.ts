// Key objects through the library (fs): listed with their creation time, scrypt cost and which one opened the
// session; added and removed without touching anything else; never the last readable one; the key this session
// opened only with force; and two removals racing (the other process's removal injected into storage between
// this one's removal and its second listing) leave a key that opens the repository.

import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { initRepository, openRepository } from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'
import type { Storage } from '../../src/storage/storage.js'
import { listKeys, tempDir } from '../harness/repo-fixtures.js'

const FAST_SCRYPT = { N: 1 << 12, r: 8, p: 1 }
const d = tempDir('keys')
afterAll(() => d.remove())
let n = 0

async function encrypted(passphrase: string): Promise<{ root: string; storage: Storage }> {
  const root = path.join(d.dir, `r${n++}`)
  const storage = await openFsStorage(root)
  await (await initRepository(storage, { encrypt: { passphrase, scrypt: FAST_SCRYPT } })).close()
  return { root, storage }
}

const opens = async (root: string, passphrase: string) =>
  openRepository(await openFsStorage(root), { passphrase }).then(
    async (r) => {
      await r.close()
      return true
    },
    (err) => {
      if (err.code !== 'PASSPHRASE') throw err
      return false
    },
  )

describe('key objects', () => {
  it('are listed, added and removed; the last one and the current one are kept', async () => {
    const { root, storage } = await encrypted('one')
    const repo = await openRepository(storage, { passphrase: 'one' })
    const [first] = await repo.listKeys()
    expect(first).toMatchObject({ current: true, scrypt: FAST_SCRYPT, createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) })
    expect(first!.problem).toBeUndefined()

    // The only key: refused, with force too.
    await expect(repo.removeKey(first!.id, { force: true })).rejects.toMatchObject({ code: 'USAGE', message: expect.stringContaining('last readable key') })

    const { keyId: second } = await repo.addKey('two', { scrypt: FAST_SCRYPT })
    expect((await repo.listKeys()).map((k) => [k.id, k.current]).sort()).toEqual(
      [
        [first!.id, true],
        [second, false],
      ].sort(),
    )
    expect(await opens(root, 'one')).toBe(true)
    expect(await opens(root, 'two')).toBe(true)

    // The key this session opened: only with force. By a prefix of its id; too short or unknown prefixes refused.
    await expect(repo.removeKey(first!.id.slice(0, 10))).rejects.toMatchObject({ code: 'USAGE', hint: expect.stringContaining('key passwd') })
    await expect(repo.removeKey(first!.id.slice(0, 4))).rejects.toMatchObject({ code: 'USAGE' })
    await expect(repo.removeKey('0'.repeat(64) === first!.id ? '1'.repeat(64) : '0'.repeat(64))).rejects.toMatchObject({ code: 'NOT_FOUND' })
    expect(await repo.removeKey(first!.id.slice(0, 10), { force: true })).toEqual({ removedKeyId: first!.id })
    expect(await listKeys(storage, 'keys/')).toEqual([`keys/${second}`])
    expect(await opens(root, 'one')).toBe(false)
    expect(await opens(root, 'two')).toBe(true)
    await repo.close()
  })

  it('names a damaged key object and does not count it as a key left', async () => {
    const { storage } = await encrypted('one')
    const repo = await openRepository(storage, { passphrase: 'one' })
    const { keyId } = await repo.addKey('two', { scrypt: FAST_SCRYPT })
    // Damaged: its bytes no longer hash to its name.
    await storage.write(`keys/${keyId}`, Buffer.from('{"version":1}\n'))
    const keys = await repo.listKeys()
    expect(keys.find((k) => k.id === keyId)).toMatchObject({ problem: expect.stringContaining('damaged'), createdAt: null, scrypt: null })
    const current = keys.find((k) => k.current)!
    await expect(repo.removeKey(current.id, { force: true })).rejects.toMatchObject({ message: expect.stringContaining('last readable key') })
    await repo.close()
  })

  it('two removals racing: the one that would leave no key writes its key back', async () => {
    const { root, storage } = await encrypted('one')
    const setup = await openRepository(storage, { passphrase: 'one' })
    const { keyId: second } = await setup.addKey('two', { scrypt: FAST_SCRYPT })
    const first = (await setup.listKeys()).find((k) => k.current)!.id
    await setup.close()
    // Another process removes the first key just after this one removed the second.
    const racing: Storage = {
      name: storage.name,
      features: storage.features,
      stat: (key, o) => storage.stat(key, o),
      read: (key, o) => storage.read(key, o),
      write: (key, body, o) => storage.write(key, body, o),
      list: (prefix, o) => storage.list(prefix, o),
      remove: async (key, o) => {
        await storage.remove(key, o)
        if (key === `keys/${second}`) await storage.remove(`keys/${first}`, o)
      },
      close: () => storage.close(),
    }
    const repo = await openRepository(racing, { passphrase: 'one' })
    await expect(repo.removeKey(second)).rejects.toMatchObject({ code: 'USAGE', message: expect.stringContaining('was kept') })
    expect(await listKeys(storage, 'keys/')).toEqual([`keys/${second}`])
    expect(await opens(root, 'two')).toBe(true)
    await repo.close()
  })

  it('a plain repository has none, and none to add', async () => {
    const storage = await openFsStorage(path.join(d.dir, `r${n++}`))
    const repo = await initRepository(storage)
    expect(await repo.listKeys()).toEqual([])
    await expect(repo.addKey('x')).rejects.toMatchObject({ code: 'USAGE', message: expect.stringContaining('not encrypted') })
    await expect(repo.removeKey('0'.repeat(64))).rejects.toMatchObject({ code: 'USAGE' })
    await repo.close()
  })
})
