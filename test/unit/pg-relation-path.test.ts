// src/pg/relation-path.ts: examples from protocol.md §8.3, and every path of two real backup manifests (15 with a
// tablespace, 17 incremental) checked against what the server itself said (pg_relation_filepath, tablespace oid).

import { describe, expect, it } from 'vitest'
import { FormatError } from '../../src/errors.js'
import { parseServerManifest } from '../../src/pg/backup-manifest.js'
import {
  blockNumberBase,
  classifyRelationPath,
  dataDirPathToTablespaceMember,
  relationFileName,
  tablespaceMemberToDataDirPath,
} from '../../src/pg/relation-path.js'
import { facts, fixture, keyValues, need } from '../fixtures/pg/fixtures.js'

describe('classifyRelationPath', () => {
  it('decodes the documented shapes', () => {
    expect(classifyRelationPath('base/5/16384')).toEqual({
      kind: 'relation',
      tablespaceOid: null,
      tablespaceVersionDir: null,
      dbOid: 5,
      relfilenode: 16384,
      fork: 'main',
      segno: 0,
      incremental: false,
    })
    expect(classifyRelationPath('base/5/16384_vm.2')).toMatchObject({ fork: 'vm', segno: 2, relfilenode: 16384 })
    expect(classifyRelationPath('base/5/16384_fsm')).toMatchObject({ fork: 'fsm', segno: 0 })
    expect(classifyRelationPath('base/5/16384_init')).toMatchObject({ fork: 'init', segno: 0 })
    expect(classifyRelationPath('global/1262')).toEqual({
      kind: 'relation',
      tablespaceOid: null,
      tablespaceVersionDir: null,
      dbOid: null,
      relfilenode: 1262,
      fork: 'main',
      segno: 0,
      incremental: false,
    })
    expect(classifyRelationPath('pg_tblspc/16385/PG_17_202406281/5/16390.1')).toEqual({
      kind: 'relation',
      tablespaceOid: 16385,
      tablespaceVersionDir: 'PG_17_202406281',
      dbOid: 5,
      relfilenode: 16390,
      fork: 'main',
      segno: 1,
      incremental: false,
    })
    expect(classifyRelationPath('base/5/INCREMENTAL.16390')).toMatchObject({ relfilenode: 16390, incremental: true })
    expect(classifyRelationPath('base/5/INCREMENTAL.16390_vm.3')).toMatchObject({ fork: 'vm', segno: 3, incremental: true })
    expect(classifyRelationPath('./base/5/16384')).toMatchObject({ kind: 'relation' })
    expect(classifyRelationPath('base/1/4294967295')).toMatchObject({ relfilenode: 4294967295 })
  })

  it('treats temporary relations, special files and malformed names as other', () => {
    for (const p of [
      'base/5/t3_16384',
      'base/5/t3_16384_fsm',
      'base/5/pg_filenode.map',
      'base/5/pg_internal.init',
      'base/5/PG_VERSION',
      'global/pg_control',
      'global/pg_filenode.map',
      'base/5/016384',
      'base/5/16384.0',
      'base/5/16384.01',
      'base/5/16384_main',
      'base/5/16384_vm_fsm',
      'base/5/16384.1.2',
      'base/5/4294967296',
      'base/05/16384',
      'base/0/16384',
      'base/5/sub/16384',
      'base/16384',
      'pg_tblspc/16385/5/16390',
      'pg_tblspc/16385/PG_17_202406281/16390',
      'pg_tblspc/16385/PG_17/5/16390',
      'pg_wal/000000010000000000000003',
      'pg_xact/0000',
      '16384',
      'base/5/INCREMENTAL.t3_16384',
      'base/5/INCREMENTAL.',
      'base/5/incremental.16384',
    ]) {
      expect(classifyRelationPath(p), p).toEqual({ kind: 'other' })
    }
  })

  it('agrees with the server on real manifests', () => {
    const rel = keyValues('relation-15.txt')
    const m15 = parseServerManifest(fixture('backup_manifest-15.gz'))
    const heap = classifyRelationPath(need(rel, 'heap_path'))
    expect(heap).toEqual({
      kind: 'relation',
      tablespaceOid: Number(need(rel, 'ts_oid')),
      tablespaceVersionDir: need(facts(15), 'tablespace_dir'),
      dbOid: Number(need(rel, 'db_oid')),
      relfilenode: Number(need(rel, 'heap_path').split('/').pop()),
      fork: 'main',
      segno: 0,
      incremental: false,
    })
    expect(classifyRelationPath(need(rel, 'index_path'))).toMatchObject({ kind: 'relation', tablespaceOid: null, dbOid: 1 })
    const kinds = new Map<string, number>()
    for (const f of m15.files) {
      const c = classifyRelationPath(f.path)
      const key = c.kind === 'relation' ? `${c.tablespaceOid === null ? (c.dbOid === null ? 'global' : 'base') : 'tblspc'}` : 'other'
      kinds.set(key, (kinds.get(key) ?? 0) + 1)
      // Relation files hold whole pages; everything else is a known non-relation kind.
      if (c.kind === 'relation') expect(f.size % 8192, f.path).toBe(0)
      else expect(f.path, f.path).toMatch(/^(?!base\/\d+\/\d+|global\/\d+)/)
    }
    expect(kinds.get('global')).toBeGreaterThan(20)
    expect(kinds.get('base')).toBeGreaterThan(200)
    expect(kinds.get('tblspc')).toBeGreaterThanOrEqual(4)
    // In a 17 incremental backup every INCREMENTAL.* file is a relation file and flagged as such.
    const m17 = parseServerManifest(fixture('backup_manifest-17-incremental.gz'))
    const incremental = m17.files.filter((f) => f.path.includes('INCREMENTAL.'))
    expect(incremental.length).toBeGreaterThan(100)
    for (const f of incremental) expect(classifyRelationPath(f.path), f.path).toMatchObject({ kind: 'relation', incremental: true })
  })
})

