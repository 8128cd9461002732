// Small helpers over the Storage interface used throughout the repository: read a whole object (or a range) into
// one Buffer, and run an async function over items with bounded concurrency.

import { Codes, isPgkeepError } from '../errors.js'
import type { ReadOptions, Storage } from '../storage/storage.js'

/** Reads an object (or the range `offset`/`length`) into one Buffer. A missing key rejects with NotFoundError. */
export async function readObject(storage: Storage, key: string, o: ReadOptions = {}): Promise<Buffer> {
  const chunks: Uint8Array[] = []
  let total = 0
  for await (const chunk of storage.read(key, o)) {
    chunks.push(chunk)
    total += chunk.length
  }
  if (chunks.length === 1) {
    const c = chunks[0]!
    return Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.length)
  }
  return Buffer.concat(chunks, total)
}

/**
 * Calls `fn` for every item of `items` with at most `concurrency` calls running; rejects with the first failure
 * after the running calls settle. Items are pulled lazily, so a long async source is never buffered.
 */
export async function forEachConcurrent<T>(items: Iterable<T> | AsyncIterable<T>, concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  const running = new Set<Promise<void>>()
  let failure: { error: unknown } | undefined
  for await (const item of items as AsyncIterable<T>) {
    if (failure) break
    const p: Promise<void> = fn(item).then(
      () => void running.delete(p),
      (error: unknown) => {
        running.delete(p)
        failure ??= { error }
      },
    )
    running.add(p)
    if (running.size >= concurrency) await Promise.race(running)
  }
  await Promise.all(running)
  if (failure) throw failure.error
}

/** True for the NotFoundError a Storage raises for a missing key (checked by code, so copies of the package agree). */
export function isNotFound(err: unknown): boolean {
  return isPgkeepError(err) && err.code === Codes.NOT_FOUND
}

/** True for the AlreadyExistsError of a `write(…, { ifAbsent: true })` that found the key present. */
export function isAlreadyExists(err: unknown): boolean {
  return isPgkeepError(err) && err.code === Codes.ALREADY_EXISTS
}
