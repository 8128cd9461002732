// Names of the repository's objects under the storage root (docs/repository-format.md §2 is normative):
// `config`, `keys/<id>`, `packs/<2 hex>/<id>`, `index/<id>`, `records/<kind>/<key>`, `locks/<id>`.

import { UsageError } from '../errors.js'

/** The object holding the repository's parameters; written once by `init`. */
export const CONFIG_KEY = 'config'
export const KEYS_PREFIX = 'keys/'
export const PACKS_PREFIX = 'packs/'
export const INDEX_PREFIX = 'index/'
export const RECORDS_PREFIX = 'records/'
export const LOCKS_PREFIX = 'locks/'

const HEX64 = /^[0-9a-f]{64}$/
const KIND = /^[a-z][a-z0-9-]{0,31}$/
const KEY_SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/
const MAX_RECORD_KEY_CHARS = 512

/** UTC time to the second as `YYYYMMDDTHHMMSSZ`: the sortable start of backup ids and condemnation keys. */
export function utcStamp(at: Date): string {
  return at
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')
}

/** True for a 64-character lowercase hex string (blob, pack, index and key ids are SHA-256 sized). */
export function isHexId(s: string): boolean {
  return HEX64.test(s)
}

export function packKey(packId: string): string {
  return `${PACKS_PREFIX}${packId.slice(0, 2)}/${packId}`
}

export function indexKey(indexId: string): string {
  return `${INDEX_PREFIX}${indexId}`
}

export function keyFileKey(keyId: string): string {
  return `${KEYS_PREFIX}${keyId}`
}

export function lockKey(lockId: string): string {
  return `${LOCKS_PREFIX}${lockId}`
}

/** The object `init` writes and removes to find out how the store treats conditional writes (§2). */
export function probeKey(probeId: string): string {
  return `probe-${probeId}`
}

/**
 * Parses `packs/<2 hex>/<64 hex>` and returns the pack id, or undefined for any other name (temporary files of a
 * driver, stray objects): callers skip those.
 */
export function packIdOfKey(key: string): string | undefined {
  const m = /^packs\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(key)
  return m && m[2]!.startsWith(m[1]!) ? m[2] : undefined
}

/** Parses `index/<64 hex>`; undefined for any other name. */
export function indexIdOfKey(key: string): string | undefined {
  const id = key.slice(INDEX_PREFIX.length)
  return key.startsWith(INDEX_PREFIX) && isHexId(id) ? id : undefined
}

/** Throws UsageError unless `kind` is a record kind: lowercase letters, digits and '-', at most 32 characters. */
export function assertRecordKind(kind: string): void {
  if (typeof kind !== 'string' || !KIND.test(kind)) {
    throw new UsageError(`invalid record kind '${String(kind)}'`, {
      hint: "a record kind is 1-32 lowercase letters, digits or '-', starting with a letter (this is a bug in the caller)",
    })
  }
}

/**
 * Throws UsageError unless `key` is a record key: '/'-separated segments of letters, digits, '.', '_' and '-'
 * (not starting with '.' or '-'), at most 512 characters.
 */
export function assertRecordKey(key: string): void {
  const ok = typeof key === 'string' && key.length > 0 && key.length <= MAX_RECORD_KEY_CHARS && key.split('/').every((s) => KEY_SEGMENT.test(s))
  if (!ok) {
    throw new UsageError(`invalid record key '${String(key)}'`, {
      hint: "a record key is '/'-separated segments of letters, digits, '.', '_' and '-' (this is a bug in the caller)",
    })
  }
}

export function recordKey(kind: string, key: string): string {
  assertRecordKind(kind)
  assertRecordKey(key)
  return `${RECORDS_PREFIX}${kind}/${key}`
}

/** The storage prefix under which records of `kind` whose key starts with `keyPrefix` live. */
export function recordPrefix(kind: string, keyPrefix: string): string {
  assertRecordKind(kind)
  if (keyPrefix !== '' && !/^[A-Za-z0-9._/-]*$/.test(keyPrefix)) {
    throw new UsageError(`invalid record key prefix '${keyPrefix}'`)
  }
  return `${RECORDS_PREFIX}${kind}/${keyPrefix}`
}
