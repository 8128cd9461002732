// UPLOAD_MANIFEST (PG 17+): sends a prior backup's manifest so that the next BASE_BACKUP (INCREMENTAL) on the same
// connection sends only blocks changed since that backup.

import { ProtocolError } from '../errors.js'
import type { ReplicationConnection } from '../session/connection.js'
import { frontend } from '../wire/frontend.js'

const PIECE_BYTES = 64 * 1024

export async function uploadManifest(
  c: ReplicationConnection,
  manifest: Uint8Array | AsyncIterable<Uint8Array>,
  o: { signal?: AbortSignal } = {},
): Promise<void> {
  if (c.serverMajor < 17) throw new ProtocolError(`UPLOAD_MANIFEST needs PostgreSQL 17 or later (server is ${c.serverMajor})`)
  const release = c.begin('UPLOAD_MANIFEST')
  const onAbort = () => c.destroy(o.signal?.reason)
  o.signal?.addEventListener('abort', onAbort, { once: true })
  try {
    c.send(frontend.query('UPLOAD_MANIFEST'))
    const first = await c.read()
    if (first.type === 'ErrorResponse') await c.failWith(first.fields)
    if (first.type !== 'CopyInResponse') throw new ProtocolError(`expected CopyInResponse, got ${first.type}`)
    const pieces: AsyncIterable<Uint8Array> | Iterable<Uint8Array> = manifest instanceof Uint8Array ? [manifest] : manifest
    for await (const piece of pieces) {
      for (let off = 0; off < piece.length; off += PIECE_BYTES) {
        c.send(frontend.copyData(Buffer.from(piece.buffer, piece.byteOffset + off, Math.min(PIECE_BYTES, piece.length - off))))
        await c.drained()
      }
    }
    c.send(frontend.copyDone())
    await c.collectResults()
  } finally {
    o.signal?.removeEventListener('abort', onAbort)
    release()
  }
}
