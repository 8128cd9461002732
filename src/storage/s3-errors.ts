// Translation of AWS SDK (and socket) errors into pgkeep's storage errors: which are "not found", "already
// exists", retryable, or a configuration problem with a hint. Raw SDK errors never leave this module: they can carry
// request details (signatures, access key ids) that must not reach logs, so the `cause` is a sanitized summary.

import { AccessDeniedError, AlreadyExistsError, NotFoundError, StorageError, isPgkeepError } from '../errors.js'

/** What the failing operation was, for messages. */
export interface S3ErrorContext {
  /** Verb phrase: 'read', 'write', 'stat', 'list', 'remove'. */
  readonly action: string
  /** The object (`s3://bucket/prefix/key`) or listing it concerned. */
  readonly location: string
  readonly bucket: string
  /** The endpoint, safe to print (no user info). */
  readonly endpoint: string
  readonly signal?: AbortSignal
  /** The request carried `If-None-Match: *`, so a 501 means the store does not implement conditional writes. */
  readonly conditional?: boolean
}

/** Shape of the SDK's ServiceException and of Node system errors; every field is optional. */
interface SdkErrorLike {
  name?: string
  code?: string
  message?: string
  syscall?: string
  $metadata?: { httpStatusCode?: number; requestId?: string; extendedRequestId?: string; attempts?: number }
  $fault?: string
}

const CREDENTIAL_ERRORS = new Set([
  'AccessDenied',
  'AllAccessDisabled',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
])

/** Error names the S3 documentation (and S3-compatible stores) ask clients to retry. */
const RETRYABLE_ERRORS = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'RequestThrottled',
  'TooManyRequests',
  'RequestTimeout',
  'RequestTimeoutException',
  'InternalError',
  'ServiceUnavailable',
  'OperationAborted',
  // 409 on a conditional write racing another one to the same key: the retry gets a definite 412 or success.
  'ConditionalRequestConflict',
  'TimeoutError',
])

/** Socket-level failures: the endpoint was unreachable or the connection died. A retry may well succeed. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
])

/** A short, secret-free copy of an SDK or socket error, kept as `cause` for debugging. */
export function summarizeError(err: unknown): Error {
  const e = (typeof err === 'object' && err !== null ? err : {}) as SdkErrorLike
  const status = e.$metadata?.httpStatusCode
  const parts = [e.name ?? 'Error', e.code, status === undefined ? undefined : `HTTP ${status}`]
  const summary = new Error(`${parts.filter(Boolean).join(' ')}: ${e.message ?? String(err)}`)
  summary.name = e.name ?? 'Error'
  Object.assign(summary, {
    code: e.code,
    httpStatusCode: status,
    requestId: e.$metadata?.requestId,
    // How many times the SDK sent the request (it retries once itself): a 412 on a retry may answer our own write.
    attempts: e.$metadata?.attempts,
  })
  return summary
}

/** How many times the SDK sent the request behind `err` (an SDK error or the summary kept as a `cause`); 1 if unknown. */
export function sdkAttemptsOf(err: unknown): number {
  const e = err as (SdkErrorLike & { attempts?: number }) | undefined
  return e?.$metadata?.attempts ?? e?.attempts ?? 1
}

/** True for the answer to a conditional request whose condition failed (the key exists). */
export function isPreconditionFailed(err: unknown): boolean {
  return errorNameOf(err) === 'PreconditionFailed' || httpStatusOf(err) === 412
}

/** True for 501 NotImplemented: the store does not implement something the request asked for. */
export function isNotImplemented(err: unknown): boolean {
  return errorNameOf(err) === 'NotImplemented' || httpStatusOf(err) === 501
}

/** The HTTP status of an SDK error, if the server answered at all. */
export function httpStatusOf(err: unknown): number | undefined {
  return (err as SdkErrorLike | undefined)?.$metadata?.httpStatusCode
}

/** The SDK's error name (`NoSuchKey`, `NotFound`, …) or a Node error code (`ECONNRESET`). */
export function errorNameOf(err: unknown): string | undefined {
  const e = err as SdkErrorLike | undefined
  return e?.name === 'Error' || e?.name === undefined ? e?.code : e.name
}

/** True for "no such key" answers (HeadObject answers a bare 404 named `NotFound`), but not for a missing bucket. */
export function isMissingKey(err: unknown): boolean {
  const name = errorNameOf(err)
  if (name === 'NoSuchBucket') return false
  return name === 'NoSuchKey' || name === 'NotFound' || httpStatusOf(err) === 404
}

