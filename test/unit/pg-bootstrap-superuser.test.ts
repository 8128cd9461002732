// Reading the bootstrap superuser's name from pg_filenode.map and pg_authid's heap pages, over pages built here the
// way PostgreSQL lays them out (the drill integration test reads a real cluster's files).

import { describe, expect, it } from 'vitest'
import { bootstrapSuperuserNames, mappedFileNumber } from '../../src/pg/bootstrap-superuser.js'
import { parsePostgresVersion } from '../../src/local-server/pg-binaries.js'

/** A heap page with one tuple per role: (oid, rolname), with xmax set for the `deleted` ones. */
function authidPage(roles: { oid: number; name: string; deleted?: boolean }[]): Buffer {
  const page = Buffer.alloc(8192)
  let upper = 8192
  roles.forEach((r, i) => {
    const hoff = 24 // 23-byte header, MAXALIGNed; no null bitmap
    const len = hoff + 4 + 64
    upper -= (len + 7) & ~7
    page.writeUInt32LE(r.deleted ? 1234 : 0, upper + 4) // t_xmax
    page.writeUInt16LE(r.deleted ? 0 : 0x0800, upper + 20) // t_infomask: HEAP_XMAX_INVALID when live
    page[upper + 22] = hoff
    page.writeUInt32LE(r.oid, upper + hoff)
    page.write(r.name, upper + hoff + 4, 'utf8')
    page.writeUInt32LE(upper | (1 << 15) | (len << 17), 24 + i * 4) // lp_off, LP_NORMAL, lp_len
  })
  page.writeUInt16LE(24 + roles.length * 4, 12) // pd_lower
  page.writeUInt16LE(upper, 14) // pd_upper
  page.writeUInt16LE(8192, 16) // pd_special
  page.writeUInt16LE(0x2004, 18)
  return page
}

describe('bootstrap superuser', () => {
  it('finds the role with oid 10, live versions before deleted ones, across pages', () => {
    const p1 = authidPage([
      { oid: 10, name: 'old_admin', deleted: true },
      { oid: 16384, name: 'app' },
    ])
    const p2 = authidPage([{ oid: 10, name: 'admin' }])
    expect(bootstrapSuperuserNames(Buffer.concat([p1, Buffer.alloc(8192), p2]))).toEqual(['admin', 'old_admin'])
  })

  it('ignores tuples whose offsets leave the page', () => {
    const p = authidPage([{ oid: 10, name: 'admin' }])
    p.writeUInt32LE(8190 | (1 << 15) | (92 << 17), 24)
    expect(bootstrapSuperuserNames(p)).toEqual([])
  })

  it("reads pg_authid's file number from pg_filenode.map", () => {
    const map = Buffer.alloc(512)
    map.writeInt32LE(0x592717, 0)
    map.writeInt32LE(2, 4)
    map.writeUInt32LE(1262, 8)
    map.writeUInt32LE(1262, 12)
    map.writeUInt32LE(1260, 16)
    map.writeUInt32LE(16999, 20)
    expect(mappedFileNumber(map, 1260)).toBe(16999)
    expect(mappedFileNumber(map, 1213)).toBeUndefined()
    expect(mappedFileNumber(Buffer.alloc(512), 1260)).toBeUndefined()
  })

  it('reads the versions postgres --version prints', () => {
    expect(parsePostgresVersion('postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n')).toEqual({ major: 15, version: '15.18' })
    expect(parsePostgresVersion('postgres (PostgreSQL) 18.4\n')).toEqual({ major: 18, version: '18.4' })
    expect(parsePostgresVersion('postgres (PostgreSQL) 19beta1\n')).toEqual({ major: 19, version: '19beta1' })
    expect(parsePostgresVersion('postgres (PostgreSQL) 19devel\n')).toEqual({ major: 19, version: '19devel' })
    expect(parsePostgresVersion('something else')).toBeUndefined()
  })
})
