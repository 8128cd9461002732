// Repository cryptography: the master key and the two keys derived from it (data encryption, keyed blob ids),
// passphrase wrapping of the master key in key objects (scrypt + AES-256-GCM), and sealing of any object or blob
// (AES-256-GCM, `nonce(12) | ciphertext | tag(16)`). docs/repository-format.md §3 and §4 are normative.

import * as nodeCrypto from 'node:crypto'
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, scrypt as scryptCallback, type ScryptOptions } from 'node:crypto'
import { RepoFormatError } from '../errors.js'

/** Bytes of the random master key. */
export const MASTER_KEY_BYTES = 32
export const NONCE_BYTES = 12
export const TAG_BYTES = 16
/** Bytes that sealing adds to a plaintext. */
export const SEAL_OVERHEAD_BYTES = NONCE_BYTES + TAG_BYTES

/** scrypt parameters of one key object. */
export interface ScryptParams {
  readonly N: number
  readonly r: number
  readonly p: number
}

/**
 * Default scrypt cost: N=2^16, r=8, p=1 needs 64 MiB and took 170 ms on the reference machine (2^15: 85 ms), so
 * opening a repository stays well under half a second while a guess costs an attacker the same.
 */
export const DEFAULT_SCRYPT: ScryptParams = { N: 1 << 16, r: 8, p: 1 }

/** The keys every encrypted object and blob id is made with; derived from the master key, never stored. */
export interface RepoKeys {
  /** AES-256-GCM key for blobs, pack headers, index objects and records. */
  readonly dataKey: Buffer
  /** HMAC-SHA-256 key for blob ids, so equal content does not reveal itself across repositories. */
  readonly idKey: Buffer
}

/** Derives the data and id keys from the master key with HKDF-SHA-256 (empty salt, distinct info labels). */
export function deriveRepoKeys(masterKey: Uint8Array): RepoKeys {
  const derive = (info: string) => Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), info, 32))
  return { dataKey: derive('pgkeep data key v1'), idKey: derive('pgkeep blob id key v1') }
}

/** A fresh random master key. */
export function newMasterKey(): Buffer {
  return randomBytes(MASTER_KEY_BYTES)
}

/** Encrypts `plain` with AES-256-GCM under a random 96-bit nonce: returns `nonce | ciphertext | tag`. */
export function seal(key: Uint8Array, plain: Uint8Array, aad?: Uint8Array): Buffer {
  const nonce = randomBytes(NONCE_BYTES)
  const cipher = createCipheriv('aes-256-gcm', key, nonce)
  if (aad) cipher.setAAD(aad)
  const body = cipher.update(plain)
  const final = cipher.final()
  return Buffer.concat([nonce, body, final, cipher.getAuthTag()], NONCE_BYTES + plain.length + TAG_BYTES)
}

/**
 * Decrypts `nonce | ciphertext | tag`. Returns undefined when the bytes are too short or fail authentication
 * (wrong key, damaged or forged bytes); callers turn that into an error naming the object.
 */
export function unseal(key: Uint8Array, sealed: Uint8Array, aad?: Uint8Array): Buffer | undefined {
  if (sealed.length < SEAL_OVERHEAD_BYTES) return undefined
  const nonce = sealed.subarray(0, NONCE_BYTES)
  const tag = sealed.subarray(sealed.length - TAG_BYTES)
  const decipher = createDecipheriv('aes-256-gcm', key, nonce)
  if (aad) decipher.setAAD(aad)
  decipher.setAuthTag(tag)
  const body = decipher.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES))
  try {
    return body.length === 0 ? decipher.final() : Buffer.concat([body, decipher.final()])
  } catch {
    return undefined
  }
}

/** SHA-256 of `bytes` as lowercase hex: the name of packs, index objects and key objects. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/**
 * Node's one-shot digest (20.12 and later; not in the type definitions this project builds with): no Hash object
 * per call, 1.3 us less for an 8 KiB blob, and a restore of many small relations hashes tens of thousands of them.
 */
const oneShotHash = (nodeCrypto as unknown as { hash?: (algorithm: string, data: Uint8Array, encoding: 'buffer') => Buffer }).hash

/** SHA-256 of `bytes` (32 bytes). */
export function sha256(bytes: Uint8Array): Buffer {
  return oneShotHash ? oneShotHash('sha256', bytes, 'buffer') : createHash('sha256').update(bytes).digest()
}

