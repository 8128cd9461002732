// The worker thread of a CodecPool: runs codec jobs (codec-work.ts) with the repository's codec, one at a time, in
// the order they arrive. Buffers come in and go back as transferred ArrayBuffers. The repository's keys arrive in
// workerData and never leave.

import { parentPort, workerData } from 'node:worker_threads'
import { BlobCodec } from './blob.js'
import { type CodecJob, type CodecJobResult, type CodecWorkerData, runCodecJob } from './codec-work.js'
import type { RepoKeys } from './crypto.js'

const data = workerData as CodecWorkerData
const asBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength)
const keys: RepoKeys | undefined = data.keys ? { dataKey: asBuffer(data.keys.dataKey), idKey: asBuffer(data.keys.idKey) } : undefined
const codec = new BlobCodec(keys, data.compressionLevel)

parentPort!.on('message', (m: CodecJob) => {
  let out: { result: CodecJobResult; transfer: ArrayBuffer[] }
  try {
    out = runCodecJob(m, codec)
  } catch (err) {
    // A window (or the buffer lent for plain bytes) goes back either way, so the pool can reuse it.
    const buffer = m.op === 'decode' ? m.plain : m.buffer
    out = { result: { op: 'error', job: m.job, buffer, message: (err as Error)?.message ?? String(err) }, transfer: buffer ? [buffer] : [] }
  }
  parentPort!.postMessage(out.result, out.transfer)
})
