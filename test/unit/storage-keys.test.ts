// Key and prefix validation shared by every storage driver: what a repository may name, and what it may not
// (paths escaping the root, empty segments, NUL, the fs driver's reserved temporary names).

import { describe, expect, it } from 'vitest'

import { StorageError } from '../../src/errors.js'
import { assertValidKey, assertValidPrefix, assertValidRange } from '../../src/storage/keys.js'

describe('storage keys', () => {
  it('accepts relative slash-separated keys', () => {
    for (const k of ['config', 'packs/ab/ab12cd', 'a/b/c/d', 'x.y', '..hidden-ish', 'a/.dot', 'a b', 'ü/ñ']) {
      expect(() => assertValidKey(k), k).not.toThrow()
    }
  })

  it('refuses keys that are empty, absolute, escaping, with empty segments, NUL or reserved names', () => {
    const bad = ['', '/a', 'a/', 'a//b', '.', '..', 'a/..', '../a', 'a/./b', 'a\0b', '.tmp-1', 'a/.tmp-x/b', 'a\\b', 'x'.repeat(1025)]
    for (const k of bad) {
      let err: unknown
      try {
        assertValidKey(k)
      } catch (e) {
        err = e
      }
      expect(err, JSON.stringify(k)).toBeInstanceOf(StorageError)
      expect((err as StorageError).retryable).toBe(false)
      expect((err as StorageError).message).toMatch(/^invalid storage key '/)
      // The message stays printable: a NUL is shown, not embedded.
      expect((err as StorageError).message.includes('\0')).toBe(false)
    }
  })

  it('accepts prefixes that are empty, end with / or end mid-name', () => {
    for (const p of ['', 'packs/', 'packs/ab', 'a/b/', 'a', '.', 'a/.', 'a/..', 'a/..b']) {
      expect(() => assertValidPrefix(p), p).not.toThrow()
    }
  })

  it('refuses prefixes that escape or contain empty segments', () => {
    for (const p of ['/', '/a', 'a//', '../', 'a/../', './x', '\0', '.tmp-', 'a/.tmp-']) {
      expect(() => assertValidPrefix(p), JSON.stringify(p)).toThrow(StorageError)
    }
  })

  it('accepts non-negative integer ranges only', () => {
    expect(() => assertValidRange(undefined, undefined)).not.toThrow()
    expect(() => assertValidRange(0, 0)).not.toThrow()
    expect(() => assertValidRange(10, 5)).not.toThrow()
    for (const [o, l] of [
      [-1, undefined],
      [undefined, -1],
      [1.5, undefined],
      [Number.NaN, 1],
      [Infinity, 1],
    ] as const) {
      expect(() => assertValidRange(o, l), `${o} ${l}`).toThrow(StorageError)
    }
  })
})
