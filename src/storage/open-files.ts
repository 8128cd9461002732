// Files the local-directory driver keeps open between range reads of objects the caller declared immutable
// (`ReadOptions.immutable`: packs, named by their content). A restore of many small files reads its packs in
// thousands of small ranges; opening, stat-ing and closing the pack for each cost about a quarter of its main
// thread (a restore of 41,000 files, PG 15). An object removed while open still reads its old bytes, which for a
// content-addressed object are the right ones. Handles close after a short idle time, and the least recently
// used one when too many are open, so a process that drops its storage keeps no descriptors.

import { promises as fsp } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'

/** Open files kept at most. */
const MAX_OPEN = 32
/** A file unused for this long is closed. */
const IDLE_CLOSE_MS = 1_000

/** One open file: its handle and its size when opened (the object cannot change). */
export interface OpenFile {
  readonly handle: FileHandle
  readonly sizeBytes: number
  readonly isFile: boolean
}

interface Slot {
  readonly opening: Promise<OpenFile>
  users: number
  lastUse: number
}

/** Opens `path` for reading, with its size and type. */
export async function openForReading(path: string): Promise<OpenFile> {
  const handle = await fsp.open(path, 'r')
  try {
    const st = await handle.stat()
    return { handle, sizeBytes: st.size, isFile: st.isFile() }
  } catch (err) {
    await handle.close().catch(() => {})
    throw err
  }
}

export class OpenFiles {
  readonly #slots = new Map<string, Slot>()
  #timer: NodeJS.Timeout | undefined

  /**
   * The open file at `path` (opened now, or kept from an earlier read); give it back with `release`. Rejects with
   * the open's own error (ENOENT for a missing file), which is not kept.
   */
  async acquire(path: string): Promise<OpenFile> {
    let slot = this.#slots.get(path)
    if (!slot) {
      const opening = openForReading(path)
      slot = { opening, users: 0, lastUse: 0 }
      this.#slots.set(path, slot)
      opening.catch(() => {
        if (this.#slots.get(path) === slot) this.#slots.delete(path)
      })
      this.#trim()
    }
    slot.users++
    try {
      return await slot.opening
    } catch (err) {
      slot.users--
      throw err
    }
  }

  /** Gives back a file from `acquire`; it stays open for the next read until idle or crowded out. */
  release(path: string): void {
    const slot = this.#slots.get(path)
    if (!slot) return
    slot.users--
    slot.lastUse = Date.now()
    this.#trim()
    this.#timer ??= setTimeout(() => this.#closeIdle(), IDLE_CLOSE_MS).unref()
  }

  /** Closes least recently used files nobody reads while more than MAX_OPEN are open. */
  #trim(): void {
    if (this.#slots.size <= MAX_OPEN) return
    const idle = [...this.#slots].filter(([, s]) => s.users === 0 && s.lastUse > 0).sort((a, b) => a[1].lastUse - b[1].lastUse)
    for (const [path] of idle.slice(0, this.#slots.size - MAX_OPEN)) this.#close(path)
  }

  #closeIdle(): void {
    this.#timer = undefined
    const now = Date.now()
    for (const [path, s] of this.#slots) if (s.users === 0 && now - s.lastUse >= IDLE_CLOSE_MS) this.#close(path)
    if (this.#slots.size > 0) this.#timer = setTimeout(() => this.#closeIdle(), IDLE_CLOSE_MS).unref()
  }

  #close(path: string): void {
    const slot = this.#slots.get(path)
    if (!slot) return
    this.#slots.delete(path)
    slot.opening.then((f) => f.handle.close()).catch(() => {})
  }
}
