// The one place storage drivers are wired: a repository location (path, file:// URL or s3:// URL) plus an
// environment becomes a Storage, wrapped in the retry and concurrency-limit decorators. Only the CLI reads
// process.env; it passes it in here.

import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { ConfigError, UsageError } from '../errors.js'
import { openFsStorage } from './fs.js'
import { withCheckedIfAbsent } from './if-absent.js'
import { withConcurrencyLimit } from './limit.js'
import { withRetry, type RetryOptions } from './retry.js'
import type { S3Credentials } from './s3.js'
import type { Storage } from './storage.js'

/** Tuning of {@link openStorage}; every field has a per-driver default. */
export interface OpenStorageOptions {
  /** Retry policy (defaults: fs 3 attempts 50 ms–1 s; s3 5 attempts 250 ms–8 s). */
  readonly retry?: Partial<RetryOptions>
  /** Operations in flight at once (defaults: fs 8, s3 16). */
  readonly maxConcurrent?: number
}

const USAGE_HINT = "give the repository as a directory ('/var/lib/pgkeep', './repo', 'file:///var/lib/pgkeep') or as 's3://bucket/prefix'"

const FS_DEFAULTS = { attempts: 3, baseDelayMs: 50, maxDelayMs: 1_000, maxConcurrent: 8 }
// Object stores throttle with 503 SlowDown and recover within seconds: wait longer, try more often, and keep
// more requests in flight (latency, not bandwidth, limits a single request).
const S3_DEFAULTS = { attempts: 5, baseDelayMs: 250, maxDelayMs: 8_000, maxConcurrent: 16 }

/**
 * Opens the repository storage at `url`:
 * - `/abs/path`, `./rel/path` (or any string without a scheme), `file:///abs/path` → the fs driver;
 * - `s3://bucket/prefix` → the S3 driver, configured from `env`:
 *   `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`) as static credentials when set, else the
 *   SDK's default chain (profile, SSO, instance role); `AWS_REGION` or `AWS_DEFAULT_REGION` (default us-east-1);
 *   `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` for S3-compatible stores (path-style addressing is then on);
 *   `PGKEEP_S3_FORCE_PATH_STYLE` (true/false) overrides the addressing style; `PGKEEP_S3_CONDITIONAL_WRITE`
 *   (true/false) declares whether the store enforces `If-None-Match: *` (default: unknown, except for AWS
 *   itself, which does): false never sends the condition and runs the check-and-read-back protocol instead.
 * The driver is wrapped as retry(limit(driver)): a retry waits without holding a concurrency slot; with
 * PGKEEP_S3_CONDITIONAL_WRITE=false as checked(retry(limit(driver))) (if-absent.ts), so that the protocol's plain
 * write is what gets retried.
 * Unknown schemes are a UsageError; malformed variables a ConfigError.
 */
export async function openStorage(url: string, env: Readonly<Record<string, string | undefined>>, o: OpenStorageOptions = {}): Promise<Storage> {
  if (url.trim() === '') throw new UsageError('empty repository location', { hint: USAGE_HINT })
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(url)?.[1]?.toLowerCase()
  if (scheme === 's3') {
    const conditionalWrite = parseBool(env, 'PGKEEP_S3_CONDITIONAL_WRITE')
    const s3 = decorate(await openS3FromUrl(url, env, conditionalWrite), S3_DEFAULTS, o)
    return conditionalWrite === false ? withCheckedIfAbsent(s3) : s3
  }
  if (scheme === 'file') {
    let dir: string
    try {
      dir = fileURLToPath(url)
    } catch (err) {
      throw new UsageError(`invalid file URL '${url}'`, { cause: err, hint: USAGE_HINT })
    }
    return decorate(await openFsStorage(dir), FS_DEFAULTS, o)
  }
  if (scheme !== undefined) {
    throw new UsageError(`unsupported repository location '${url}': unknown scheme '${scheme}:'`, { hint: USAGE_HINT })
  }
  return decorate(await openFsStorage(path.resolve(url)), FS_DEFAULTS, o)
}

