import { describe, expect, it } from 'vitest'
import { TargetTree } from '../../src/restore/target-tree.js'

describe('where restore maps a backup path', () => {
  const tree = new TargetTree('/srv/pg/data', new Map([[16385, '/mnt/ts1']]), 'backup B')

  it('puts data-directory paths below the data directory and tablespace paths below their location', () => {
    expect(tree.resolve('base/5/16384')).toEqual({ root: '/srv/pg/data', below: 'base/5/16384', absolute: '/srv/pg/data/base/5/16384' })
    expect(tree.resolve('pg_tblspc/16385/PG_15_202209061/5/16390.1')).toEqual({
      root: '/mnt/ts1',
      below: 'PG_15_202209061/5/16390.1',
      absolute: '/mnt/ts1/PG_15_202209061/5/16390.1',
    })
    // A directory named pg_tblspc is an ordinary entry; the tablespace rule begins below it.
    expect(tree.resolve('pg_tblspc').absolute).toBe('/srv/pg/data/pg_tblspc')
  })

  it('normalises its roots, so that every path it returns is what path.join would give', () => {
    const odd = new TargetTree('/srv//pg/./data/', new Map([[16385, '/mnt/x/../ts1/']]), 'backup B')
    expect(odd.pgdata).toBe('/srv/pg/data')
    expect(odd.resolve('global/pg_control').absolute).toBe('/srv/pg/data/global/pg_control')
    expect(odd.resolve('pg_tblspc/16385/PG_15_202209061/x').absolute).toBe('/mnt/ts1/PG_15_202209061/x')
    expect(new TargetTree('/', new Map(), 'backup B').resolve('base/1/1259').absolute).toBe('/base/1/1259')
  })

  it('refuses paths that break the rule, unlisted tablespaces and the tablespace links themselves', () => {
    const refused: [string, RegExp][] = [
      ['base/../../etc/passwd', /'\.\.' segment/],
      ['/etc/passwd', /absolute/],
      ['base//x', /empty segment/],
      ['pg_tblspc/16386/PG_15_202209061/x', /tablespace 16386, which the backup does not list/],
      ['pg_tblspc/abc/x', /tablespace abc, which the backup does not list/],
      ['pg_tblspc/016385/x', /tablespace 016385/],
      ['pg_tblspc/16385', /link of a tablespace/],
      ['pg_tblspc/16385/../../../etc', /'\.\.' segment/],
    ]
    for (const [path, why] of refused) expect(() => tree.resolve(path), path).toThrow(why)
  })
})
