// Which S3 answers mean "read-only access" (AccessDeniedError, so readers go on without a lock) and which mean a
// bad credential (a plain StorageError): shaped as the AWS SDK v3 shapes service errors (name, $metadata).

import { describe, expect, it } from 'vitest'
import { AccessDeniedError, StorageError } from '../../src/errors.js'
import { mapS3Error } from '../../src/storage/s3-errors.js'

const ctx = { action: 'write', location: 's3://bucket/repo/locks/x', bucket: 'bucket', endpoint: 'http://127.0.0.1:9000' }
const sdkError = (name: string | undefined, status: number) =>
  Object.assign(new Error(`${name ?? 'UnknownError'} answer`), { name: name ?? 'Unknown', $metadata: { httpStatusCode: status } })

describe('S3 permission errors', () => {
  it.each([
    ['AccessDenied', 403],
    ['AllAccessDisabled', 403],
    [undefined, 403],
    ['Forbidden', 403],
  ])('%s (HTTP %i) is an AccessDeniedError: a valid credential without the permission', (name, status) => {
    const e = mapS3Error(sdkError(name, status), ctx)
    expect(e).toBeInstanceOf(AccessDeniedError)
    expect(e).toMatchObject({ code: 'STORAGE', retryable: false })
    expect((e as Error).message).toMatch(/access denied by S3 endpoint/)
  })

  it.each([
    ['InvalidAccessKeyId', 403],
    ['SignatureDoesNotMatch', 403],
    ['ExpiredToken', 400],
    [undefined, 401],
  ])('%s (HTTP %i) is a credential problem, not read-only access', (name, status) => {
    const e = mapS3Error(sdkError(name, status), ctx)
    expect(e).toBeInstanceOf(StorageError)
    expect(e).not.toBeInstanceOf(AccessDeniedError)
  })
})
