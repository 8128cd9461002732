// openStorage: which driver a repository location selects, how the S3 driver is configured from the passed-in
// environment, and the errors for locations and variables it cannot use. Opening sends no request, so these
// tests stay off the network.

import os from 'node:os'
import path from 'node:path'

import { describe, expect, it } from 'vitest'

import { ConfigError, UsageError } from '../../src/errors.js'
import { openStorage } from '../../src/storage/open.js'

const creds = { AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret-never-printed' }

describe('openStorage', () => {
  it('opens the fs driver for absolute, relative and file:// locations', async () => {
    const abs = path.join(os.tmpdir(), 'pgkeep-open-test-missing')
    const s1 = await openStorage(abs, {})
    expect(s1.name).toBe(abs)
    expect(s1.features).toEqual({ fsync: true, conditionalWrite: true, remote: false })
    expect((await openStorage('./some/rel', {})).name).toBe(path.resolve('some/rel'))
    expect((await openStorage('plain-dir', {})).name).toBe(path.resolve('plain-dir'))
    expect((await openStorage(`file://${abs}`, {})).name).toBe(abs)
  })

  it('opens the s3 driver with the bucket and prefix of the URL', async () => {
    const s = await openStorage('s3://my-bucket/backups/db1', creds)
    expect(s.name).toBe('s3://my-bucket/backups/db1/')
    expect(s.features.remote).toBe(true)
    // AWS itself enforces If-None-Match.
    expect(s.features.conditionalWrite).toBe(true)
    expect((await openStorage('s3://my-bucket', creds)).name).toBe('s3://my-bucket/')
    expect((await openStorage('s3://my-bucket/', creds)).name).toBe('s3://my-bucket/')
    await s.close()
  })

  it('uses AWS_ENDPOINT_URL_S3 over AWS_ENDPOINT_URL and names the endpoint without credentials', async () => {
    const s = await openStorage('s3://b-1/p', {
      ...creds,
      AWS_ENDPOINT_URL: 'http://generic:1',
      AWS_ENDPOINT_URL_S3: 'http://user:pw@minio.local:9000',
    })
    expect(s.name).toBe('s3://b-1/p/ (http://minio.local:9000)')
    expect(s.name).not.toContain('pw')
    expect(s.name).not.toContain(creds.AWS_SECRET_ACCESS_KEY)
    // A custom endpoint does not promise conditional writes unless told so.
    expect(s.features.conditionalWrite).toBe(false)
    const told = await openStorage('s3://b-1/p', {
      ...creds,
      AWS_ENDPOINT_URL: 'http://minio.local:9000',
      PGKEEP_S3_CONDITIONAL_WRITE: 'true',
    })
    expect(told.features.conditionalWrite).toBe(true)
  })

  it('refuses unknown schemes with a hint showing both accepted forms', async () => {
    for (const url of ['gs://bucket/x', 'http://host/x', 'sftp://h/p']) {
      const err = await openStorage(url, {}).catch((e: unknown) => e)
      expect(err, url).toBeInstanceOf(UsageError)
      expect((err as UsageError).hint).toMatch(/s3:\/\/bucket\/prefix/)
      expect((err as UsageError).hint).toMatch(/\/var\/lib\/pgkeep/)
    }
  })

  it('refuses malformed S3 URLs and empty locations', async () => {
    for (const url of ['', '  ', 's3://', 's3:///prefix', 's3://Bad_Bucket/x', 's3://b/x?versionId=1']) {
      await expect(openStorage(url, creds), JSON.stringify(url)).rejects.toBeInstanceOf(UsageError)
    }
  })

  it('refuses half-set credentials and malformed variables as ConfigError', async () => {
    const cases: Record<string, string>[] = [
      { AWS_ACCESS_KEY_ID: 'only-id' },
      { AWS_SECRET_ACCESS_KEY: 'only-secret' },
      { ...creds, PGKEEP_S3_FORCE_PATH_STYLE: 'maybe' },
      { ...creds, PGKEEP_S3_CONDITIONAL_WRITE: '2' },
      { ...creds, AWS_ENDPOINT_URL: 'minio:9000' },
    ]
    for (const env of cases) {
      const err = await openStorage('s3://bucket/p', env).catch((e: unknown) => e)
      expect(err, JSON.stringify(env)).toBeInstanceOf(ConfigError)
      expect(JSON.stringify({ m: (err as Error).message, h: (err as ConfigError).hint })).not.toContain('only-secret')
    }
  })
})
