// The worker thread of a WindowPool: analyzes windows (page hashes, blob id, CRC-32C) and encodes blobs (zstd, then
// AES-256-GCM when encrypted) with the repository's codec, one job at a time, in the order they arrive. Buffers come
// in and go back as transferred ArrayBuffers. The repository's keys arrive in workerData and never leave.

import { parentPort, workerData } from 'node:worker_threads'
import { BlobCodec } from '../repo/blob.js'
import type { RepoKeys } from '../repo/crypto.js'
import { analyzeWindow, type WindowJob, type WindowJobResult, type WindowWorkerData } from './window-work.js'

const data = workerData as WindowWorkerData
const asBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength)
const keys: RepoKeys | undefined = data.keys ? { dataKey: asBuffer(data.keys.dataKey), idKey: asBuffer(data.keys.idKey) } : undefined
const codec = new BlobCodec(keys, data.compressionLevel)

/** `b` as an ArrayBuffer of its own, ready to transfer (a copy when it is a view into a larger one, e.g. the pool). */
function ownArrayBuffer(b: Buffer): ArrayBuffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) return b.buffer
  const copy = new ArrayBuffer(b.byteLength)
  new Uint8Array(copy).set(b)
  return copy
}

function run(m: WindowJob): { result: WindowJobResult; transfer: ArrayBuffer[] } {
  const bytes = Buffer.from(m.buffer, m.offset, m.length)
  if (m.op === 'analyze') {
    const a = analyzeWindow(bytes, codec, m.request)
    const pageHashes = a.pageHashes ? ownArrayBuffer(a.pageHashes) : undefined
    return {
      result: { op: 'analyze', job: m.job, buffer: m.buffer, allZero: a.allZero, crc32c: a.crc32c, id: a.id, pageHashes },
      transfer: pageHashes ? [m.buffer, pageHashes] : [m.buffer],
    }
  }
  const e = codec.encode(bytes)
  const stored = ownArrayBuffer(e.stored)
  return { result: { op: 'encode', job: m.job, buffer: m.buffer, stored, flags: e.flags }, transfer: [m.buffer, stored] }
}

parentPort!.on('message', (m: WindowJob) => {
  let out: { result: WindowJobResult; transfer: ArrayBuffer[] }
  try {
    out = run(m)
  } catch (err) {
    // The buffer goes back either way, so the pool can reuse it.
    out = { result: { op: 'error', job: m.job, buffer: m.buffer, message: (err as Error)?.message ?? String(err) }, transfer: [m.buffer] }
  }
  parentPort!.postMessage(out.result, out.transfer)
})
