// An S3-compatible server for tests: s3rver (from npm) in a child process on 127.0.0.1 with a free port and a
// temporary directory, its bucket created. With PGKEEP_TEST_S3_ENDPOINT set, the same tests run against that store instead
// (MinIO from docker/, Ceph, AWS), under a fresh prefix that `stop()` empties.

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import { startS3ConditionalProxy } from './s3-conditional-proxy.js'

import { CreateBucketCommand, DeleteObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'

// The SDK warns once per process that releases after January 2027 need Node 22 (we pin the version); the warning
// is noise in test output. The library itself never touches process.env; this is the test process.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

/** A running S3 endpoint for tests. */
export interface S3TestServer {
  /** http://127.0.0.1:port (or the external endpoint). */
  readonly endpoint: string
  readonly bucket: string
  readonly region: string
  readonly accessKeyId: string
  readonly secretAccessKey: string
  /** A prefix unique to this server instance ('' for a private s3rver, `pgkeep-test-<random>/` for an external store). */
  readonly prefix: string
  /** True when the tests run against PGKEEP_TEST_S3_ENDPOINT rather than s3rver. */
  readonly external: boolean
  /**
   * Requests the local s3rver received so far, as `METHOD /bucket/key?query` (undefined for an external store).
   * Lets tests check facts about the traffic (a multipart upload happened) independently of the driver.
   */
  readonly requestLog: (() => Promise<string[]>) | undefined
  /** Stops the server and deletes its directory (external: deletes every object under `prefix`). */
  stop(): Promise<void>
}

/** s3rver's built-in account (it checks that the access key id exists; it does not verify V4 signatures). */
const S3RVER_KEY = 'S3RVER'

/**
 * Makes s3rver's PutObject atomic, as S3's is. s3rver streams a body straight into the object's file (a second PUT of
 * the key truncates it and writes between the first one's chunks) and answers before the file is written; two
 * concurrent writers of one key could leave bytes of both, which no S3 store does. Here the body goes to a file of
 * its own first; its rename into place, the checksum and the metadata are then one step per key, and a GET's
 * metadata and open take the same turn, so a reader sees one whole object: the last PUT to finish wins.
 */
const ATOMIC_PUT_PATCH = `
const fsp = require('node:fs/promises')
const { createWriteStream } = require('node:fs')
const { createHash } = require('node:crypto')
const { pipeline } = require('node:stream/promises')
const pathOf = require('node:path')
const Store = require(pathOf.join(pathOf.dirname(process.argv[1]), 'stores', 'filesystem.js'))
const turns = new Map()
const inTurn = (key, step) => {
  const done = (turns.get(key) ?? Promise.resolve()).then(step)
  const settled = done.then(() => {}, () => {})
  turns.set(key, settled)
  settled.then(() => { if (turns.get(key) === settled) turns.delete(key) })
  return done
}
let uploads = 0
Store.prototype.putObject = async function (object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object')
  await fsp.mkdir(pathOf.dirname(objectPath), { recursive: true })
  const partial = objectPath + '.upload-' + ++uploads
  const md5 = createHash('md5')
  let size = 0
  const counted = async function* (source) { for await (const c of source) { md5.update(c); size += c.length; yield c } }
  try {
    await pipeline(Buffer.isBuffer(object.content) ? [object.content] : object.content, counted, createWriteStream(partial))
  } catch (err) {
    await fsp.rm(partial, { force: true })
    throw err
  }
  const digest = md5.digest('hex')
  await inTurn(objectPath, async () => {
    await fsp.rename(partial, objectPath)
    await this.putMetadata(object.bucket, object.key, object.metadata, digest)
  })
  return { size, md5: digest }
}
const getObject = Store.prototype.getObject
Store.prototype.getObject = function (bucket, key, options) {
  return inTurn(this.getResourcePath(bucket, key, 'object'), () => getObject.call(this, bucket, key, options))
}
`

/**
 * Runs in the child process. s3rver encrypts ListObjectsV2 continuation tokens with DES, which OpenSSL 3 (Node 17+)
 * only offers through its legacy provider: in-process, every listing of more than 1000 keys fails with HTTP 500.
 * So s3rver runs in its own `node --openssl-legacy-provider`, which also keeps its work off the test's event loop.
 * Protocol on stdout, one JSON object a line: {port} once, {request} per request, {sync} answering each stdin line.
 * It exits when stdin closes, so it cannot outlive the test process.
 */
const CHILD_SCRIPT = `
const S3rver = require(process.argv[1])
const [directory, bucket] = process.argv.slice(2)
${ATOMIC_PUT_PATCH}
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n')
const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [{ name: bucket }] })
server.run().then(({ port }) => {
  server.httpServer.on('request', (req) => out({ request: req.method + ' ' + req.url }))
  out({ port })
}, (err) => { process.stderr.write(String(err && err.stack || err)); process.exit(1) })
let n = 0
process.stdin.on('data', (d) => { for (const c of d.toString()) if (c === '\\n') out({ sync: ++n }) })
process.stdin.on('end', () => process.exit(0))
`

export interface StartS3Options {
  /**
   * `enforce` (default): s3rver behind a proxy that enforces `If-None-Match: *` as AWS S3 and recent MinIO do, so a
   * repository's init records `enforced` and records need no read-back. `server`: s3rver as it is, which ignores
   * the header (for the tests of stores without conditional writes).
   */
  conditionalWrites?: 'enforce' | 'server'
}

/** Starts s3rver (or connects to PGKEEP_TEST_S3_ENDPOINT) and makes sure the bucket exists. */
export async function startS3Server(o: StartS3Options = {}): Promise<S3TestServer> {
  const externalEndpoint = process.env.PGKEEP_TEST_S3_ENDPOINT
  if (externalEndpoint !== undefined && externalEndpoint !== '') return await useExternal(externalEndpoint)

  const s3rverPath = createRequire(import.meta.url).resolve('s3rver')
  const directory = await mkdtemp(path.join(os.tmpdir(), 'pgkeep-s3rver-'))
  const bucket = 'pgkeep-test'
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '-e', CHILD_SCRIPT, s3rverPath, directory, bucket], {
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const requests: string[] = []
  const syncWaiters = new Map<number, () => void>()
  let syncCount = 0
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d
  })
  const port = await new Promise<number>((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout })
    lines.on('line', (line) => {
      const msg = JSON.parse(line) as { port?: number; request?: string; sync?: number }
      if (msg.port !== undefined) resolve(msg.port)
      if (msg.request !== undefined) requests.push(msg.request)
      if (msg.sync !== undefined) syncWaiters.get(msg.sync)?.()
    })
    child.once('exit', (code) => reject(new Error(`s3rver exited with code ${String(code)}: ${stderr}`)))
  })
  const proxy = (o.conditionalWrites ?? 'enforce') === 'enforce' ? await startS3ConditionalProxy(`http://127.0.0.1:${port}`, 'enforce') : undefined
  return {
    endpoint: proxy?.endpoint ?? `http://127.0.0.1:${port}`,
    bucket,
    region: 'us-east-1',
    accessKeyId: S3RVER_KEY,
    secretAccessKey: S3RVER_KEY,
    prefix: '',
    external: false,
    async requestLog() {
      // A round trip through the child: every request line it printed before this answer has arrived.
      const n = ++syncCount
      await new Promise<void>((resolve) => {
        syncWaiters.set(n, resolve)
        child.stdin.write('\n')
      })
      syncWaiters.delete(n)
      return [...requests]
    },
    async stop() {
      await proxy?.close()
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.stdin.end()
        await exited
      }
      await rm(directory, { recursive: true, force: true })
    },
  }
}

async function useExternal(endpoint: string): Promise<S3TestServer> {
  const bucket = process.env.PGKEEP_TEST_S3_BUCKET ?? 'pgkeep-test'
  const accessKeyId = process.env.AWS_ACCESS_KEY_ID ?? ''
  const secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY ?? ''
  const region = process.env.AWS_REGION ?? 'us-east-1'
  const prefix = `pgkeep-test-${randomBytes(6).toString('hex')}/`
  const client = new S3Client({
    endpoint,
    region,
    forcePathStyle: true,
    credentials: { accessKeyId, secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
  })
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }))
  } catch (err) {
    const name = (err as { name?: string }).name
    if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err
  }
  return {
    endpoint,
    bucket,
    region,
    accessKeyId,
    secretAccessKey,
    prefix,
    external: true,
    requestLog: undefined,
    async stop() {
      let token: string | undefined
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }))
        await Promise.all((page.Contents ?? []).map((c) => client.send(new DeleteObjectCommand({ Bucket: bucket, Key: c.Key }))))
        token = page.IsTruncated === true ? page.NextContinuationToken : undefined
      } while (token !== undefined)
      client.destroy()
    },
  }
}
