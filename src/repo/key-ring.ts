// The key objects of an encrypted repository (`keys/<id>`): each wraps the one master key with a passphrase
// (scrypt, then AES-256-GCM; docs/repository-format.md §4). Unlocking tries every key object; changing a
// passphrase writes a new key object before it removes the old one, so no data is ever rewritten.

import { NotFoundError, PassphraseError, RepoFormatError, UsageError } from '../errors.js'
import type { Storage } from '../storage/storage.js'
import type { RepoConfig } from './config.js'
import {
  createKeyFile,
  deriveRepoKeys,
  newMasterKey,
  parseKeyFile,
  sha256,
  sha256Hex,
  unwrapKeyFile,
  type KeyFile,
  type RepoKeys,
  type ScryptParams,
} from './crypto.js'
import { keyFileKey, KEYS_PREFIX } from './layout.js'
import { isAlreadyExists, isNotFound, readObject } from './storage-io.js'

export const PASSPHRASE_HINT = 'check PGKEEP_PASSPHRASE or --passphrase-file'

/** An open repository's key material: never leaves repo/. */
export interface UnlockedKey {
  readonly keys: RepoKeys
  readonly masterKey: Buffer
  /** The key object this session was opened with. */
  keyId: string
}

/**
 * The key objects in storage with their bytes (those removed between listing and reading are skipped: a passphrase
 * change); `intact` when the bytes hash to the object's name.
 */
async function* keyObjects(storage: Storage, signal?: AbortSignal): AsyncGenerator<{ keyId: string; name: string; bytes: Buffer; intact: boolean }> {
  for await (const obj of storage.list(KEYS_PREFIX, { signal })) {
    const keyId = obj.key.slice(KEYS_PREFIX.length)
    let bytes: Buffer
    try {
      bytes = await readObject(storage, obj.key, { signal })
    } catch (err) {
      if (isNotFound(err)) continue
      throw err
    }
    yield { keyId, name: obj.key, bytes, intact: sha256Hex(bytes) === keyId }
  }
}

/** Makes a new master key wrapped by `passphrase` and writes its key object (for init). */
export async function createFirstKey(
  storage: Storage,
  repoId: string,
  configBytes: Buffer,
  passphrase: string,
  scrypt: ScryptParams | undefined,
  signal?: AbortSignal,
): Promise<UnlockedKey> {
  assertPassphrase(passphrase, 'an encrypted repository needs a non-empty passphrase')
  const masterKey = newMasterKey()
  const bytes = await createKeyFile(masterKey, configBytes, repoId, passphrase, scrypt)
  const keyId = sha256Hex(bytes)
  await storage.write(keyFileKey(keyId), bytes, { ifAbsent: true, collisionFree: true, signal })
  return { keys: deriveRepoKeys(masterKey), masterKey, keyId }
}

/**
 * Opens the master key with `passphrase`, trying every key object. Damaged or unknown key objects are skipped
 * (verify reports them; another key may still open).
 * @throws PassphraseError when none opens; RepoFormatError when there is no readable key object, or the config
 *   does not match the key that opened
 */
export async function unlock(
  storage: Storage,
  config: RepoConfig,
  configBytes: Buffer,
  passphrase: string | undefined,
  signal?: AbortSignal,
): Promise<UnlockedKey> {
  if (passphrase === undefined || passphrase === '') {
    throw new PassphraseError(`repository '${storage.name}' is encrypted and no passphrase was given`, { hint: PASSPHRASE_HINT })
  }
  let tried = 0
  for await (const { keyId, name, bytes, intact } of keyObjects(storage, signal)) {
    if (!intact) continue
    let file: KeyFile
    try {
      file = parseKeyFile(bytes, name)
    } catch {
      continue
    }
    tried++
    const result = await unwrapKeyFile(file, config.id, passphrase)
    if (!result.ok) continue
    if (!result.configHash.equals(sha256(configBytes))) {
      throw new RepoFormatError(`the config object of repository '${storage.name}' does not match its key '${name}'`, {
        hint: 'the config object was altered or replaced; do not write to this repository',
      })
    }
    return { keys: deriveRepoKeys(result.masterKey), masterKey: result.masterKey, keyId }
  }
  if (tried === 0) {
    throw new RepoFormatError(`repository '${storage.name}' is encrypted but has no readable key object`, {
      hint: 'its keys/ objects are missing or damaged; the data cannot be decrypted without one',
    })
  }
  throw new PassphraseError(`wrong passphrase for repository '${storage.name}'`, { hint: PASSPHRASE_HINT })
}

