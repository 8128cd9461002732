// The small-file writer's thread (small-file-writer.ts): writes each batch of small files it is sent, in order,
// with synchronous calls, and answers with the bytes written per file and the batch's buffer (transferred back for
// the next batch). It stops a batch at the first failure and says which file failed and how.

import { parentPort } from 'node:worker_threads'
import type { SmallFileBatch, SmallFileReply } from './small-file-writer.js'
import { writeSmallFileSync } from './small-file-io.js'

parentPort!.on('message', (batch: SmallFileBatch) => {
  const { meta, data } = batch
  const paths = batch.paths.split('\0')
  const written: number[] = []
  let error: SmallFileReply['error']
  for (let f = 0, at = 0; f < paths.length; f++) {
    const [mode, mtime, sizeBytes, count] = [meta[at]!, meta[at + 1]!, meta[at + 2]!, meta[at + 3]!]
    at += 4
    const parts: Buffer[] = []
    const offsets: number[] = []
    for (let i = 0; i < count; i++, at += 3) {
      offsets.push(meta[at]!)
      parts.push(Buffer.from(data, meta[at + 1]!, meta[at + 2]!))
    }
    try {
      written.push(writeSmallFileSync(paths[f]!, mode, mtime, sizeBytes, parts, offsets))
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      error = { message: e.message, code: e.code, errno: e.errno, syscall: e.syscall, path: e.path }
      break
    }
  }
  const reply: SmallFileReply = { written, error, data }
  parentPort!.postMessage(reply, [data])
})
