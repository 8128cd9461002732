// The worker thread of a DecodePool: decodes blobs with the repository's codec (decrypt, decompress, verify the id)
// and hashes pages for delta restores, one job at a time. The keys arrive in workerData and never leave.

import { parentPort, workerData } from 'node:worker_threads'
import { BlobCodec } from '../repo/blob.js'
import type { RepoKeys } from '../repo/crypto.js'
import type { DecodeJob, DecodeJobResult, DecodeWorkerData } from './decode-pool.js'
import { pageHashesOf } from './page-hashes.js'

const data = workerData as DecodeWorkerData
const asBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength)
const keys: RepoKeys | undefined = data.keys ? { dataKey: asBuffer(data.keys.dataKey), idKey: asBuffer(data.keys.idKey) } : undefined
const codec = new BlobCodec(keys, undefined)

function run(m: DecodeJob): { result: DecodeJobResult; transfer: ArrayBuffer[] } {
  if (m.op === 'decode') {
    const plain = codec.decode(Buffer.from(m.stored), m.flags, m.plainLength, Buffer.from(m.id, 'hex'), `blob '${m.id}'`)
    // Uncompressed plain bytes may be a view into the stored buffer: give back exactly the blob.
    const own = plain.byteOffset === 0 && plain.byteLength === plain.buffer.byteLength && plain.buffer instanceof ArrayBuffer ? plain.buffer : new Uint8Array(plain).buffer
    return { result: { op: 'decode', job: m.job, plain: own }, transfer: [own] }
  }
  const hashes = pageHashesOf(Buffer.from(m.buffer, 0, m.length))
  const h = hashes.byteOffset === 0 && hashes.byteLength === hashes.buffer.byteLength ? (hashes.buffer as ArrayBuffer) : new Uint8Array(hashes).buffer
  return { result: { op: 'hash', job: m.job, buffer: m.buffer, hashes: h }, transfer: [m.buffer, h] }
}

parentPort?.on('message', (m: DecodeJob) => {
  let out: { result: DecodeJobResult; transfer: ArrayBuffer[] }
  try {
    out = run(m)
  } catch (err) {
    const buffer = m.op === 'hash' ? m.buffer : undefined
    out = { result: { op: 'error', job: m.job, message: (err as Error)?.message ?? String(err), buffer }, transfer: buffer ? [buffer] : [] }
  }
  parentPort!.postMessage(out.result, out.transfer)
})