/**
 * Replaces the passphrase the session was opened with: writes a new key object wrapping the same master key, then
 * removes the old one. A crash in between leaves both passphrases working.
 */
export async function changePassphrase(
  storage: Storage,
  config: RepoConfig,
  configBytes: Buffer,
  unlocked: UnlockedKey | undefined,
  newPassphrase: string,
  o: { signal?: AbortSignal; scrypt?: ScryptParams } = {},
): Promise<{ keyId: string; removedKeyId: string }> {
  if (!unlocked) throw notEncrypted(storage, 'change')
  const { keyId } = await addKey(storage, config, configBytes, unlocked, newPassphrase, o)
  const removedKeyId = unlocked.keyId
  // Empty when this session removed its own key already (removeKey with force): nothing left to replace.
  if (removedKeyId !== '') await storage.remove(keyFileKey(removedKeyId), { signal: o.signal })
  unlocked.keyId = keyId
  return { keyId, removedKeyId }
}

/** A key object, as `pgkeep key list` shows it. */
export interface KeyInfo {
  /** The object's id (SHA-256 of its bytes): `keys/<id>`. */
  readonly id: string
  /** When it was written (ISO 8601, the writer's clock), or null when the object cannot be read. */
  readonly createdAt: string | null
  /** Its scrypt cost, or null when the object cannot be read. */
  readonly scrypt: ScryptParams | null
  /** True for the key object this session's passphrase opened. */
  readonly current: boolean
  /** Why the object cannot open the repository with any passphrase (damaged, unknown version); absent when readable. */
  readonly problem?: string
}

/** Every key object of the repository, sorted by creation time (unreadable ones last). Reads only. */
export async function listKeyObjects(storage: Storage, unlocked: UnlockedKey | undefined, signal?: AbortSignal): Promise<KeyInfo[]> {
  const out: KeyInfo[] = []
  for await (const { keyId: id, name, bytes, intact } of keyObjects(storage, signal)) {
    const current = id === unlocked?.keyId
    const unreadable = (problem: string): KeyInfo => ({ id, createdAt: null, scrypt: null, current, problem })
    if (!intact) {
      out.push(unreadable('its content does not match its name (damaged)'))
      continue
    }
    try {
      const f = parseKeyFile(bytes, name)
      out.push({ id, createdAt: typeof f.createdAt === 'string' ? f.createdAt : null, scrypt: { N: f.kdf.N, r: f.kdf.r, p: f.kdf.p }, current })
    } catch (err) {
      out.push(unreadable((err as Error).message))
    }
  }
  const rank = (k: KeyInfo) => (k.problem === undefined ? 0 : 1)
  return out.sort((a, b) => rank(a) - rank(b) || (a.createdAt ?? '').localeCompare(b.createdAt ?? '') || a.id.localeCompare(b.id))
}

/**
 * Adds a passphrase: writes a new key object wrapping the same master key. Every existing passphrase keeps working;
 * no other object changes.
 */
export async function addKey(
  storage: Storage,
  config: RepoConfig,
  configBytes: Buffer,
  unlocked: UnlockedKey | undefined,
  newPassphrase: string,
  o: { signal?: AbortSignal; scrypt?: ScryptParams } = {},
): Promise<{ keyId: string }> {
  if (!unlocked) throw notEncrypted(storage, 'add')
  assertPassphrase(newPassphrase, 'the new passphrase is empty')
  const bytes = await createKeyFile(unlocked.masterKey, configBytes, config.id, newPassphrase, o.scrypt ?? config.encryption!.kdf)
  const keyId = sha256Hex(bytes)
  await storage.write(keyFileKey(keyId), bytes, { ifAbsent: true, collisionFree: true, signal: o.signal })
  return { keyId }
}

/** Key ids given on a command line: the whole id, or a prefix of at least this many hex digits that names one key. */
const MIN_KEY_ID_PREFIX = 8