function decorate(
  driver: Storage,
  defaults: { attempts: number; baseDelayMs: number; maxDelayMs: number; maxConcurrent: number },
  o: OpenStorageOptions,
): Storage {
  const limited = withConcurrencyLimit(driver, { maxConcurrent: o.maxConcurrent ?? defaults.maxConcurrent })
  return withRetry(limited, {
    attempts: o.retry?.attempts ?? defaults.attempts,
    baseDelayMs: o.retry?.baseDelayMs ?? defaults.baseDelayMs,
    maxDelayMs: o.retry?.maxDelayMs ?? defaults.maxDelayMs,
    signal: o.retry?.signal,
    onRetry: o.retry?.onRetry,
  })
}

async function openS3FromUrl(url: string, env: Readonly<Record<string, string | undefined>>, conditionalWrite: boolean | undefined): Promise<Storage> {
  // Loaded on demand: the AWS SDK takes most of a CLI start (~0.6 s of ~0.9 s measured), and `wal get` / `wal push`
  // start once per WAL file.
  const { isValidBucketName, openS3Storage } = await import('./s3.js')
  const m = /^s3:\/\/([^/?#]*)\/?([^?#]*)$/i.exec(url)
  if (m === null || m[1] === '') {
    throw new UsageError(`invalid S3 repository URL '${url}'`, { hint: USAGE_HINT })
  }
  const [, bucket = '', prefix = ''] = m
  if (!isValidBucketName(bucket)) {
    throw new UsageError(`invalid S3 bucket name '${bucket}' in '${url}'`, {
      hint: 'bucket names are 3 to 63 lowercase letters, digits, dots and hyphens: s3://bucket/prefix',
    })
  }
  const get = (name: string): string | undefined => {
    const v = env[name]
    return v === undefined || v.trim() === '' ? undefined : v.trim()
  }
  const accessKeyId = get('AWS_ACCESS_KEY_ID')
  const secretAccessKey = get('AWS_SECRET_ACCESS_KEY')
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    throw new ConfigError(
      `${accessKeyId === undefined ? 'AWS_SECRET_ACCESS_KEY' : 'AWS_ACCESS_KEY_ID'} is set but ${accessKeyId === undefined ? 'AWS_ACCESS_KEY_ID' : 'AWS_SECRET_ACCESS_KEY'} is not`,
      { hint: 'set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither to use the default credential chain' },
    )
  }
  const credentials: S3Credentials | undefined =
    accessKeyId !== undefined && secretAccessKey !== undefined ? { accessKeyId, secretAccessKey, sessionToken: get('AWS_SESSION_TOKEN') } : undefined
  const endpoint = get('AWS_ENDPOINT_URL_S3') ?? get('AWS_ENDPOINT_URL')
  if (endpoint !== undefined && !/^https?:\/\/[^/]/i.test(endpoint)) {
    throw new ConfigError(`invalid S3 endpoint URL in ${get('AWS_ENDPOINT_URL_S3') !== undefined ? 'AWS_ENDPOINT_URL_S3' : 'AWS_ENDPOINT_URL'}`, {
      hint: 'give the endpoint as http(s)://host[:port], for example http://127.0.0.1:9000 for a local MinIO',
    })
  }
  return await openS3Storage({
    bucket,
    prefix,
    region: get('AWS_REGION') ?? get('AWS_DEFAULT_REGION') ?? 'us-east-1',
    endpoint,
    // Self-hosted stores rarely have wildcard DNS for bucket.host names.
    forcePathStyle: parseBool(env, 'PGKEEP_S3_FORCE_PATH_STYLE') ?? endpoint !== undefined,
    conditionalWrite,
    credentials,
  })
}

function parseBool(env: Readonly<Record<string, string | undefined>>, name: string): boolean | undefined {
  const v = env[name]?.trim().toLowerCase()
  if (v === undefined || v === '') return undefined
  if (['1', 'true', 'yes', 'on'].includes(v)) return true
  if (['0', 'false', 'no', 'off'].includes(v)) return false
  throw new ConfigError(`invalid value '${env[name] ?? ''}' for ${name}`, { hint: `set ${name} to true or false` })
}
