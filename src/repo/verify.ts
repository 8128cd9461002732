// Repository verification (restic's `check`): the structure (keys, index objects ↔ pack headers, records and the
// blobs they reference) and, on request, the data (whole packs re-hashed, every blob decrypted, decompressed and
// re-hashed; or a random sample of whole packs). Every problem names the damaged object.

import { isPgkeepError } from '../errors.js'
import { BlobCodec } from './blob.js'
import { parseKeyFile, sha256Hex } from './crypto.js'
import { decodeIndex, type IndexContent } from './index-file.js'
import { INDEX_PREFIX, indexIdOfKey, indexKey, KEYS_PREFIX, packIdOfKey, packKey, PACKS_PREFIX, RECORDS_PREFIX } from './layout.js'
import type { PackEntry } from './pack-format.js'
import { decodeWholePackHeader, readPackBytes, readPackHeader } from './pack-reader.js'
import { OperationEvents, type OperationOptions } from '../events.js'
import type { Repository } from './repository.js'
import { forEachConcurrent, isNotFound, readObject } from './storage-io.js'

/**
 * Options of {@link verifyRepository}. Progress phases: `keys`, `packs`, `index`, `records`, `references`; items are
 * the objects of the phase checked so far.
 */
export interface VerifyOptions extends OperationOptions {
  /** Also read data: `true` reads every pack; a number reads that percentage of packs (whole packs, at random). */
  readData?: boolean | number
  /** Blob ids referenced by the layers above (backup manifests, WAL catalog); each must be indexed. */
  referencedBlobs?: Iterable<string> | AsyncIterable<string>
  /** Packs checked at once (default 4 for headers, 2 when reading data). */
  concurrency?: number
}

export interface VerifyProblem {
  /** The damaged or missing object's key, e.g. `packs/ab/ab12…`, or `blob <id>` for a missing blob. */
  readonly object: string
  readonly message: string
}

export interface VerifyStats {
  keyObjects: number
  indexObjects: number
  packs: number
  /** Packs that no index object lists (left by a crash before their index was written; GC removes them). */
  unindexedPacks: number
  indexedBlobs: number
  /** Extra copies of blobs stored twice (concurrent writers); harmless, GC removes them. */
  duplicateBlobs: number
  records: number
  referencedBlobs: number
  packsRead: number
  blobsRead: number
  bytesRead: number
}

export interface VerifyResult {
  readonly ok: boolean
  readonly problems: readonly VerifyProblem[]
  readonly stats: VerifyStats
}

function sameEntry(a: PackEntry, b: PackEntry): boolean {
  return (
    a.type === b.type &&
    a.flags === b.flags &&
    a.offset === b.offset &&
    a.storedLength === b.storedLength &&
    a.plainLength === b.plainLength &&
    a.id.equals(b.id)
  )
}

/** Picks `percent` % of `items` at random (at least one when percent > 0 and items exist). */
function sample<T>(items: readonly T[], percent: number): Set<T> {
  if (percent >= 100) return new Set(items)
  if (percent <= 0 || items.length === 0) return new Set()
  const want = Math.max(1, Math.round((items.length * percent) / 100))
  const pool = [...items]
  for (let i = 0; i < want; i++) {
    const j = i + Math.floor(Math.random() * (pool.length - i))
    ;[pool[i], pool[j]] = [pool[j]!, pool[i]!]
  }
  return new Set(pool.slice(0, want))
}

/**
 * Checks `repo` and returns every problem found (it does not stop at the first). `ok` is true when there are none.
 * Only I/O failures of the storage itself (and aborts) reject.
 */
export async function verifyRepository(repo: Repository, o: VerifyOptions = {}): Promise<VerifyResult> {
  // The packs listed first are read later: garbage collection must not delete any of them meanwhile.
  const release = repo.holdPacks()
  try {
    return await verify(repo, o)
  } finally {
    release()
  }
}

