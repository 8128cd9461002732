// Storage write/read throughput: 256 MiB as 16 MiB objects through the fs driver and the s3 driver (s3rver in a
// child process, as a real store would be another process), with one writer and with four. Reports MB/s.
// Run after `npm run build`:  node bench/storage-throughput.mjs [--total-mib 256] [--object-mib 16]
// Prints one JSON line per measurement, then a readable table.

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'

import { openFsStorage } from '../dist/src/storage/fs.js'
import { openS3Storage } from '../dist/src/storage/s3.js'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`)
  return i < 0 ? dflt : Number(process.argv[i + 1])
}
const MIB = 1 << 20
const totalMiB = arg('total-mib', 256)
const objectMiB = arg('object-mib', 16)
const count = Math.floor(totalMiB / objectMiB)

// One random buffer per object: incompressible, and distinct so no layer can dedup.
const objects = Array.from({ length: count }, () => randomBytes(objectMiB * MIB))

async function startS3rver(dir) {
  const s3rverPath = createRequire(import.meta.url).resolve('s3rver')
  const script = `
    const S3rver = require(process.argv[1])
    const s = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: process.argv[2], configureBuckets: [{ name: 'bench' }] })
    s.run().then(({ port }) => process.stdout.write(JSON.stringify({ port }) + '\\n'))
    process.stdin.on('end', () => process.exit(0)); process.stdin.resume()`
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '-e', script, s3rverPath, dir], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const port = await new Promise((resolve) => {
    readline.createInterface({ input: child.stdout }).once('line', (l) => resolve(JSON.parse(l).port))
  })
  return {
    endpoint: `http://127.0.0.1:${port}`,
    stop: () =>
      new Promise((r) => {
        child.once('exit', r)
        child.stdin.end()
      }),
  }
}

/** Writes every object with `writers` concurrent writers; returns MB/s (10^6 bytes per second). */
async function writeAll(storage, prefix, writers, asFactory) {
  let next = 0
  const started = process.hrtime.bigint()
  await Promise.all(
    Array.from({ length: writers }, async () => {
      for (let i = next++; i < count; i = next++) {
        const data = objects[i]
        const body = asFactory
          ? async function* () {
              for (let o = 0; o < data.byteLength; o += MIB) yield data.subarray(o, o + MIB)
            }
          : data
        await storage.write(`${prefix}/obj-${i}`, body)
      }
    }),
  )
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  return (count * objectMiB * MIB) / 1e6 / seconds
}

async function readAll(storage, prefix, readers) {
  let next = 0
  let bytes = 0
  const started = process.hrtime.bigint()
  await Promise.all(
    Array.from({ length: readers }, async () => {
      for (let i = next++; i < count; i = next++) {
        for await (const c of storage.read(`${prefix}/obj-${i}`)) bytes += c.byteLength
      }
    }),
  )
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  if (bytes !== count * objectMiB * MIB) throw new Error(`read ${bytes} bytes, expected ${count * objectMiB * MIB}`)
  return bytes / 1e6 / seconds
}

const results = []
const record = (driver, op, body, concurrency, mbps) => {
  const r = { bench: 'storage-throughput', driver, op, body, concurrency, objectMiB, totalMiB, mbps: Math.round(mbps), node: process.version }
  results.push(r)
  console.log(JSON.stringify(r))
}

const tmp = await mkdtemp(path.join(os.tmpdir(), 'pgkeep-bench-'))
try {
  const fs = await openFsStorage(path.join(tmp, 'fs'))
  let run = 0
  for (const concurrency of [1, 4]) {
    for (const asFactory of [false, true]) {
      const prefix = `r${run++}`
      record('fs', 'write', asFactory ? 'factory' : 'bytes', concurrency, await writeAll(fs, prefix, concurrency, asFactory))
      record('fs', 'read', '-', concurrency, await readAll(fs, prefix, concurrency))
      await rm(path.join(tmp, 'fs', prefix), { recursive: true })
    }
  }

  const s3rver = await startS3rver(path.join(tmp, 's3rver'))
  try {
    const s3 = await openS3Storage({
      bucket: 'bench',
      prefix: 'bench',
      endpoint: s3rver.endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    })
    for (const concurrency of [1, 4]) {
      for (const asFactory of [false, true]) {
        const prefix = `r${run++}`
        record('s3rver', 'write', asFactory ? 'factory' : 'bytes', concurrency, await writeAll(s3, prefix, concurrency, asFactory))
        record('s3rver', 'read', '-', concurrency, await readAll(s3, prefix, concurrency))
        for (let i = 0; i < count; i++) await s3.remove(`${prefix}/obj-${i}`)
      }
    }
    await s3.close()
  } finally {
    await s3rver.stop()
  }
} finally {
  await rm(tmp, { recursive: true, force: true })
}

console.log(`\n${totalMiB} MiB as ${count} objects of ${objectMiB} MiB (MB/s = 10^6 bytes/s)`)
console.log('driver   op     body     writers  MB/s')
for (const r of results) {
  console.log(`${r.driver.padEnd(8)} ${r.op.padEnd(6)} ${r.body.padEnd(8)} ${String(r.concurrency).padEnd(8)} ${r.mbps}`)
}
