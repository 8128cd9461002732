// Writing a backup's file list: entries come in the server's order and are written sorted by path, in chunks
// (file-list.ts has the format), by a merge sort whose runs are held compressed in memory.

import { FormatError } from '../errors.js'
import { CompressedLines } from './compressed-lines.js'
import {
  chunkOfLines,
  entryLine,
  FILE_LIST_CHUNK_ENTRIES,
  type FileEntry,
  type FileListChunk,
  type FileListSummary,
  type MetaSink,
  type Packed,
} from './file-list.js'
import { GrowingBytes } from './growing-bytes.js'

/**
 * Entries are collected into runs of this many, each sorted and kept compressed (CompressedLines). Entries come in
 * the server's order, not the list's, so the list is written by a merge sort whose runs stay in memory compressed:
 * a file costs about 30 bytes until finish() instead of the 300-600 bytes of its entry on the JS heap, whatever the
 * number of files.
 */
const RUN_ENTRIES = 8192

/** Collects entries (in any order) and writes them sorted by path. */
export class FileListWriter {
  /**
   * The run being collected: each entry's line as UTF-8, side by side, and where each ends. An entry held as objects
   * (its extents, ids, path) until its run was sorted outlived young-generation collections and was promoted to V8's
   * old generation, which grew with it: 50 MB promoted over a backup of 120,000 files.
   */
  readonly #pending = new GrowingBytes(1 << 20)
  readonly #ends = new Uint32Array(RUN_ENTRIES)
  /** Per pending entry: the length of its path's JSON at the start of its line (after the '['). */
  readonly #pathChars = new Uint32Array(RUN_ENTRIES)
  #pendingCount = 0
  readonly #runs: CompressedLines[] = []
  #count = 0

  add(e: FileEntry): void {
    this.#pending.appendUtf8(entryLine(e))
    this.#ends[this.#pendingCount] = this.#pending.length
    this.#pathChars[this.#pendingCount] = JSON.stringify(e.path).length
    this.#pendingCount++
    this.#count++
    if (this.#pendingCount === RUN_ENTRIES) this.#sortIntoRun()
  }

  get count(): number {
    return this.#count
  }

  async finish(sink: MetaSink, o: { signal?: AbortSignal } = {}): Promise<FileListSummary> {
    this.#sortIntoRun()
    this.#pending.free()
    const chunks: FileListChunk[] = []
    let sizeBytes = 0
    let lines: string[] = []
    let first = ''
    let previous: string | undefined
    const putChunk = async () => {
      const { id } = await sink.putBlob('meta', chunkOfLines(lines), o)
      chunks.push({ first, last: previous!, count: lines.length, blob: id })
      lines = []
    }
    for (const { line, packed } of mergeSortedRuns(this.#runs)) {
      const path = packed[0]
      if (path === previous) throw new FormatError(`file '${path}' appears twice in the backup`)
      if (packed[1] === 'f') sizeBytes += packed[4]
      if (lines.length === 0) first = path
      lines.push(line)
      previous = path
      if (lines.length === FILE_LIST_CHUNK_ENTRIES) await putChunk()
    }
    if (lines.length > 0) await putChunk()
    return { count: this.#count, sizeBytes, chunks }
  }

  /** Sorts the pending entries by path into a new run: what it decodes lives only for this call. */
  #sortIntoRun(): void {
    const n = this.#pendingCount
    if (n === 0) return
    const lines: string[] = new Array(n)
    const paths: string[] = new Array(n)
    for (let i = 0, start = 0; i < n; start = this.#ends[i++]!) {
      const line = this.#pending.utf8(start, this.#ends[i]!)
      lines[i] = line
      paths[i] = JSON.parse(line.slice(1, 1 + this.#pathChars[i]!)) as string
    }
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => (paths[a]! < paths[b]! ? -1 : paths[a]! > paths[b]! ? 1 : 0))
    const run = new CompressedLines()
    for (const i of order) run.push(lines[i]!)
    run.seal()
    this.#runs.push(run)
    this.#pendingCount = 0
    this.#pending.clear()
  }
}

/** A run's next line, parsed. */
interface RunHead {
  line: string
  packed: Packed
  rest: Iterator<string>
}

/**
 * The lines of runs each sorted by path, merged into one sequence sorted by path (a binary heap of the runs' next
 * lines: a million files make about 120 runs). Lines are this process's own JSON, parsed only for their path.
 */
function* mergeSortedRuns(runs: readonly CompressedLines[]): Generator<{ line: string; packed: Packed }> {
  const heap: RunHead[] = []
  const before = (a: RunHead, b: RunHead) => a.packed[0] < b.packed[0]
  const headOf = (rest: Iterator<string>): RunHead | undefined => {
    const next = rest.next()
    return next.done ? undefined : { line: next.value, packed: JSON.parse(next.value) as Packed, rest }
  }
  const siftDown = (i: number) => {
    for (;;) {
      const l = 2 * i + 1
      const r = l + 1
      let m = i
      if (l < heap.length && before(heap[l]!, heap[m]!)) m = l
      if (r < heap.length && before(heap[r]!, heap[m]!)) m = r
      if (m === i) return
      ;[heap[i], heap[m]] = [heap[m]!, heap[i]!]
      i = m
    }
  }
  for (const run of runs) {
    const h = headOf(run.lines())
    if (h) heap.push(h)
  }
  for (let i = (heap.length >> 1) - 1; i >= 0; i--) siftDown(i)
  while (heap.length > 0) {
    const top = heap[0]!
    yield { line: top.line, packed: top.packed }
    const next = headOf(top.rest)
    if (next) heap[0] = next
    else {
      const last = heap.pop()!
      if (heap.length === 0) return
      heap[0] = last
    }
    siftDown(0)
  }
}
