// The streaming reader of BASE_BACKUP's tar archives (src/backup/tar-entries.ts): entries arrive in order with their
// content, and a failure of the entry callback reaches a write() that is waiting for tar-stream to drain, so the
// engine's receive loop stops at once instead of hanging with the connection open.

import tar from 'tar-stream'
import { describe, expect, it } from 'vitest'
import { TarArchiveReader } from '../../src/backup/tar-entries.js'

const scope = { name: 'base.tar', tablespaceOid: null, tablespaces: new Map<number, string>(), major: 17 }

/** A tar archive of `files` (name → content), as bytes. */
async function archive(files: [string, Buffer][]): Promise<Buffer> {
  const pack = tar.pack()
  for (const [name, content] of files) pack.entry({ name, size: content.length, mode: 0o600, mtime: new Date(0) }, content)
  pack.finalize()
  const parts: Buffer[] = []
  for await (const chunk of pack as AsyncIterable<Buffer>) parts.push(chunk)
  return Buffer.concat(parts)
}

/** Feeds `bytes` in 8 KiB writes, then ends the archive. */
async function feed(reader: TarArchiveReader, bytes: Buffer): Promise<void> {
  for (let at = 0; at < bytes.length; at += 8192) await reader.write(bytes.subarray(at, at + 8192))
  await reader.end()
}

describe('TarArchiveReader', () => {
  it('hands every entry over in archive order, with its content', async () => {
    const files: [string, Buffer][] = [
      ['PG_VERSION', Buffer.from('17\n')],
      ['base/1/1259', Buffer.alloc(3 * 8192, 7)],
      ['global/pg_control', Buffer.alloc(8192, 1)],
    ]
    const seen: [string, number, number][] = []
    const reader = new TarArchiveReader(scope, async (e) => {
      let bytes = 0
      let sum = 0
      for await (const chunk of e.content) {
        bytes += chunk.length
        for (const b of chunk) sum += b
      }
      seen.push([e.path, bytes, sum])
    })
    await feed(reader, await archive(files))
    expect(seen).toEqual(files.map(([name, c]) => [name, c.length, c.reduce((a, b) => a + b, 0)]))
  })

  it('rejects a write that waits for room once the entry callback fails, and every write after it', async () => {
    // A slow consumer of a large file fills tar-stream's buffer, so writes wait for 'drain'; then it fails.
    let waited = 0
    const reader = new TarArchiveReader(scope, async (e) => {
      for await (const _chunk of e.content) {
        if (++waited === 50) throw new Error('ingest failed')
        await new Promise((r) => setTimeout(r, 1))
      }
    })
    const bytes = await archive([['base/1/16384', Buffer.alloc(16 << 20, 3)]])
    const outcome = await Promise.race([
      feed(reader, bytes).then(
        () => 'finished',
        (err: Error) => err.message,
      ),
      new Promise((r) => setTimeout(() => r('still waiting after 10 s'), 10_000)),
    ])
    expect(outcome).toBe('ingest failed')
    await expect(reader.write(Buffer.alloc(512))).rejects.toThrow('ingest failed')
  })
})
