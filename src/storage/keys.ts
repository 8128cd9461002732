// Validation of storage keys and list prefixes, shared by every driver so that all of them accept and refuse the
// same names (the conformance suite checks this). A key is a relative '/'-separated path of non-empty segments.

import { StorageError } from '../errors.js'

/**
 * Names starting with this are reserved for the fs driver's temporary files: it never lists them, so a key segment
 * with this prefix could never be seen again. Every driver refuses such keys so that repositories stay portable.
 */
export const TEMP_PREFIX = '.tmp-'

/** S3 allows 1024 bytes of UTF-8 per key (including the driver's prefix); refuse early and clearly. */
const MAX_KEY_BYTES = 1024

function invalid(kind: string, value: string, why: string): StorageError {
  return new StorageError(`invalid storage ${kind} '${printable(value)}': ${why}`, {
    hint: "keys are relative '/'-separated paths without empty, '.' or '..' segments (this is a bug in the caller)",
  })
}

/** Renders control characters (NUL especially) visibly so the message stays one printable line. */
function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

function checkSegments(kind: string, value: string, segments: readonly string[]): void {
  for (const s of segments) {
    if (s === '') throw invalid(kind, value, 'empty path segment')
    if (s === '.' || s === '..') throw invalid(kind, value, `segment '${s}' is not allowed`)
    if (s.startsWith(TEMP_PREFIX)) throw invalid(kind, value, `segments starting with '${TEMP_PREFIX}' are reserved`)
  }
}

function checkCommon(kind: string, value: unknown): asserts value is string {
  if (typeof value !== 'string') throw invalid(kind, String(value), 'not a string')
  if (value.includes('\0')) throw invalid(kind, value, 'contains a NUL character')
  if (value.startsWith('/')) throw invalid(kind, value, "starts with '/'")
  if (value.includes('\\')) throw invalid(kind, value, "contains '\\'")
  if (Buffer.byteLength(value) > MAX_KEY_BYTES) throw invalid(kind, value, `longer than ${MAX_KEY_BYTES} bytes`)
}

/** Throws a non-retryable StorageError unless `key` is a valid object key. */
export function assertValidKey(key: string): void {
  checkCommon('key', key)
  if (key === '') throw invalid('key', key, 'empty')
  checkSegments('key', key, key.split('/'))
}

/**
 * Throws a non-retryable StorageError unless `prefix` is a valid list prefix: '' (everything), a key-like path
 * ending with '/', or one ending mid-name (`packs/ab` matches `packs/ab12…` and `packs/ab/…`).
 */
export function assertValidPrefix(prefix: string): void {
  checkCommon('prefix', prefix)
  if (prefix === '') return
  const segments = prefix.split('/')
  const last = segments.pop() as string
  checkSegments('prefix', prefix, segments)
  // The last segment is partial: '' (prefix ends with '/') or the start of a name ('.' may start '.foo'); drivers
  // only ever match it against names, never resolve it as a path, so only the reserved prefix is refused.
  if (last.startsWith(TEMP_PREFIX)) throw invalid('prefix', prefix, `segments starting with '${TEMP_PREFIX}' are reserved`)
}

/** Throws a non-retryable StorageError unless `offset`/`length` of a ranged read are non-negative safe integers. */
export function assertValidRange(offset: number | undefined, length: number | undefined): void {
  for (const [name, v] of [
    ['offset', offset],
    ['length', length],
  ] as const) {
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= 0)) {
      throw new StorageError(`invalid read ${name} '${String(v)}': must be a non-negative integer`)
    }
  }
}
