// `wal push` (pushWalFile) on files built from a real segment's first page (PostgreSQL 15): the header names the
// cluster and must match the file name; `.partial` files keep only their non-zero pages; history files need the
// cluster from --cluster, the data directory's pg_control, or the repository's only cluster.

import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { FormatError, IntegrityError, UsageError } from '../../src/errors.js'
import { findSegmentRecord, readWalContent } from '../../src/repo/wal-catalog.js'
import { fetchWalFile } from '../../src/wal/wal-fetch.js'
import { pushWalFile } from '../../src/wal/wal-push.js'
import { fixture } from '../fixtures/pg/fixtures.js'
import { freshFsRepo, type TestRepo } from '../harness/repo.js'

const SEG = 16 << 20
const NAME = '000000010000000000000001'
const page = Buffer.from(fixture('wal-15-000000010000000000000001.page.gz'))
const SYS = page.readBigUInt64LE(24).toString() // xlp_sysid of the fixture's long header

describe('pushWalFile', () => {
  let r: TestRepo
  let dir: string
  afterEach(async () => {
    await r?.close()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  async function file(name: string, bytes: Buffer | string): Promise<string> {
    const p = join(dir, 'pg_wal', name)
    await writeFile(p, bytes)
    return p
  }
  const segmentBytes = (extraPageAt?: number) => {
    const b = Buffer.alloc(SEG)
    page.copy(b)
    if (extraPageAt !== undefined) b.fill(7, extraPageAt, extraPageAt + 100)
    return b
  }

  it('stores a segment under the cluster its header names; again is a no-op; other bytes are refused', async () => {
    r = await freshFsRepo()
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-push-'))
    await mkdir(join(dir, 'pg_wal'))
    const seg = segmentBytes(5 << 20)
    const p = await file(NAME, seg)
    const first = await pushWalFile(r.repo, p)
    expect(first).toMatchObject({ kind: 'segment', systemId: SYS, result: 'stored' })
    expect((await fetchWalFile(r.repo, SYS, NAME))!.equals(seg)).toBe(true)
    expect((await pushWalFile(r.repo, p)).result).toBe('exists')
    await file(NAME, segmentBytes(6 << 20))
    await expect(pushWalFile(r.repo, p)).rejects.toThrow(IntegrityError)
  })

  it('refuses a segment whose header does not fit its name, size or cluster', async () => {
    r = await freshFsRepo()
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-push-'))
    await mkdir(join(dir, 'pg_wal'))
    await expect(pushWalFile(r.repo, await file('000000010000000000000002', segmentBytes()))).rejects.toThrow(FormatError)
    await expect(pushWalFile(r.repo, await file(NAME, segmentBytes().subarray(0, 3 << 20)))).rejects.toThrow(FormatError)
    await expect(pushWalFile(r.repo, await file(NAME, segmentBytes()), { cluster: '12345' })).rejects.toThrow(/system identifier/)
    await expect(pushWalFile(r.repo, await file('00000001000000000000000X', 'x'))).rejects.toThrow(UsageError)
  })

  it('keeps a .partial file as a partial segment of its non-zero pages, served zero-padded under both names', async () => {
    r = await freshFsRepo()
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-push-'))
    await mkdir(join(dir, 'pg_wal'))
    const seg = segmentBytes(20_000) // data on the first three pages
    const res = await pushWalFile(r.repo, await file(`${NAME}.partial`, seg))
    expect(res.kind).toBe('partial')
    const rec = (await findSegmentRecord(r.repo, SYS, NAME))!
    expect(rec).toMatchObject({ partial: true, validBytes: 3 * 8192 })
    expect((await readWalContent(r.repo, rec)).equals(seg.subarray(0, 3 * 8192))).toBe(true)
    expect((await fetchWalFile(r.repo, SYS, NAME))!.equals(seg)).toBe(true)
    expect((await fetchWalFile(r.repo, SYS, `${NAME}.partial`))!.equals(seg)).toBe(true)
  })

  it('files history files under --cluster, the pg_control beside pg_wal, or the only cluster', async () => {
    r = await freshFsRepo()
    dir = await mkdtemp(join(tmpdir(), 'pgkeep-push-'))
    await mkdir(join(dir, 'pg_wal'))
    const history = await file('00000002.history', '1\t0/5000060\tno recovery target specified\n')
    await expect(pushWalFile(r.repo, history)).rejects.toThrow(/holds no cluster yet/)
    expect((await pushWalFile(r.repo, history, { cluster: '42' })).systemId).toBe('42')
    // Two clusters now (42 and the segment's): only an explicit or local answer will do.
    await pushWalFile(r.repo, await file(NAME, segmentBytes()))
    const h3 = await file('00000003.history', '1\t0/5000060\tx\n\n2\t0/6000000\ty\n')
    await expect(pushWalFile(r.repo, h3)).rejects.toThrow(/holds 2 clusters/)
    // pg_control of the data directory (archive_command runs there): the fixture of a PostgreSQL 15 cluster.
    await mkdir(join(dir, 'global'))
    const control = Buffer.from(fixture('pg_control-15.gz'))
    await writeFile(join(dir, 'global', 'pg_control'), control)
    const pushed = await pushWalFile(r.repo, h3)
    expect(pushed.systemId).toBe(control.readBigUInt64LE(0).toString())
    expect((await fetchWalFile(r.repo, pushed.systemId, '00000003.history'))!.toString()).toBe('1\t0/5000060\tx\n\n2\t0/6000000\ty\n')
  })
})
