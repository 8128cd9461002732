// WAL in the repository is cut into pieces of 1 MiB at absolute offsets in its segment (docs/wal.md §1): each piece
// a data blob, or a hole when it is all zeros. Every writer of the same WAL cuts it the same way.

import { isAllZero } from '../pg/page.js'
import type { Repository } from './repository.js'
import type { WalPiece } from './wal-catalog.js'

/** WAL is stored in pieces of 1 MiB: page runs compress well, and a partial segment shares its leading pieces. */
export const WAL_PIECE_BYTES = 1 << 20

/**
 * Puts `bytes[from, to)` (offsets in the file: the whole of `bytes` by default) as data blobs cut at absolute
 * multiples of WAL_PIECE_BYTES, all-zero pieces as holes: every writer of the same WAL (streamer, `wal push`, a
 * copy from another repository) gets the same blobs. The blobs are durable after the repository's next flush.
 */
export async function putWalPieces(repo: Repository, bytes: Buffer, o: { from?: number; to?: number; signal?: AbortSignal } = {}): Promise<WalPiece[]> {
  const pieces: WalPiece[] = []
  const to = o.to ?? bytes.length
  for (let off = o.from ?? 0; off < to; ) {
    const end = Math.min(to, (Math.floor(off / WAL_PIECE_BYTES) + 1) * WAL_PIECE_BYTES)
    const piece = bytes.subarray(off, end)
    if (isAllZero(piece)) pieces.push([null, piece.length])
    else pieces.push([(await repo.putBlob('data', piece, { signal: o.signal })).id, piece.length])
    off = end
  }
  return pieces
}

/** Holes for the zeros in [from, to), cut at absolute multiples of WAL_PIECE_BYTES as putWalPieces cuts them. */
export function zeroPieces(from: number, to: number): WalPiece[] {
  const out: WalPiece[] = []
  for (let off = from; off < to; ) {
    const end = Math.min(to, (Math.floor(off / WAL_PIECE_BYTES) + 1) * WAL_PIECE_BYTES)
    out.push([null, end - off])
    off = end
  }
  return out
}