/**
 * Removes a key object (a passphrase). Refused, whatever `force` says, when no other readable key object would be
 * left: that would make the repository unreadable forever. Refused without `force` for the key this session
 * opened with (only the passphrase of another key would open the repository afterwards: `key passwd` replaces a
 * passphrase safely). Two removals racing could each leave the other's key as the last one: after removing, the
 * key objects are listed again and, if none readable is left, the removed object is written back (its name is its
 * hash, so the same object returns) and the removal fails.
 * @param keyId the whole id, or a unique prefix of at least 8 hex digits
 * @throws NotFoundError for an unknown id; UsageError for an ambiguous prefix or a refused removal
 */
export async function removeKey(
  storage: Storage,
  unlocked: UnlockedKey | undefined,
  keyId: string,
  o: { force?: boolean; signal?: AbortSignal } = {},
): Promise<{ removedKeyId: string }> {
  if (!unlocked) throw notEncrypted(storage, 'remove')
  const signal = o.signal
  const keys = await listKeyObjects(storage, unlocked, signal)
  const victim = resolveKeyId(storage, keys, keyId)
  if (!keys.some((k) => k.id !== victim.id && k.problem === undefined)) {
    throw new UsageError(
      `key '${victim.id}' is the last readable key of repository '${storage.name}': removing it would make the repository unreadable forever`,
      {
        hint: "add another passphrase first ('pgkeep key add'), or replace this one with 'pgkeep key passwd'",
      },
    )
  }
  if (victim.current && !o.force) {
    throw new UsageError(`key '${victim.id}' is the one this passphrase opened`, {
      hint: "to replace this passphrase use 'pgkeep key passwd'; to remove it anyway, when you know the passphrase of another key, add --force",
    })
  }
  const name = keyFileKey(victim.id)
  let bytes: Buffer
  try {
    bytes = await readObject(storage, name, { signal })
  } catch (err) {
    if (isNotFound(err)) throw new NotFoundError(`key '${victim.id}' was removed meanwhile`, { cause: err })
    throw err
  }
  await storage.remove(name, { signal })
  const left = (await listKeyObjects(storage, unlocked, signal)).filter((k) => k.problem === undefined)
  if (left.length === 0) {
    await storage.write(name, bytes, { ifAbsent: true, collisionFree: true, signal }).catch((err) => {
      if (!isAlreadyExists(err)) throw err
    })
    throw new UsageError(`key '${victim.id}' was kept: another key was removed at the same time, and it would have been the last one`, {
      hint: "list the keys with 'pgkeep key list' and try again",
    })
  }
  if (victim.current) unlocked.keyId = ''
  return { removedKeyId: victim.id }
}

/** The key object `idOrPrefix` names among `keys`. */
function resolveKeyId(storage: Storage, keys: readonly KeyInfo[], idOrPrefix: string): KeyInfo {
  const text = idOrPrefix.toLowerCase()
  if (!/^[0-9a-f]{1,64}$/.test(text) || text.length < MIN_KEY_ID_PREFIX) {
    throw new UsageError(`invalid key id '${idOrPrefix}'`, {
      hint: `give the key's id as 'pgkeep key list' shows it (at least its first ${MIN_KEY_ID_PREFIX} hex digits)`,
    })
  }
  const matches = keys.filter((k) => k.id.startsWith(text))
  if (matches.length === 1) return matches[0]!
  if (matches.length > 1) {
    throw new UsageError(`key id '${idOrPrefix}' names ${matches.length} keys of repository '${storage.name}'`, { hint: 'give more of its hex digits' })
  }
  throw new NotFoundError(`repository '${storage.name}' has no key '${idOrPrefix}'`, { hint: "'pgkeep key list' lists the keys" })
}

function notEncrypted(storage: Storage, what: string): UsageError {
  return new UsageError(`repository '${storage.name}' is not encrypted: it has no passphrase to ${what}`, {
    hint: 'only an encrypted repository has keys (pgkeep init --encrypt)',
  })
}

function assertPassphrase(passphrase: unknown, message: string): void {
  if (typeof passphrase !== 'string' || passphrase.length === 0) throw new PassphraseError(message, { hint: PASSPHRASE_HINT })
}
