// The key objects of an encrypted repository (`keys/<id>`): each wraps the one master key with a passphrase
// (scrypt, then AES-256-GCM; docs/repository-format.md §4). Unlocking tries every key object; changing a
// passphrase writes a new key object before it removes the old one, so no data is ever rewritten.

import { PassphraseError, RepoFormatError, UsageError } from '../errors.js'
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
import { isNotFound, readObject } from './storage-io.js'

export const PASSPHRASE_HINT = 'check PGKEEP_PASSPHRASE or --passphrase-file'

/** An open repository's key material: never leaves repo/. */
export interface UnlockedKey {
  readonly keys: RepoKeys
  readonly masterKey: Buffer
  /** The key object this session was opened with. */
  keyId: string
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
  for await (const obj of storage.list(KEYS_PREFIX, { signal })) {
    const keyId = obj.key.slice(KEYS_PREFIX.length)
    let bytes: Buffer
    try {
      bytes = await readObject(storage, obj.key, { signal })
    } catch (err) {
      if (isNotFound(err)) continue // removed by a passphrase change meanwhile
      throw err
    }
    if (sha256Hex(bytes) !== keyId) continue
    let file: KeyFile
    try {
      file = parseKeyFile(bytes, obj.key)
    } catch {
      continue
    }
    tried++
    const result = await unwrapKeyFile(file, config.id, passphrase)
    if (!result.ok) continue
    if (!result.configHash.equals(sha256(configBytes))) {
      throw new RepoFormatError(`the config object of repository '${storage.name}' does not match its key '${obj.key}'`, {
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
  if (!unlocked) throw new UsageError(`repository '${storage.name}' is not encrypted; it has no passphrase to change`)
  assertPassphrase(newPassphrase, 'the new passphrase is empty')
  const bytes = await createKeyFile(unlocked.masterKey, configBytes, config.id, newPassphrase, o.scrypt ?? config.encryption!.kdf)
  const keyId = sha256Hex(bytes)
  await storage.write(keyFileKey(keyId), bytes, { ifAbsent: true, collisionFree: true, signal: o.signal })
  const removedKeyId = unlocked.keyId
  await storage.remove(keyFileKey(removedKeyId), { signal: o.signal })
  unlocked.keyId = keyId
  return { keyId, removedKeyId }
}

function assertPassphrase(passphrase: unknown, message: string): void {
  if (typeof passphrase !== 'string' || passphrase.length === 0) throw new PassphraseError(message, { hint: PASSPHRASE_HINT })
}
