#!/usr/bin/env node
// The CPU floor of a content-addressed, compressed store of a database on this machine, on one thread: the work any
// tool storing what pgkeep stores must do, without anything pgkeep adds (the protocol, pack and file lists, the
// CRC-32C check against the server's manifest, page hashes for incrementals, garbage collection).
//
//   store OUT DIR...  reads every regular file under the DIRs (pg_wal left out) in 1 MiB windows, as pgkeep cuts
//                     them; names each by its SHA-256 and compresses it with zstd level 1 (the repository's defaults;
//                     a window that does not shrink is kept as it is; one whose first 64 KiB stay above 80% of their
//                     size at level 1 is compressed at level -7, as pgkeep's codec does); writes the windows one
//                     after another to OUT
//   load OUT          reads OUT back, decompresses each window and checks its SHA-256: what restore must do for
//                     every byte before writing it (the tar rows say what writing costs)
//
// Prints {"bytes": N}, N the plain bytes handled. Usage: node bench/store-limit.mjs store|load OUT [DIR...]

import { createHash } from 'node:crypto'
import { closeSync, openSync, readdirSync, readSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import zstd from 'zstd-napi/binding.js'

const WINDOW_BYTES = 1 << 20
const LEVEL = 1
/** Data that compresses little goes at zstd's fast level -7 (the rule of src/repo/blob.ts, written again here). */
const PROBE_BYTES = 64 << 10
const HARD_DATA_RATIO = 0.8
const HARD_DATA_LEVEL = -7
/** Each window in OUT: its plain length, stored length (equal when kept as it is), SHA-256, then the stored bytes. */
const HEADER_BYTES = 4 + 4 + 32

const [mode, out, ...dirs] = process.argv.slice(2)
if ((mode !== 'store' && mode !== 'load') || !out || (mode === 'store' && dirs.length === 0)) {
  process.stderr.write('usage: node bench/store-limit.mjs store OUT DIR... | load OUT\n')
  process.exit(2)
}

/** zstd's level for `window`: LEVEL, or HARD_DATA_LEVEL when a window's first PROBE_BYTES barely shrink. */
function levelFor(cctx, window) {
  if (window.length < 4 * PROBE_BYTES) return LEVEL
  try {
    return cctx.compress(stored.subarray(0, PROBE_BYTES), window.subarray(0, PROBE_BYTES), LEVEL) > PROBE_BYTES * HARD_DATA_RATIO ? HARD_DATA_LEVEL : LEVEL
  } catch {
    return HARD_DATA_LEVEL
  }
}

/** Reads up to `buf.length` bytes at the file position; fewer only at the end of the file. */
function readFull(fd, buf) {
  let n = 0
  while (n < buf.length) {
    const k = readSync(fd, buf, n, buf.length - n, null)
    if (k === 0) break
    n += k
  }
  return n
}

function* files(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name)
    if (e.isDirectory() && e.name !== 'pg_wal') yield* files(path)
    else if (e.isFile()) yield path
  }
}

let bytes = 0
const plain = Buffer.allocUnsafe(WINDOW_BYTES)
const stored = Buffer.allocUnsafe(WINDOW_BYTES)
const header = Buffer.allocUnsafe(HEADER_BYTES)

if (mode === 'store') {
  const cctx = new zstd.CCtx()
  const outFd = openSync(out, 'w')
  for (const dir of dirs) {
    for (const path of files(dir)) {
      const fd = openSync(path, 'r')
      for (let n = readFull(fd, plain); n > 0; n = n < WINDOW_BYTES ? 0 : readFull(fd, plain)) {
        const window = plain.subarray(0, n)
        createHash('sha256').update(window).digest().copy(header, 8)
        let body = window
        try {
          // One byte short of the input: zstd fails on what would not shrink, as pgkeep's codec has it.
          body = stored.subarray(0, cctx.compress(stored.subarray(0, n - 1), window, levelFor(cctx, window)))
        } catch {}
        header.writeUInt32LE(n, 0)
        header.writeUInt32LE(body.length, 4)
        writeSync(outFd, header)
        writeSync(outFd, body)
        bytes += n
      }
      closeSync(fd)
    }
  }
  closeSync(outFd)
} else {
  const dctx = new zstd.DCtx()
  const fd = openSync(out, 'r')
  while (readFull(fd, header) === HEADER_BYTES) {
    const n = header.readUInt32LE(0)
    const storedLength = header.readUInt32LE(4)
    if (readFull(fd, stored.subarray(0, storedLength)) !== storedLength) throw new Error(`${out} ends inside a window`)
    const window = storedLength === n ? stored.subarray(0, n) : plain.subarray(0, dctx.decompress(plain, stored.subarray(0, storedLength)))
    if (window.length !== n || !createHash('sha256').update(window).digest().equals(header.subarray(8))) {
      throw new Error(`${out}: a window does not read back as it was stored`)
    }
    bytes += n
  }
  closeSync(fd)
}
process.stdout.write(JSON.stringify({ bytes }) + '\n')
