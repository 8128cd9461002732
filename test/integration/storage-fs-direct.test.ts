// The fs driver's direct writes (src/storage/direct-write.ts): objects of 1 MiB and more written with O_DIRECT come
// back byte for byte, have their exact length (the padded last block cut off), and left nothing in the page cache:
// `fincore` (util-linux) counts the file's resident pages, which is how we know the write went past the cache. A
// kernel refusal (staging memory that is not aligned, a real EINVAL from write(2)) falls back to ordinary writes
// for the file and for good, leaving no temporary file. A tmpfs (or any file system but ext4, xfs and btrfs) is
// written the ordinary way from the start.

import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, readdir, rm, stat, statfs } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'

import { AlreadyExistsError } from '../../src/errors.js'
import { DirectWriter, pageAlignedBuffer, suitsDirectWrites } from '../../src/storage/direct-write.js'
import { openFsStorage } from '../../src/storage/fs.js'

const MIB = 1 << 20

let tmp: string
/** Whether the temporary directory is on ext4, xfs or btrfs: elsewhere (a tmpfs, a container's overlay) no write is direct. */
let directHere = true
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'pgkeep-fs-direct-'))
  directHere = await suitsDirectWrites(tmp)
  if (!directHere) console.info(`skip direct write tests: ${os.tmpdir()} is not on ext4, xfs or btrfs (statfs type ${(await statfs(tmp)).type.toString(16)})`)
})
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true })
})

/** Bytes of `file` in the page cache, as fincore(1) counts them (whole pages). */
function residentBytes(file: string): number {
  return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES', file], { encoding: 'utf8' }).trim())
}

const pages = (bytes: number): number => Math.ceil(bytes / 4096) * 4096

async function leftovers(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).filter((n) => n.includes('.tmp-'))
}

describe('fs storage: direct writes', () => {
  beforeEach((ctx) => {
    if (!directHere) ctx.skip()
  })

  it('writes objects from 1 MiB on past the page cache, at their exact length', async () => {
    const root = path.join(tmp, 'sizes')
    const writer = new DirectWriter()
    const s = await openFsStorage(root, { directWriter: writer })
    // Exactly one staging buffer; one byte over (a last block of 1 byte); a block short of the next; several
    // staging buffers and a tail.
    for (const size of [MIB, MIB + 1, 2 * MIB - 1, 3 * MIB + 517]) {
      const bytes = randomBytes(size)
      const key = `packs/ab/${size}`
      await s.write(key, bytes)
      const file = path.join(root, key)
      expect(residentBytes(file)).toBe(0) // before reading it back, which caches it
      expect((await stat(file)).size).toBe(size)
      expect((await readFile(file)).equals(bytes)).toBe(true)
    }
    expect(writer.enabled).toBe(true)
    expect(await leftovers(root)).toEqual([])
  })

  it('keeps concurrent writes apart (one staging buffer each)', async () => {
    const root = path.join(tmp, 'concurrent')
    const s = await openFsStorage(root)
    await s.write('first', randomBytes(MIB)) // leaves a spare staging buffer that the next writes could share
    const bodies = Array.from({ length: 4 }, () => randomBytes(2 * MIB + 100))
    await Promise.all(bodies.map((b, i) => s.write(`o${i}`, b)))
    for (const [i, b] of bodies.entries()) expect((await readFile(path.join(root, `o${i}`))).equals(b)).toBe(true)
  })

  it('writes small objects, and every object without fsync, through the page cache', async () => {
    const root = path.join(tmp, 'buffered')
    const small = randomBytes(MIB - 1)
    await (await openFsStorage(root)).write('small', small)
    expect(residentBytes(path.join(root, 'small'))).toBe(pages(MIB - 1))
    const big = randomBytes(2 * MIB)
    await (await openFsStorage(root, { fsync: false })).write('nosync', big)
    await (await openFsStorage(root, { directWrites: false })).write('off', big)
    expect(residentBytes(path.join(root, 'nosync'))).toBe(2 * MIB)
    expect(residentBytes(path.join(root, 'off'))).toBe(2 * MIB)
  })

  it('keeps ifAbsent: a second direct write of the key fails and leaves the first intact', async () => {
    const root = path.join(tmp, 'absent')
    const s = await openFsStorage(root)
    const first = randomBytes(MIB + 3)
    await s.write('k', first, { ifAbsent: true })
    await expect(s.write('k', randomBytes(MIB + 3), { ifAbsent: true })).rejects.toBeInstanceOf(AlreadyExistsError)
    expect((await readFile(path.join(root, 'k'))).equals(first)).toBe(true)
    expect(await leftovers(root)).toEqual([])
  })

  it('uses direct writes only on ext4, xfs and btrfs (not on a tmpfs), also for a root not created yet', async () => {
    expect(await suitsDirectWrites(path.join(tmp, 'not', 'yet'))).toBe(true)
    expect(await suitsDirectWrites('/proc')).toBe(false)
    const shm = await mkdtemp('/dev/shm/pgkeep-fs-direct-').catch(() => undefined)
    if (shm === undefined) return // no /dev/shm here; the /proc case above still ran
    try {
      expect(await suitsDirectWrites(path.join(shm, 'repo'))).toBe(false)
      let staged = 0
      const counting = new DirectWriter((bytes) => {
        staged++
        return Buffer.alloc(bytes)
      })
      const s = await openFsStorage(path.join(shm, 'repo'), { directWriter: counting })
      const body = randomBytes(2 * MIB)
      await s.write('o', body)
      expect((await readFile(path.join(shm, 'repo', 'o'))).equals(body)).toBe(true)
      expect(staged).toBe(0)
      // The same writer on this test's ext4 directory is used.
      await (await openFsStorage(path.join(tmp, 'counted'), { directWriter: counting })).write('o', body)
      expect(staged).toBeGreaterThan(0)
    } finally {
      await rm(shm, { recursive: true, force: true })
    }
  })

  it('falls back to ordinary writes when no staging memory can be had (a ulimit -v refuses WebAssembly memories)', async () => {
    const root = path.join(tmp, 'no-staging')
    const starved = new DirectWriter(() => {
      throw new RangeError('WebAssembly.Memory(): could not allocate memory')
    })
    const s = await openFsStorage(root, { directWriter: starved })
    const body = randomBytes(MIB + 9)
    await s.write('o', body)
    expect((await readFile(path.join(root, 'o'))).equals(body)).toBe(true)
    expect(starved.enabled).toBe(false)
    expect(await leftovers(root)).toEqual([])
  })

  it('falls back to ordinary writes for good when the kernel refuses a direct write', async () => {
    const root = path.join(tmp, 'refused')
    // Memory 16 bytes past a page boundary (a WebAssembly memory starts on one), so aligned to no block size and
    // write(2) answers EINVAL. (16 bytes past wherever malloc put it was aligned to 512, ext4's block here, once in 32.)
    const misaligned = new DirectWriter((bytes) => pageAlignedBuffer(bytes + 65536).subarray(16, 16 + bytes))
    const s = await openFsStorage(root, { directWriter: misaligned })
    const bodies = [randomBytes(MIB + 5), randomBytes(2 * MIB)]
    for (const [i, b] of bodies.entries()) {
      await s.write(`o${i}`, b)
      const file = path.join(root, `o${i}`)
      expect(residentBytes(file)).toBe(pages(b.length))
      expect((await readFile(file)).equals(b)).toBe(true)
      expect((await stat(file)).size).toBe(b.length)
    }
    expect(misaligned.enabled).toBe(false)
    expect(await leftovers(root)).toEqual([])
  })
})
