// Index objects (`index/<id>`): immutable lists of packs and the blobs each holds, written after the packs they
// describe are durable. Binary, sealed when the repository is encrypted, named by the SHA-256 of the stored bytes
// (docs/repository-format.md §6 is normative).

import { IntegrityError } from '../errors.js'
import { seal, sha256Hex, unseal, type RepoKeys } from './crypto.js'
import { ENTRY_BYTES, readEntry, writeEntry, type PackEntry } from './pack-format.js'

const INDEX_MAGIC = Buffer.from('PKIX', 'latin1')
const INDEX_VERSION = 1

/** Packs of an index object and the blobs in each. */
export interface IndexPack {
  readonly packId: string
  readonly entries: readonly PackEntry[]
}

export interface IndexContent {
  /** Index objects this one replaces (written by rebuild or compaction); readers may ignore those. */
  readonly supersedes: readonly string[]
  readonly packs: readonly IndexPack[]
}

/** At most this many blob entries per index object (~3 MiB), so one index object is cheap to load and rewrite. */
export const MAX_INDEX_ENTRIES = 65536

/** Encodes an index object; returns its id (SHA-256 of the stored bytes) and those bytes. */
export function encodeIndex(content: IndexContent, keys: RepoKeys | undefined): { id: string; bytes: Buffer } {
  const entryCount = content.packs.reduce((n, p) => n + p.entries.length, 0)
  const size = 8 + 4 + content.supersedes.length * 32 + 4 + content.packs.length * 36 + entryCount * ENTRY_BYTES
  const plain = Buffer.alloc(size)
  INDEX_MAGIC.copy(plain, 0)
  plain[4] = INDEX_VERSION
  let at = 8
  plain.writeUInt32LE(content.supersedes.length, at)
  at += 4
  for (const id of content.supersedes) {
    plain.write(id, at, 32, 'hex')
    at += 32
  }
  plain.writeUInt32LE(content.packs.length, at)
  at += 4
  for (const p of content.packs) {
    plain.write(p.packId, at, 32, 'hex')
    plain.writeUInt32LE(p.entries.length, at + 32)
    at += 36
    for (const e of p.entries) {
      writeEntry(plain, at, e)
      at += ENTRY_BYTES
    }
  }
  const bytes = keys ? seal(keys.dataKey, plain) : plain
  return { id: sha256Hex(bytes), bytes }
}

/**
 * Decodes an index object read from `name`, whose id is `id`: checks the name against the content hash, then
 * authenticates (encrypted) and parses. Any failure is an IntegrityError naming the object.
 */
export function decodeIndex(bytes: Buffer, id: string, name: string, keys: RepoKeys | undefined): IndexContent {
  const fail = (why: string) =>
    new IntegrityError(`index object '${name}' is damaged: ${why}`, {
      hint: "run 'pgkeep verify' for the full list, then rebuild the index from the packs",
    })
  const actual = sha256Hex(bytes)
  if (actual !== id) throw fail(`its content hash is '${actual}'`)
  let plain: Buffer = bytes
  if (keys) {
    const opened = unseal(keys.dataKey, bytes)
    if (!opened) throw fail('it fails authentication')
    plain = opened
  }
  if (plain.length < 16 || !plain.subarray(0, 4).equals(INDEX_MAGIC)) throw fail('bad magic')
  if (plain[4] !== INDEX_VERSION) throw fail(`unknown version ${plain[4]}`)
  let at = 8
  const need = (n: number) => {
    if (at + n > plain.length) throw fail('it is truncated')
  }
  need(4)
  const supersedeCount = plain.readUInt32LE(at)
  at += 4
  need(supersedeCount * 32)
  const supersedes: string[] = []
  for (let i = 0; i < supersedeCount; i++, at += 32) supersedes.push(plain.toString('hex', at, at + 32))
  need(4)
  const packCount = plain.readUInt32LE(at)
  at += 4
  const packs: IndexPack[] = []
  for (let p = 0; p < packCount; p++) {
    need(36)
    const packId = plain.toString('hex', at, at + 32)
    const count = plain.readUInt32LE(at + 32)
    at += 36
    need(count * ENTRY_BYTES)
    const entries: PackEntry[] = []
    for (let i = 0; i < count; i++, at += ENTRY_BYTES) {
      const e = readEntry(plain, at)
      if (typeof e === 'string') throw fail(`pack '${packId}' entry ${i}: ${e}`)
      entries.push(e)
    }
    packs.push({ packId, entries })
  }
  if (at !== plain.length) throw fail(`${plain.length - at} trailing bytes`)
  return { supersedes, packs }
}
