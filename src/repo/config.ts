// The repository's `config` object: format version, id and the parameters every writer must share (pack size,
// compression, chunking, encryption, how the store treats conditional writes). Written once by init, never changed
// (docs/repository-format.md §3).

import { RepoFormatError, UsageError } from '../errors.js'
import type { ConditionalWriteSupport } from '../storage/storage.js'
import { DEFAULT_SCRYPT, type ScryptParams } from './crypto.js'

/** The repository format version this build writes and the newest it reads. */
export const FORMAT_VERSION = 1

/**
 * 8 MiB: a backup holds about three packs' buffers (one filling, one being written, one kept for the next), so the
 * pack size is a large share of its memory. The bench data's full backup peaked at 173-175 MB with 8 MiB packs
 * against 188-198 MB with 16, in the same time (11.0-12.6 s against 11.4-11.7 s), and its restore read 340 runs
 * instead of 320, in the same time (3 alternating runs each, PG 15, fs). Repositories keep the size they were made
 * with (`init --pack-size`).
 */
export const DEFAULT_PACK_TARGET_BYTES = 8 * 1024 * 1024
export const MIN_PACK_TARGET_BYTES = 64 * 1024
export const MAX_PACK_TARGET_BYTES = 1024 * 1024 * 1024
/** zstd level 1: on the benchmark data it stores within 1% of level 3 for a fifth less CPU (README, Benchmarks). */
export const DEFAULT_ZSTD_LEVEL = 1
/** Default size of the blobs engines cut non-relation files and page runs into. */
export const DEFAULT_BLOB_BYTES = 1024 * 1024

/** Compression of blobs and records: zstd at a level, or none. */
export type CompressionConfig = { readonly algorithm: 'zstd'; readonly level: number } | { readonly algorithm: 'none' }

/** The parsed `config` object. */
export interface RepoConfig {
  readonly format: 'pgkeep'
  readonly version: number
  /** 64 hex characters, random; binds key objects to this repository. */
  readonly id: string
  readonly createdAt: string
  readonly packTargetBytes: number
  readonly compression: CompressionConfig
  /** Parameters for the engines that cut content into blobs; all writers must agree or dedup suffers. */
  readonly chunking: { readonly blobBytes: number; readonly pageBytes: number }
  /** null for a plain repository. */
  readonly encryption: null | {
    readonly cipher: 'aes-256-gcm'
    readonly blobId: 'hmac-sha256'
    readonly keyDerivation: 'hkdf-sha256'
    /** Parameters for new key objects; every key object carries its own. */
    readonly kdf: { readonly algorithm: 'scrypt' } & ScryptParams
  }
  /**
   * What `init` found the store to do with a conditional write to an existing key. Absent in configs written
   * before pgkeep probed (read as 'enforced'); anything but 'enforced' makes every writer use the
   * check-and-read-back protocol of storage/if-absent.ts. Use {@link conditionalWriteOf} to read it.
   */
  readonly conditionalWrite?: ConditionalWriteSupport
}

const CONDITIONAL_WRITE_VALUES: readonly ConditionalWriteSupport[] = ['enforced', 'ignored', 'unsupported']

/** The config's `conditionalWrite`, with the default of configs that predate it. */
export function conditionalWriteOf(config: RepoConfig): ConditionalWriteSupport {
  return config.conditionalWrite ?? 'enforced'
}

/** Checks a zstd level; throws UsageError naming the value otherwise. */
export function assertZstdLevel(level: number): void {
  if (!Number.isInteger(level) || level < 1 || level > 19) {
    throw new UsageError(`invalid zstd compression level '${level}'`, { hint: 'use a level from 1 to 19' })
  }
}

/** Checks a pack target size; throws UsageError naming the value otherwise. */
export function assertPackTargetBytes(bytes: number): void {
  if (!Number.isInteger(bytes) || bytes < MIN_PACK_TARGET_BYTES || bytes > MAX_PACK_TARGET_BYTES) {
    throw new UsageError(`invalid pack target size '${bytes}' bytes`, {
      hint: `use a size from ${MIN_PACK_TARGET_BYTES} bytes to ${MAX_PACK_TARGET_BYTES / 1048576} MiB`,
    })
  }
}

