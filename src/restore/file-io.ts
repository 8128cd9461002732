// Positional file I/O for restore: gathered writes that finish short writes, exact reads (zeros past the end), the
// CRC-32C of a file on disk, and a bounded queue of writes in flight.

import type { FileHandle } from 'node:fs/promises'
import { crc32cFinal, crc32cInit, crc32cUpdate } from '../pg/crc32c.js'
import { WINDOW_BYTES } from '../repo/index.js'
import { skipBytes } from './small-file-io.js'

/** writev until every byte is written (a regular file may take a short write). */
export async function writeAll(fh: FileHandle, bufs: Buffer[], position: number): Promise<void> {
  let pending = bufs
  let pos = position
  while (pending.length > 0) {
    const { bytesWritten } = await fh.writev(pending, pos)
    pos += bytesWritten
    pending = skipBytes(pending, bytesWritten)
  }
}

/** Reads exactly `n` bytes at `position`; past the end of the file the rest is zeros. */
export async function readFully(fh: FileHandle, buf: Buffer, n: number, position: number): Promise<void> {
  let got = 0
  while (got < n) {
    const { bytesRead } = await fh.read(buf, got, n - got, position + got)
    if (bytesRead === 0) break
    got += bytesRead
  }
  if (got < n) buf.fill(0, got, n)
}

/** CRC-32C of the first `sizeBytes` of an open file, read a window at a time. */
export async function crcOfHandle(fh: FileHandle, sizeBytes: number, signal?: AbortSignal): Promise<number> {
  const buf = Buffer.allocUnsafe(WINDOW_BYTES)
  let crc = crc32cInit()
  for (let at = 0; at < sizeBytes; at += WINDOW_BYTES) {
    signal?.throwIfAborted()
    const n = Math.min(WINDOW_BYTES, sizeBytes - at)
    await readFully(fh, buf, n, at)
    crc = crc32cUpdate(crc, buf.subarray(0, n))
  }
  return crc32cFinal(crc)
}

/** At most `limit` writes in flight; the first failure is thrown by the next add() or by drain(). */
export class WriteQueue {
  readonly #inFlight = new Set<Promise<void>>()
  #failure: { error: unknown } | undefined

  constructor(private readonly limit: number) {}

  async add(p: Promise<void>): Promise<void> {
    const tracked: Promise<void> = p.then(
      () => void this.#inFlight.delete(tracked),
      (error: unknown) => {
        this.#inFlight.delete(tracked)
        this.#failure ??= { error }
      },
    )
    this.#inFlight.add(tracked)
    if (this.#inFlight.size >= this.limit) await Promise.race(this.#inFlight)
    if (this.#failure) throw this.#failure.error
  }

  async drain(): Promise<void> {
    await Promise.all(this.#inFlight)
    if (this.#failure) throw this.#failure.error
  }
}
