// Creating and opening repositories: `init` writes the key object (encrypted repositories) and then `config`, the
// object whose existence makes a location a repository (invariant 9: nothing else creates one); `open` reads the
// config, unlocks the master key, and loads the index (docs/repository-format.md §2–§4).

import { randomBytes } from 'node:crypto'
import { AlreadyExistsError, RepoFormatError, UsageError } from '../errors.js'
import { probeConditionalWriteOf, withCheckedIfAbsent } from '../storage/if-absent.js'
import type { ConditionalWriteSupport, Storage } from '../storage/storage.js'
import { conditionalWriteOf, decodeConfig, encodeConfig, newConfig, notARepository } from './config.js'
import type { ScryptParams } from './crypto.js'
import { createFirstKey, unlock, type UnlockedKey } from './key-ring.js'
import { CONFIG_KEY, INDEX_PREFIX, keyFileKey, KEYS_PREFIX, PACKS_PREFIX, probeKey, RECORDS_PREFIX } from './layout.js'
import { Repository } from './repository.js'
import { isAlreadyExists, isNotFound, readObject } from './storage-io.js'

/**
 * Packs sealed and not yet durable at once: each holds its buffer (the pack target size, 8 MiB by default). Two, on
 * local storage too. With one, a full backup of the bench data waited for each pack's write and fsync (10-50 ms)
 * while the table of random bytes streamed in (9 windows fill a pack there), both threads idle more than half the
 * time; 3 alternating rounds of one, two and three: 7.30 / 7.57 / 7.96 s, 6.59 / 6.55 / 7.04 s, 6.87 / 6.56 / 6.39 s,
 * peaks 185-187, 188-192, 202-221 MB. (Once, with 16 MiB packs and before windows went to workers, one had peaked
 * 25 MB lower at the same speed.) On an object store an upload takes longer still.
 */
const DEFAULT_MAX_PACK_UPLOADS = 2

export interface InitRepositoryOptions {
  /** Encrypt the repository; the passphrase wraps its master key. */
  encrypt?: { passphrase: string; scrypt?: ScryptParams }
  /** Pack target size in bytes (default 8 MiB: config.ts says why). */
  packTargetBytes?: number
  /** zstd level for blobs and records (default level 1), or 'none'. */
  compression?: { level: number } | 'none'
  signal?: AbortSignal
  /**
   * Things the user should read, said once: a store that does not enforce conditional writes (init found out and
   * recorded it in the config; every writer then uses the check-and-read-back protocol).
   */
  onMessage?: (m: { level: 'info' | 'warning'; text: string }) => void
}

export interface OpenRepositoryOptions {
  /** Required when the repository is encrypted. */
  passphrase?: string
  signal?: AbortSignal
  /**
   * Packs sealed and not yet durable at most (default 2: DEFAULT_MAX_PACK_UPLOADS says why); memory is about
   * (this + 1) × pack size.
   */
  maxPackUploads?: number
  /**
   * Which blobs to load into the in-memory index (about 60 bytes each): `all` (default), or `meta` only, for
   * garbage collection, which reads structure and streams everything else; such an instance cannot store blobs.
   */
  index?: 'all' | 'meta'
}

/** True when the location holds nothing at all: no config and no other object (empty, or not there). */
export async function locationIsEmpty(storage: Storage, signal?: AbortSignal): Promise<boolean> {
  if (await storage.stat(CONFIG_KEY, { signal })) return false
  for await (const _ of storage.list('', { signal })) return false
  return true
}

/**
 * What a user should know about a store that does not enforce conditional writes (`support` is what its probe
 * found), in one sentence.
 */
export function conditionalWriteNotice(location: string, support: Exclude<ConditionalWriteSupport, 'enforced'>): string {
  const how = support === 'unsupported' ? 'answers 501 NotImplemented to' : 'ignores'
  return (
    `'${location}' does not enforce conditional writes (it ${how} If-None-Match: *): pgkeep checks before and reads ` +
    'back after writing the config and each record, which keeps two writers of one record apart unless one of them ' +
    'stalls for a second or more between its check and its write (docs/storage.md, "Stores without conditional writes")'
  )
}

/** `storage` as the repository's writers must use it, given what the store does with conditional writes. */
function storageFor(storage: Storage, support: ConditionalWriteSupport): Storage {
  return support === 'enforced' ? storage : withCheckedIfAbsent(storage)
}

