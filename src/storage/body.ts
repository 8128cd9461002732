// Pulling a factory write body (storage.ts `Body`) with abort support, while remembering which errors came from
// the producer itself: those propagate unchanged (they are the caller's), everything else is the driver's to map.

import { raceAbort } from './abort.js'

/** A pull handle on one replay of a factory body. */
export interface BodyPuller {
  /** The next chunk, or undefined at the end; rejects with the signal's reason on abort. */
  next(): Promise<Uint8Array | undefined>
  /** True when `err` was thrown by the producer (so it must be rethrown as is). */
  isProducerError(err: unknown): boolean
  /** Lets the producer run its clean-up when we stop early; never waits for it (it may be stuck). */
  release(): void
}

/** Starts one replay of `factory`. */
export function pullBody(factory: () => AsyncIterable<Uint8Array>, signal: AbortSignal | undefined): BodyPuller {
  let it: AsyncIterator<Uint8Array> | undefined
  let producerError: { error: unknown } | undefined
  let finished = false
  return {
    async next() {
      try {
        it ??= factory()[Symbol.asyncIterator]()
        const r = await raceAbort(it.next(), signal)
        if (r.done === true) {
          finished = true
          return undefined
        }
        return r.value
      } catch (err) {
        if (!(signal?.aborted === true && err === signal.reason)) producerError = { error: err }
        throw err
      }
    },
    isProducerError(err) {
      return producerError !== undefined && producerError.error === err
    },
    release() {
      if (finished || it === undefined) return
      finished = true
      const iterator = it
      if (typeof iterator.return === 'function') {
        Promise.resolve()
          .then(() => iterator.return?.())
          .catch(() => {})
      }
    },
  }
}
