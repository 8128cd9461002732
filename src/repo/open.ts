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
 * Packs sealed and not yet durable at once, by default: each holds its buffer (the pack target size, 8 MiB by
 * default). One on local storage, where a pack is written and synced well before the next one fills (16 MiB packs,
 * a backup of 700 MB, 3 alternating runs: peak RSS 188-196 MB against 218-220 MB with two, wall 3.71-3.84 s against
 * 3.67-4.20 s); two on an object store, where an upload takes longer and its latency must not hold the backup up.
 */
function defaultMaxPackUploads(storage: Storage): number {
  return storage.features.remote ? 2 : 1
}

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
   * Packs sealed and not yet durable at most (default: 1 on local storage, 2 on an object store); memory is about
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
  return new Repository({ storage, config, configBytes, unlocked, maxPackUploads: defaultMaxPackUploads(storage) })
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
    maxPackUploads: o.maxPackUploads ?? defaultMaxPackUploads(storage),
    indexTypes: o.index === 'meta' ? new Set(['meta']) : undefined,
  })
  await repo.refreshIndex({ signal })
  return repo
}
