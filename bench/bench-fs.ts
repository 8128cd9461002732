// Where the benchmark's bytes are: sizes of directory trees and of S3 prefixes, object uploads and removals, and
// `sync` so that no measured run pays for the previous run's writeback.

import { execFile } from 'node:child_process'
import { readFile, readdir, lstat } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { DeleteObjectsCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import type { S3TestServer } from '../test/harness/s3-server.js'

const execFileP = promisify(execFile)

/** Sum of the sizes of the regular files under `dir` (symbolic links not followed); 0 when it is missing. */
export async function dirBytes(dir: string): Promise<number> {
  let total = 0
  let entries
  try {
    entries = await readdir(dir, { withFileTypes: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0
    throw err
  }
  for (const e of entries) {
    const p = join(dir, e.name)
    if (e.isDirectory()) total += await dirBytes(p)
    else if (e.isFile()) total += (await lstat(p)).size
  }
  return total
}

/** Flushes every file system's dirty pages (untimed, between runs). */
export async function syncDisks(): Promise<void> {
  await execFileP('sync', [])
}

/** The environment a pgkeep child needs to use the test S3 server. */
export function s3Env(s3: S3TestServer): Record<string, string> {
  return {
    AWS_ENDPOINT_URL: s3.endpoint,
    AWS_ACCESS_KEY_ID: s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
    AWS_REGION: s3.region,
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  }
}

/** A small client for the benchmark's own object bookkeeping (sizes, removal, reference uploads). */
export class S3Objects {
  private readonly client: S3Client
  constructor(private readonly s3: S3TestServer) {
    this.client = new S3Client({
      endpoint: s3.endpoint,
      region: s3.region,
      forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
    })
  }

  /** Total size of the objects under `prefix`, bytes. */
  async prefixBytes(prefix: string): Promise<number> {
    let total = 0
    for await (const page of this.pages(prefix)) total += (page.Contents ?? []).reduce((n, o) => n + (o.Size ?? 0), 0)
    return total
  }

  /** Deletes every object under `prefix`. */
  async removePrefix(prefix: string): Promise<void> {
    for (;;) {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.s3.bucket, Prefix: prefix }))
      const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key! }))
      if (keys.length === 0) return
      await this.client.send(new DeleteObjectsCommand({ Bucket: this.s3.bucket, Delete: { Objects: keys } }))
    }
  }

  /** Uploads a file as one object. */
  async putFile(key: string, path: string): Promise<void> {
    await this.client.send(new PutObjectCommand({ Bucket: this.s3.bucket, Key: key, Body: await readFile(path) }))
  }

  close(): void {
    this.client.destroy()
  }

  private async *pages(prefix: string) {
    let token: string | undefined
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.s3.bucket, Prefix: prefix, ContinuationToken: token }))
      yield page
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined
    } while (token !== undefined)
  }
}