/** Maps any error from an S3 request to a StorageError, NotFoundError or AlreadyExistsError (or the abort reason). */
export function mapS3Error(err: unknown, ctx: S3ErrorContext): unknown {
  if (isPgkeepError(err)) return err
  if (ctx.signal?.aborted === true) return ctx.signal.reason
  const name = errorNameOf(err)
  const status = httpStatusOf(err)
  const cause = summarizeError(err)
  const what = `${ctx.action} '${ctx.location}'`
  const at = `S3 endpoint '${ctx.endpoint}'`

  if (name === 'NoSuchBucket') {
    return new StorageError(`unable to ${what}: bucket '${ctx.bucket}' does not exist at ${at}`, {
      cause,
      hint: 'create the bucket, or check the bucket name in the repository URL, AWS_REGION and AWS_ENDPOINT_URL',
    })
  }
  if (isMissingKey(err)) return new NotFoundError(`object '${ctx.location}' not found`, { cause })
  if (isPreconditionFailed(err)) {
    return new AlreadyExistsError(`object '${ctx.location}' already exists`, { cause })
  }
  // Before the 5xx rule: retrying cannot make a store implement something, and "unavailable" would mislead.
  if (isNotImplemented(err)) {
    return ctx.conditional === true
      ? new StorageError(
          `unable to ${what}: ${at} does not implement conditional writes (If-None-Match: *, answered ${name ?? 'NotImplemented'}, HTTP ${status ?? 501})`,
          {
            cause,
            hint:
              "repositories created by 'pgkeep init' on such a store record it and use a check-and-read-back protocol instead; " +
              'for a repository created on another store, set PGKEEP_S3_CONDITIONAL_WRITE=false (docs/storage.md, "Stores without conditional writes")',
          },
        )
      : new StorageError(`unable to ${what}: ${at} does not implement this request (${name ?? 'NotImplemented'}, HTTP ${status ?? 501})`, {
          cause,
          hint: 'the store lacks a part of the S3 API that pgkeep uses (docs/storage.md lists the requests); check what the store supports',
        })
  }
  if (name === 'CredentialsProviderError') {
    return new StorageError(`unable to ${what}: no S3 credentials found`, {
      cause,
      hint: 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run where an instance role is available)',
    })
  }
  if (name === 'RequestTimeTooSkewed') {
    return new StorageError(`unable to ${what}: ${at} refused the request time`, {
      cause,
      hint: "this machine's clock is off by more than 15 minutes; fix it (NTP) and run the command again",
    })
  }
  if ((name !== undefined && CREDENTIAL_ERRORS.has(name)) || status === 401 || status === 403) {
    // A valid credential refused this operation (403 AccessDenied, e.g. no s3:PutObject): recognisable, so that
    // readers with read-only access can go on without a lock. Bad or expired credentials stay a StorageError.
    const refused = name === 'AccessDenied' || name === 'AllAccessDisabled' || (status === 403 && (name === undefined || !CREDENTIAL_ERRORS.has(name)))
    return new (refused ? AccessDeniedError : StorageError)(
      `unable to ${what}: access denied by ${at} (${name === undefined || name === 'Unknown' ? `HTTP ${status ?? '?'}` : name})`,
      {
        cause,
        hint:
          'check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, and that the policy allows ' +
          's3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on the bucket',
      },
    )
  }
  if (status === undefined && isNetworkError(err)) {
    return new StorageError(`unable to ${what}: connection to ${at} failed (${describeNetworkError(err)})`, {
      cause,
      retryable: true,
      hint: `check that ${at} is up and reachable from this host (network, DNS, firewall, proxy)`,
    })
  }
  if ((name !== undefined && RETRYABLE_ERRORS.has(name)) || status === 429 || (status !== undefined && status >= 500)) {
    return new StorageError(`unable to ${what}: ${at} answered ${name ?? 'an error'} (HTTP ${status ?? '?'})`, {
      cause,
      retryable: true,
      hint: `the store is overloaded or unavailable; check the health of ${at}`,
    })
  }
  return new StorageError(`unable to ${what} at ${at}: ${cause.message}`, { cause })
}

/** 'ECONNRESET', 'ECONNREFUSED', 'timeout': the most specific short name of a socket failure. */
function describeNetworkError(err: unknown): string {
  const e = err as SdkErrorLike
  if (e.code !== undefined) return e.code
  if (e.name === 'TimeoutError') return 'timeout'
  return e.name ?? 'network error'
}

/** A socket-level failure (no HTTP answer, or an answer cut short). */
function isNetworkError(err: unknown): boolean {
  const e = err as SdkErrorLike | undefined
  if (e === undefined || e === null) return false
  if (e.code !== undefined && NETWORK_CODES.has(e.code)) return true
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return true
  // Node system errors carry `syscall` (connect, read, write); they are all I/O on the socket here.
  return typeof e.syscall === 'string'
}