async function verify(repo: Repository, o: VerifyOptions): Promise<VerifyResult> {
  const { storage } = repo
  const signal = o.signal
  const keys = repo.keys
  const problems: VerifyProblem[] = []
  // Writers beside verify (a backup, `wal stream`) write packs, then the index objects that list them, then records
  // that reference their blobs (§11). So verify lists in the opposite order, each listing taken before anything is
  // checked: records, then index objects, then packs. Every record listed references blobs of index objects written
  // before it, which the index refreshed after these listings holds; every index object listed names packs
  // written before it, which the packs' listing holds. What is written later is simply not looked at, and never
  // reported missing. (Garbage collection deletes no pack meanwhile: this instance acknowledges nothing.)
  const recordKeys: string[] = []
  for await (const obj of storage.list(RECORDS_PREFIX, { signal })) recordKeys.push(obj.key)
  const indexIds: string[] = []
  for await (const obj of storage.list(INDEX_PREFIX, { signal })) {
    const id = indexIdOfKey(obj.key)
    if (id !== undefined) indexIds.push(id)
  }
  await repo.refreshIndex({ signal })
  const packSizes = new Map<string, number>()
  for await (const obj of storage.list(PACKS_PREFIX, { signal })) {
    const id = packIdOfKey(obj.key)
    if (id !== undefined) packSizes.set(id, obj.sizeBytes)
  }
  const stats: VerifyStats = {
    keyObjects: 0,
    indexObjects: 0,
    packs: 0,
    unindexedPacks: 0,
    indexedBlobs: repo.indexStats.blobs,
    duplicateBlobs: 0,
    records: 0,
    referencedBlobs: 0,
    packsRead: 0,
    blobsRead: 0,
    bytesRead: 0,
  }
  const problem = (object: string, err: unknown) => {
    if (signal?.aborted) throw signal.reason
    // Only our own integrity/format/not-found findings are problems; storage and programming errors propagate.
    if (!isPgkeepError(err) || !['INTEGRITY', 'NOT_FOUND', 'REPO_FORMAT'].includes(err.code)) throw err
    problems.push({ object, message: err.message })
  }
  const events = new OperationEvents('verify', o.onEvent)
  let phase = ''
  const progress = (name: 'keys' | 'index' | 'packs' | 'records' | 'references', done: number, total: number) => {
    if (name !== phase) events.phase((phase = name), { bytesDone: 0, bytesTotal: null, itemsDone: done, itemsTotal: total })
    else events.progress({ bytesDone: 0, bytesTotal: null, itemsDone: done, itemsTotal: total })
  }

  // Keys: each is named by its hash and parses (opening them needs their passphrases).
  if (repo.config.encryption) {
    for await (const obj of storage.list(KEYS_PREFIX, { signal })) {
      stats.keyObjects++
      try {
        const bytes = await readObject(storage, obj.key, { signal })
        if (sha256Hex(bytes) !== obj.key.slice(KEYS_PREFIX.length)) {
          problems.push({ object: obj.key, message: `key object '${obj.key}' does not match its name` })
        } else parseKeyFile(bytes, obj.key)
      } catch (err) {
        problem(obj.key, err)
      }
    }
    progress('keys', stats.keyObjects, stats.keyObjects)
  }

  stats.packs = packSizes.size
  const percent = o.readData === true ? 100 : typeof o.readData === 'number' ? o.readData : 0
  const toRead = sample([...packSizes.keys()], percent)
  const concurrency = o.concurrency ?? (percent > 0 ? 2 : 4)
  const codec = new BlobCodec(keys, undefined)
  const indexedPacks = new Set<string>()
  const checkedPacks = new Map<string, PackEntry[] | undefined>() // pack id → header entries (undefined: damaged)
  let packsDone = 0

  /** Reads one pack (whole when sampled), verifies it, and returns its header entries, or undefined if damaged. */
  const checkPack = async (packId: string): Promise<PackEntry[] | undefined> => {
    if (checkedPacks.has(packId)) return checkedPacks.get(packId)
    const name = packKey(packId)
    let entries: PackEntry[] | undefined
    try {
      if (toRead.has(packId)) {
        const bytes = await readPackBytes(storage, packId, { signal })
        stats.packsRead++
        stats.bytesRead += bytes.length
        const actual = sha256Hex(bytes)
        if (actual !== packId) {
          // Keep going: decoding the header and blobs names which blobs the damage hit.
          problems.push({ object: name, message: `pack '${name}' is damaged: its content hash is '${actual}' (${bytes.length} bytes)` })
        }
        entries = decodeWholePackHeader(bytes, packId, keys)
        for (const entry of entries) {
          const id = entry.id.toString('hex')
          try {
            codec.decode(
              bytes.subarray(entry.offset, entry.offset + entry.storedLength),
              entry.flags,
              entry.plainLength,
              entry.id,
              `blob '${id}' in pack '${name}'`,
            )
            stats.blobsRead++
          } catch (err) {
            problem(name, err)
          }
        }
      } else {
        entries = await readPackHeader(storage, packId, keys, { sizeBytes: packSizes.get(packId), signal })
      }
    } catch (err) {
      problem(name, err)
      entries = undefined
    }
    checkedPacks.set(packId, entries)
    progress('packs', ++packsDone, packSizes.size)
    return entries
  }

  // Index objects: each read, verified against its name, and compared with the headers of the packs it lists.
  const blobCopies = { total: 0 }
  let indexDone = 0
  for (const indexId of indexIds) {
    const name = indexKey(indexId)
    let content: IndexContent
    try {
      content = decodeIndex(await readObject(storage, name, { signal }), indexId, name, keys)
    } catch (err) {
      if (isNotFound(err)) continue // removed by a concurrent index rebuild
      problem(name, err)
      continue
    }
    stats.indexObjects++
    await forEachConcurrent(content.packs, concurrency, async ({ packId, entries }) => {
      indexedPacks.add(packId)
      blobCopies.total += entries.length
      if (!packSizes.has(packId)) {
        problems.push({ object: packKey(packId), message: `pack '${packKey(packId)}' listed in index object '${name}' is missing` })
        return
      }
      const header = await checkPack(packId)
      if (!header) return
      const byId = new Map(header.map((e) => [e.id.toString('hex'), e]))
      for (const e of entries) {
        const h = byId.get(e.id.toString('hex'))
        if (!h || !sameEntry(h, e)) {
          problems.push({
            object: name,
            message: `index object '${name}' lists blob '${e.id.toString('hex')}' in pack '${packKey(packId)}' at offset ${e.offset}, but the pack header ${h ? 'places it differently' : 'does not list it'}`,
          })
        }
      }
    })
    progress('index', ++indexDone, indexIds.length)
  }
  stats.duplicateBlobs = Math.max(0, blobCopies.total - stats.indexedBlobs)

  // Packs no index lists: still read when sampled (damage there is damage), counted for GC.
  const unindexed = [...packSizes.keys()].filter((id) => !indexedPacks.has(id))
  stats.unindexedPacks = unindexed.length
  await forEachConcurrent(unindexed, concurrency, async (packId) => {
    if (toRead.has(packId)) await checkPack(packId)
  })

  // Records: each decodes and verifies, and every blob it references is indexed.
  for (const storageKey of recordKeys) {
    const rest = storageKey.slice(RECORDS_PREFIX.length)
    const slash = rest.indexOf('/')
    const kind = rest.slice(0, slash)
    const key = rest.slice(slash + 1)
    try {
      const record = await repo.readRecord(kind, key, { signal })
      stats.records++
      for (const ref of record.blobRefs) {
        stats.referencedBlobs++
        if (!repo.isBlobKnown(ref)) {
          problems.push({ object: storageKey, message: `record '${storageKey}' references blob '${ref}', which is not in the index` })
        }
      }
    } catch (err) {
      if (isNotFound(err) && !(await storage.stat(storageKey, { signal }))) continue // removed meanwhile
      problem(storageKey, err)
    }
    progress('records', stats.records, recordKeys.length)
  }

  // References from the layers above.
  if (o.referencedBlobs) {
    let n = 0
    for await (const ref of o.referencedBlobs as AsyncIterable<string>) {
      stats.referencedBlobs++
      if (!/^[0-9a-f]{64}$/.test(ref) || !repo.isBlobKnown(ref)) {
        problems.push({ object: `blob ${ref}`, message: `referenced blob '${ref}' is not in the index` })
      }
      if (++n % 1000 === 0) progress('references', n, n)
    }
  }
  return { ok: problems.length === 0, problems, stats }
}
