// Writing one small file with synchronous system calls: open, gathered writes, size, mode, times, close, with no
// trip through libuv's thread pool and no await between them. Run on the small-file writer's thread
// (small-file-writer.ts), or on the calling thread when there is none. A leaf (node:fs only): the writer's thread
// loads nothing else.

import { closeSync, constants, fchmodSync, ftruncateSync, futimesSync, openSync, writevSync } from 'node:fs'

const { O_CREAT, O_NOFOLLOW, O_TRUNC, O_WRONLY } = constants

/**
 * Writes a small file, never through a link in its last component (its directories are the target tree's to
 * check): `parts` at `offsets` (ascending; what lies between stays a hole), the size, the mode and the time.
 * Returns the bytes written.
 */
export function writeSmallFileSync(path: string, mode: number, mtime: number, sizeBytes: number, parts: readonly Buffer[], offsets: readonly number[]): number {
  const fd = openSync(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode)
  try {
    let written = 0
    let end = 0
    for (let i = 0; i < parts.length; ) {
      // Consecutive parts go out in one writev.
      const at = offsets[i]!
      let bufs = [parts[i]!]
      end = at + parts[i]!.length
      for (i++; i < parts.length && offsets[i] === end; i++) {
        bufs.push(parts[i]!)
        end += parts[i]!.length
      }
      // A regular file takes a short write only when the disk is full (the next call then fails with ENOSPC).
      for (let pos = at; bufs.length > 0; ) {
        const n = writevSync(fd, bufs, pos)
        pos += n
        written += n
        bufs = skipBytes(bufs, n)
      }
    }
    if (end < sizeBytes) ftruncateSync(fd, sizeBytes)
    fchmodSync(fd, mode)
    futimesSync(fd, mtime, mtime)
    return written
  } finally {
    closeSync(fd)
  }
}

/** What is left of `bufs` after the first `n` bytes (a short write's remainder). */
export function skipBytes(bufs: Buffer[], n: number): Buffer[] {
  let skip = n
  const rest: Buffer[] = []
  for (const b of bufs) {
    if (skip >= b.length) skip -= b.length
    else {
      rest.push(skip > 0 ? b.subarray(skip) : b)
      skip = 0
    }
  }
  return rest
}