/**
 * Creates a repository in an empty location: finds out whether the store enforces conditional writes (a probe
 * object written and removed), writes the key object (encrypted repositories), then `config`.
 * @throws AlreadyExistsError when the location holds a repository; RepoFormatError when it holds repository
 *   objects but no config (a damaged repository that must not be initialised over)
 */
export async function initRepository(storage: Storage, o: InitRepositoryOptions = {}): Promise<Repository> {
  const signal = o.signal
  if (await storage.stat(CONFIG_KEY, { signal })) {
    throw new AlreadyExistsError(`'${storage.name}' already holds a pgkeep repository`, {
      hint: 'use it as it is, or choose another --repo location',
    })
  }
  // Key objects without a config are left by an interrupted init: harmless (bound to another repository id),
  // so they do not stop a new init. Anything else means a damaged repository that must not be overwritten.
  for (const prefix of [PACKS_PREFIX, INDEX_PREFIX, RECORDS_PREFIX]) {
    for await (const obj of storage.list(prefix, { signal })) {
      throw new RepoFormatError(`'${storage.name}' holds repository objects ('${obj.key}') but no config`, {
        hint: 'this looks like a damaged repository; do not initialise over it, choose another --repo location',
      })
    }
  }
  const conditionalWrite = await probeConditionalWriteOf(storage, probeKey(randomBytes(16).toString('hex')), { signal })
  if (conditionalWrite !== 'enforced') {
    o.onMessage?.({ level: 'warning', text: conditionalWriteNotice(storage.name, conditionalWrite) })
    storage = storageFor(storage, conditionalWrite)
  }
  const id = randomBytes(32).toString('hex')
  const config = newConfig({
    id,
    packTargetBytes: o.packTargetBytes,
    compression: o.compression,
    encrypted: o.encrypt !== undefined,
    scrypt: o.encrypt?.scrypt,
    conditionalWrite,
  })
  const configBytes = encodeConfig(config)
  const unlocked = o.encrypt ? await createFirstKey(storage, id, configBytes, o.encrypt.passphrase, o.encrypt.scrypt, signal) : undefined
  try {
    await storage.write(CONFIG_KEY, configBytes, { ifAbsent: true, signal })
  } catch (err) {
    if (unlocked) await storage.remove(keyFileKey(unlocked.keyId)).catch(() => {})
    if (isAlreadyExists(err)) {
      throw new AlreadyExistsError(`'${storage.name}' already holds a pgkeep repository`, {
        cause: err,
        hint: 'another process initialised it at the same moment; use it as it is',
      })
    }
    throw err
  }
  return new Repository({ storage, config, configBytes, unlocked, maxPackUploads: DEFAULT_MAX_PACK_UPLOADS })
}

/**
 * Opens an existing repository: reads `config`, unlocks the master key with the passphrase when encrypted, and
 * loads every index object. Damaged index objects do not stop the open (verify must be able to report them);
 * they are listed in `damagedIndexObjects` and named by any `readBlob` that misses.
 */
export async function openRepository(storage: Storage, o: OpenRepositoryOptions = {}): Promise<Repository> {
  const signal = o.signal
  let configBytes: Buffer
  try {
    configBytes = await readObject(storage, CONFIG_KEY, { signal })
  } catch (err) {
    if (isNotFound(err)) throw notARepository(storage.name, 'it has no config object', err)
    throw err
  }
  const config = decodeConfig(configBytes, storage.name)
  storage = storageFor(storage, conditionalWriteOf(config))
  let unlocked: UnlockedKey | undefined
  if (config.encryption) {
    unlocked = await unlock(storage, config, configBytes, o.passphrase, signal)
  } else {
    for await (const obj of storage.list(KEYS_PREFIX, { signal })) {
      throw new RepoFormatError(`repository '${storage.name}' is plain by its config but holds key object '${obj.key}'`, {
        hint: 'its config object may have been altered; do not write to it',
      })
    }
  }
  if (o.index !== undefined && o.index !== 'all' && o.index !== 'meta')
    throw new UsageError(`invalid index option '${String(o.index)}'`, { hint: "use 'all' or 'meta'" })
  const repo = new Repository({
    storage,
    config,
    configBytes,
    unlocked,
    maxPackUploads: o.maxPackUploads ?? DEFAULT_MAX_PACK_UPLOADS,
    indexTypes: o.index === 'meta' ? new Set(['meta']) : undefined,
  })
  await repo.refreshIndex({ signal })
  return repo
}