describe('block numbers and names', () => {
  it('computes the first block of a segment', () => {
    expect(blockNumberBase(0)).toBe(0)
    expect(blockNumberBase(1)).toBe(131072)
    expect(blockNumberBase(3, 1024)).toBe(3072)
  })

  it('formats relation file names', () => {
    expect(relationFileName(16384)).toBe('16384')
    expect(relationFileName(16384, 'vm', 2)).toBe('16384_vm.2')
    expect(relationFileName(16390, 'main', 0, true)).toBe('INCREMENTAL.16390')
    for (const name of ['16384', '16384_fsm', '16384_vm.2', '16384.7', 'INCREMENTAL.16384_init']) {
      const c = classifyRelationPath(`base/1/${name}`)
      if (c.kind !== 'relation') throw new Error(name)
      expect(relationFileName(c.relfilenode, c.fork, c.segno, c.incremental)).toBe(name)
    }
  })
})

describe('tablespace archive members', () => {
  it('maps <oid>.tar member names to data-directory paths and back', () => {
    expect(tablespaceMemberToDataDirPath(16385, 'PG_17_202406281/5/16390')).toBe('pg_tblspc/16385/PG_17_202406281/5/16390')
    expect(tablespaceMemberToDataDirPath(16385, 'PG_17_202406281/')).toBe('pg_tblspc/16385/PG_17_202406281')
    expect(tablespaceMemberToDataDirPath(16385, './PG_17_202406281/5/')).toBe('pg_tblspc/16385/PG_17_202406281/5')
    expect(dataDirPathToTablespaceMember('pg_tblspc/16385/PG_17_202406281/5/16390')).toEqual({
      tablespaceOid: 16385,
      memberName: 'PG_17_202406281/5/16390',
    })
    expect(dataDirPathToTablespaceMember('base/5/16390')).toBeUndefined()
    expect(dataDirPathToTablespaceMember('pg_tblspc/16385')).toBeUndefined()
    for (const bad of ['5/16390', 'PG_17_202406281/../x', '../PG_17_202406281', '', 'PG_17_202406281//x']) {
      expect(() => tablespaceMemberToDataDirPath(16385, bad), bad).toThrow(FormatError)
    }
    expect(() => tablespaceMemberToDataDirPath(0, 'PG_17_202406281/5')).toThrow(FormatError)
  })

  it('maps every tablespace path of a real manifest', () => {
    const m15 = parseServerManifest(fixture('backup_manifest-15.gz'))
    const spc = Number(need(keyValues('relation-15.txt'), 'ts_oid'))
    const inTablespace = m15.files.filter((f) => f.path.startsWith('pg_tblspc/'))
    expect(inTablespace.length).toBeGreaterThan(0)
    for (const f of inTablespace) {
      const member = dataDirPathToTablespaceMember(f.path)
      expect(member?.tablespaceOid).toBe(spc)
      expect(member!.memberName.startsWith(`${need(facts(15), 'tablespace_dir')}/`)).toBe(true)
      expect(tablespaceMemberToDataDirPath(spc, member!.memberName)).toBe(f.path)
    }
  })
})