/** Builds the config of a new repository. */
export function newConfig(o: {
  id: string
  packTargetBytes?: number
  compression?: { level: number } | 'none'
  encrypted: boolean
  scrypt?: ScryptParams
  /** What the store's probe found (default 'enforced'). */
  conditionalWrite?: ConditionalWriteSupport
}): RepoConfig {
  const packTargetBytes = o.packTargetBytes ?? DEFAULT_PACK_TARGET_BYTES
  assertPackTargetBytes(packTargetBytes)
  let compression: CompressionConfig = { algorithm: 'zstd', level: DEFAULT_ZSTD_LEVEL }
  if (o.compression === 'none') compression = { algorithm: 'none' }
  else if (o.compression) {
    assertZstdLevel(o.compression.level)
    compression = { algorithm: 'zstd', level: o.compression.level }
  }
  return {
    format: 'pgkeep',
    version: FORMAT_VERSION,
    id: o.id,
    createdAt: new Date().toISOString(),
    packTargetBytes,
    compression,
    chunking: { blobBytes: DEFAULT_BLOB_BYTES, pageBytes: 8192 },
    encryption: o.encrypted
      ? {
          cipher: 'aes-256-gcm',
          blobId: 'hmac-sha256',
          keyDerivation: 'hkdf-sha256',
          kdf: { algorithm: 'scrypt', ...(o.scrypt ?? DEFAULT_SCRYPT) },
        }
      : null,
    conditionalWrite: o.conditionalWrite ?? 'enforced',
  }
}

export function encodeConfig(config: RepoConfig): Buffer {
  return Buffer.from(JSON.stringify(config, null, 2) + '\n', 'utf8')
}

/**
 * Parses and checks a `config` object. A version newer than this build is a RepoFormatError naming both versions;
 * anything that is not a pgkeep config is a RepoFormatError with the hint to run `pgkeep init`.
 */
export function decodeConfig(bytes: Uint8Array, location: string): RepoConfig {
  let c: RepoConfig
  try {
    c = JSON.parse(Buffer.from(bytes).toString('utf8')) as RepoConfig
  } catch (cause) {
    throw notARepository(location, 'its config object is not valid JSON', cause)
  }
  if (c === null || typeof c !== 'object' || c.format !== 'pgkeep') {
    throw notARepository(location, 'its config object is not a pgkeep config')
  }
  if (!Number.isInteger(c.version) || c.version < 1) {
    throw new RepoFormatError(`repository '${location}' has an invalid format version '${String(c.version)}'`)
  }
  if (c.version > FORMAT_VERSION) {
    throw new RepoFormatError(`repository '${location}' has format version ${c.version} but this pgkeep reads versions up to ${FORMAT_VERSION}`, {
      hint: 'upgrade pgkeep to a release that supports this repository format',
    })
  }
  const comp = c.compression
  const enc = c.encryption
  const ok =
    typeof c.id === 'string' &&
    /^[0-9a-f]{64}$/.test(c.id) &&
    Number.isInteger(c.packTargetBytes) &&
    c.packTargetBytes >= MIN_PACK_TARGET_BYTES &&
    c.packTargetBytes <= MAX_PACK_TARGET_BYTES &&
    (comp?.algorithm === 'none' || (comp?.algorithm === 'zstd' && Number.isInteger(comp.level))) &&
    Number.isInteger(c.chunking?.blobBytes) &&
    Number.isInteger(c.chunking?.pageBytes) &&
    (enc === null ||
      (enc?.cipher === 'aes-256-gcm' && enc.blobId === 'hmac-sha256' && enc.keyDerivation === 'hkdf-sha256' && enc.kdf?.algorithm === 'scrypt')) &&
    (c.conditionalWrite === undefined || CONDITIONAL_WRITE_VALUES.includes(c.conditionalWrite))
  if (!ok) {
    throw new RepoFormatError(`repository '${location}' has a damaged or unsupported config object`, {
      hint: 'compare it with docs/repository-format.md §3',
    })
  }
  return c
}

export function notARepository(location: string, why: string, cause?: unknown): RepoFormatError {
  return new RepoFormatError(`'${location}' is not a pgkeep repository: ${why}`, {
    cause,
    hint: `create one with 'pgkeep init --repo ${location}', or check the --repo value`,
  })
}
