// The page hashes of file maps (docs/backup-format.md §4), in the two algorithms a file map can name:
// XXH64 (file map version 2), computed by a small WebAssembly module compiled from page-hash.wat (about three times
// the speed of SHA-256 here, and every page of every backup goes through it), and the first 8 bytes of SHA-256
// (version 1), which the backup still computes to compare with a parent written by an earlier pgkeep.

import { hash } from 'node:crypto'
import { isAllZero } from '../pg/page.js'
import { PAGE_BYTES, PAGE_HASH_BYTES, type PageHashAlgorithm } from './file-map.js'
import { PAGE_HASH_WASM_BASE64 } from './page-hash-wasm.js'

const ZERO_HASH = Buffer.alloc(PAGE_HASH_BYTES)
/** Bytes hashed per call into the module: its input area (a whole number of pages). */
const WASM_INPUT_BYTES = 1 << 20

/** The module's exports (page-hash.wat). */
interface PageHashModule {
  readonly memory: { readonly buffer: ArrayBuffer }
  readonly hashPages: (src: number, len: number, out: number) => number
}

/** What this module uses of the WebAssembly global, which the project's TypeScript libraries do not declare. */
interface WebAssemblyApi {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object) => { readonly exports: unknown }
}
const { WebAssembly: wasmApi } = globalThis as unknown as { WebAssembly: WebAssemblyApi }

let module: PageHashModule | undefined

/** The module, compiled on first use in each thread (a few hundred bytes: synchronous compilation is fine). */
function wasm(): PageHashModule {
  if (!module) module = new wasmApi.Instance(new wasmApi.Module(Buffer.from(PAGE_HASH_WASM_BASE64, 'base64'))).exports as PageHashModule
  return module
}

/**
 * Writes the page hashes of `bytes` (pages of 8 KB; the last may be shorter) into `out` at `outOffset`,
 * PAGE_HASH_BYTES each. Returns the number of all-zero pages.
 */
export function hashPagesInto(bytes: Uint8Array, out: Uint8Array, outOffset: number, algorithm: PageHashAlgorithm): number {
  return algorithm === 'xxh64' ? xxh64Pages(bytes, out, outOffset) : sha256Pages(bytes, out, outOffset)
}

function xxh64Pages(bytes: Uint8Array, out: Uint8Array, outOffset: number): number {
  const m = wasm()
  let zeros = 0
  for (let at = 0; at < bytes.length; at += WASM_INPUT_BYTES) {
    const n = Math.min(WASM_INPUT_BYTES, bytes.length - at)
    // The memory's buffer is fixed: the module never grows it.
    const mem = new Uint8Array(m.memory.buffer)
    mem.set(bytes.subarray(at, at + n), 0)
    zeros += m.hashPages(0, n, WASM_INPUT_BYTES)
    const hashes = Math.ceil(n / PAGE_BYTES) * PAGE_HASH_BYTES
    out.set(mem.subarray(WASM_INPUT_BYTES, WASM_INPUT_BYTES + hashes), outOffset + (at / PAGE_BYTES) * PAGE_HASH_BYTES)
  }
  return zeros
}

function sha256Pages(bytes: Uint8Array, out: Uint8Array, outOffset: number): number {
  let zeros = 0
  for (let p = 0; p * PAGE_BYTES < bytes.length; p++) {
    const page = bytes.subarray(p * PAGE_BYTES, (p + 1) * PAGE_BYTES)
    const at = outOffset + p * PAGE_HASH_BYTES
    if (isAllZero(page)) {
      out.set(ZERO_HASH, at)
      zeros++
    } else {
      out.set(hash('sha256', page, 'buffer').subarray(0, PAGE_HASH_BYTES), at)
    }
  }
  return zeros
}
