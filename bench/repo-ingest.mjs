#!/usr/bin/env node
// Ingest throughput of the repository layer alone: reads every file under --source, cuts it into fixed blobs
// (1 MiB by default), and puts them into a fresh repository (hash + compress + encrypt + pack + write), then
// flushes. Prints one JSON line. Runs the compiled code: `npm run build` first.
//
//   node bench/repo-ingest.mjs --source DIR --repo DIR|s3://bucket/prefix [--compress zstd:N|none] [--encrypt]
//        [--blob-mib 1] [--pack-mib 16] [--read-only]
//
// For S3 the usual AWS_* variables apply (AWS_ENDPOINT_URL for a local server). Wrap in `/usr/bin/time -v` for the
// peak RSS as the kernel sees it; the line also carries Node's own maxRSS.

import { open, readdir } from 'node:fs/promises'
import path from 'node:path'
import { parseArgs } from 'node:util'

import { initRepository } from '../dist/src/repo/index.js'
import { openStorage } from '../dist/src/storage/open.js'

const { values } = parseArgs({
  options: {
    source: { type: 'string' },
    repo: { type: 'string' },
    compress: { type: 'string', default: 'zstd:3' },
    encrypt: { type: 'boolean', default: false },
    'blob-mib': { type: 'string', default: '1' },
    'pack-mib': { type: 'string', default: '16' },
    'read-only': { type: 'boolean', default: false },
  },
})
if (!values.source || (!values.repo && !values['read-only'])) {
  process.stderr.write('usage: node bench/repo-ingest.mjs --source DIR --repo URL [--compress zstd:N|none] [--encrypt] [--read-only]\n')
  process.exit(2)
}
const blobBytes = Math.round(Number(values['blob-mib']) * 1048576)

async function* files(dir) {
  const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))
  for (const e of entries) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) yield* files(p)
    else if (e.isFile()) yield p
  }
}

/** Yields the file's content in fresh buffers of at most blobBytes (the repository may keep them). */
async function* pieces(file) {
  const fh = await open(file, 'r')
  try {
    for (;;) {
      const buf = Buffer.allocUnsafe(blobBytes)
      let filled = 0
      while (filled < blobBytes) {
        const { bytesRead } = await fh.read(buf, filled, blobBytes - filled, null)
        if (bytesRead === 0) break
        filled += bytesRead
      }
      if (filled === 0) return
      yield filled === blobBytes ? buf : buf.subarray(0, filled)
      if (filled < blobBytes) return
    }
  } finally {
    await fh.close()
  }
}

const compression = values.compress === 'none' ? 'none' : { level: Number(values.compress.replace(/^zstd:?/, '') || 3) }
let repo
let storage
if (!values['read-only']) {
  storage = await openStorage(values.repo, process.env)
  repo = await initRepository(storage, {
    compression,
    packTargetBytes: Math.round(Number(values['pack-mib']) * 1048576),
    encrypt: values.encrypt ? { passphrase: 'bench passphrase' } : undefined,
  })
}

const cpu0 = process.cpuUsage()
const t0 = performance.now()
let sourceBytes = 0
let fileCount = 0
let blobsPut = 0
for await (const file of files(values.source)) {
  fileCount++
  for await (const piece of pieces(file)) {
    sourceBytes += piece.length
    blobsPut++
    if (repo) await repo.putBlob('data', piece)
  }
}
if (repo) await repo.flush()
const seconds = (performance.now() - t0) / 1000
const cpu = process.cpuUsage(cpu0)

let storedBytes = 0
let packs = 0
if (storage) {
  for await (const o of storage.list('packs/')) {
    storedBytes += o.sizeBytes
    packs++
  }
}
const stats = repo?.sessionStats
await repo?.close()
await storage?.close()
process.stdout.write(
  JSON.stringify({
    bench: 'repo-ingest',
    node: process.version,
    repo: storage?.name ?? null,
    compress: values.compress,
    encrypt: values.encrypt,
    readOnly: values['read-only'],
    files: fileCount,
    sourceBytes,
    blobsPut,
    blobsStored: stats?.blobsStored ?? 0,
    packs,
    storedBytes,
    ratio: storedBytes ? +(sourceBytes / storedBytes).toFixed(2) : null,
    seconds: +seconds.toFixed(2),
    mbPerSec: +(sourceBytes / 1e6 / seconds).toFixed(1),
    cpuSeconds: +((cpu.user + cpu.system) / 1e6).toFixed(2),
    maxRssMiB: +(process.resourceUsage().maxRSS / 1024).toFixed(0),
  }) + '\n',
)