/** The blob id of `plain`: SHA-256, or HMAC-SHA-256 under the id key when the repository is encrypted. */
export function blobIdOf(plain: Uint8Array, keys: RepoKeys | undefined): Buffer {
  return keys ? createHmac('sha256', keys.idKey).update(plain).digest() : sha256(plain)
}

/** What a key object holds (JSON, docs/repository-format.md §4). */
export interface KeyFile {
  readonly version: 1
  readonly createdAt: string
  readonly kdf: { readonly algorithm: 'scrypt'; readonly N: number; readonly r: number; readonly p: number; readonly salt: string }
  readonly wrap: { readonly algorithm: 'aes-256-gcm'; readonly data: string }
}

/** Derives the 32-byte key-encryption key from a passphrase (NFC-normalised UTF-8) with scrypt. */
export function deriveKek(passphrase: string, salt: Uint8Array, params: ScryptParams): Promise<Buffer> {
  const options: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 128 * params.N * params.r * params.p + (32 << 20) }
  return new Promise((resolve, reject) => {
    scryptCallback(Buffer.from(passphrase.normalize('NFC'), 'utf8'), salt, 32, options, (err, key) => (err ? reject(err) : resolve(key)))
  })
}

/** The additional authenticated data of a wrapped master key: binds the key object to its repository. */
function wrapAad(repoId: string): Buffer {
  return Buffer.from(`pgkeep key v1 ${repoId}`, 'utf8')
}

/**
 * Builds a key object: the master key and the SHA-256 of the repository's config bytes, sealed under a key derived
 * from `passphrase`. Returns the object's bytes (UTF-8 JSON); its name is `keys/<sha256 of those bytes>`.
 */
export async function createKeyFile(
  masterKey: Uint8Array,
  configBytes: Uint8Array,
  repoId: string,
  passphrase: string,
  params: ScryptParams = DEFAULT_SCRYPT,
): Promise<Buffer> {
  const salt = randomBytes(32)
  const kek = await deriveKek(passphrase, salt, params)
  const payload = Buffer.concat([masterKey, sha256(configBytes)])
  const file: KeyFile = {
    version: 1,
    createdAt: new Date().toISOString(),
    kdf: { algorithm: 'scrypt', N: params.N, r: params.r, p: params.p, salt: salt.toString('base64') },
    wrap: { algorithm: 'aes-256-gcm', data: seal(kek, payload, wrapAad(repoId)).toString('base64') },
  }
  return Buffer.from(JSON.stringify(file) + '\n', 'utf8')
}

/** Parses a key object; throws RepoFormatError naming `name` when it is not one. */
export function parseKeyFile(bytes: Uint8Array, name: string): KeyFile {
  let f: KeyFile
  try {
    f = JSON.parse(Buffer.from(bytes).toString('utf8')) as KeyFile
  } catch (cause) {
    throw new RepoFormatError(`key object '${name}' is not valid JSON`, { cause })
  }
  const k = f?.kdf
  const ok =
    f?.version === 1 &&
    k?.algorithm === 'scrypt' &&
    [k.N, k.r, k.p].every((v) => Number.isSafeInteger(v) && v > 0) &&
    (k.N & (k.N - 1)) === 0 &&
    k.N <= 1 << 22 &&
    typeof k.salt === 'string' &&
    f.wrap?.algorithm === 'aes-256-gcm' &&
    typeof f.wrap.data === 'string'
  if (!ok) {
    throw new RepoFormatError(`key object '${name}' has an unknown version or invalid parameters`, {
      hint: 'this key object was written by a newer pgkeep or is damaged',
    })
  }
  return f
}

/** Result of opening a key object with a passphrase. */
export type UnwrapResult = { readonly ok: true; readonly masterKey: Buffer; readonly configHash: Buffer } | { readonly ok: false }

/** Opens a key object with `passphrase`; `{ ok: false }` when the passphrase (or the object) does not match. */
export async function unwrapKeyFile(file: KeyFile, repoId: string, passphrase: string): Promise<UnwrapResult> {
  const kek = await deriveKek(passphrase, Buffer.from(file.kdf.salt, 'base64'), file.kdf)
  const payload = unseal(kek, Buffer.from(file.wrap.data, 'base64'), wrapAad(repoId))
  if (!payload || payload.length !== MASTER_KEY_BYTES + 32) return { ok: false }
  return { ok: true, masterKey: payload.subarray(0, MASTER_KEY_BYTES), configHash: payload.subarray(MASTER_KEY_BYTES) }
}
