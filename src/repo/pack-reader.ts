// Reading packs back: the trailing header alone (one ranged read of the tail, for verify and index rebuilds), or
// the whole pack (for `verify --read-data`, which checks it against its name).

import { IntegrityError, NotFoundError } from '../errors.js'
import type { Storage } from '../storage/storage.js'
import type { RepoKeys } from './crypto.js'
import { packKey } from './layout.js'
import { decodePackHeader, locatePackHeader, type PackEntry } from './pack-format.js'
import { isNotFound, readObject } from './storage-io.js'

/** Bytes read from the end of a pack in the first request: the header of a 16 MiB pack of 1 MiB blobs is ~800 B. */
const TAIL_GUESS_BYTES = 64 * 1024

function missing(name: string, cause: unknown): NotFoundError {
  return new NotFoundError(`pack '${name}' is missing`, { cause, hint: "run 'pgkeep verify' to list every damaged object" })
}

/**
 * Reads and verifies the header of pack `packId`. `sizeBytes` (from a listing) saves a stat. Throws NotFoundError
 * when the pack does not exist and IntegrityError when it is truncated or its header is damaged.
 */
export async function readPackHeader(
  storage: Storage,
  packId: string,
  keys: RepoKeys | undefined,
  o: { sizeBytes?: number; signal?: AbortSignal } = {},
): Promise<PackEntry[]> {
  const name = packKey(packId)
  let size = o.sizeBytes
  if (size === undefined) {
    const info = await storage.stat(name, { signal: o.signal })
    if (!info) throw missing(name, undefined)
    size = info.sizeBytes
  }
  const read = async (n: number) => {
    const offset = Math.max(0, size! - n)
    try {
      const tail = await readObject(storage, name, { offset, length: size! - offset, signal: o.signal })
      if (tail.length !== size! - offset) {
        throw new IntegrityError(`pack '${name}' is truncated: read ${tail.length} of ${size! - offset} tail bytes`)
      }
      return tail
    } catch (err) {
      throw isNotFound(err) ? missing(name, err) : err
    }
  }
  let tail = await read(TAIL_GUESS_BYTES)
  let found = locatePackHeader(tail, size, name)
  if ('needTailBytes' in found) {
    tail = await read(found.needTailBytes)
    found = locatePackHeader(tail, size, name)
    if ('needTailBytes' in found) throw new IntegrityError(`pack '${name}' changed while it was read`)
  }
  return decodePackHeader(Buffer.from(found.header), found.headerStart, keys, name)
}

/** Reads pack `packId` whole. Throws NotFoundError naming the pack when it does not exist. */
export async function readPackBytes(storage: Storage, packId: string, o: { signal?: AbortSignal } = {}): Promise<Buffer> {
  const name = packKey(packId)
  try {
    return await readObject(storage, name, { signal: o.signal })
  } catch (err) {
    throw isNotFound(err) ? missing(name, err) : err
  }
}

/** Decodes the header of a whole pack's bytes. Throws IntegrityError naming the pack when it is damaged. */
export function decodeWholePackHeader(bytes: Buffer, packId: string, keys: RepoKeys | undefined): PackEntry[] {
  const name = packKey(packId)
  const found = locatePackHeader(bytes, bytes.length, name)
  if ('needTailBytes' in found) throw new IntegrityError(`pack '${name}' is damaged: header length out of range`)
  return decodePackHeader(Buffer.from(found.header), found.headerStart, keys, name)
}
