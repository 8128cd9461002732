// Condemned packs (docs/repository-format.md §10a): garbage collection's first phase lists the packs it is going to
// delete in `gc-condemned` records; every session reads them (when it opens the repository, after it takes a lock,
// and before each lock refresh), stops taking references to blobs stored only there, and acknowledges each record in
// its lock object once it can no longer write a record that needs those packs. A later phase deletes a condemned pack
// only when every session has acknowledged it. This module owns the records and the session's side.

import { randomBytes } from 'node:crypto'
import { IntegrityError } from '../errors.js'
import { isHexId, utcStamp } from './layout.js'

/** The record kind of condemnation records. */
export const CONDEMNED_RECORD_KIND = 'gc-condemned'

/** At most this many packs per condemnation record (~7 MB of JSON; records are limited to 16 MiB). */
export const MAX_CONDEMNED_PER_RECORD = 100_000

/** The value of a `gc-condemned` record. */
export interface CondemnedRecord {
  formatVersion: 1
  /** When the packs were first condemned (ISO 8601, gc's clock); kept when a record is replaced by a smaller one. */
  condemnedAt: string
  /** Pack ids. */
  packs: string[]
}

/** A key for a new condemnation record: `<UTC time to the second>-<16 random hex>`, so keys sort by time. */
export function newCondemnedKey(now = new Date()): string {
  return `${utcStamp(now)}-${randomBytes(8).toString('hex')}`
}

/** Checks a condemnation record read from the repository; throws IntegrityError naming it when it is malformed. */
export function checkCondemnedRecord(key: string, value: CondemnedRecord): CondemnedRecord {
  const ok =
    value?.formatVersion === 1 &&
    typeof value.condemnedAt === 'string' &&
    !Number.isNaN(Date.parse(value.condemnedAt)) &&
    Array.isArray(value.packs) &&
    value.packs.every((p) => typeof p === 'string' && isHexId(p))
  if (!ok) {
    throw new IntegrityError(`condemnation record '${CONDEMNED_RECORD_KIND}/${key}' is malformed`, {
      hint: "run 'pgkeep verify'; 'pgkeep gc' deletes nothing it names until it can be read",
    })
  }
  return value
}

/** What a session's watch needs of its repository. */
export interface CondemnedSource {
  listKeys(signal: AbortSignal | undefined): Promise<string[]>
  read(key: string, signal: AbortSignal | undefined): Promise<CondemnedRecord>
  /** Replaces the set of condemned packs the index avoids for new references. */
  setCondemned(packs: ReadonlySet<string>): void
  /** True when the session may still write a record referencing a blob in one of `packs`. */
  mayReference(packs: ReadonlySet<string>): boolean
}

/**
 * A session's view of the condemnation records. `poll` reads them (only new keys are read) and makes the index
 * avoid their packs; `acknowledged` lists the keys this session can acknowledge in its lock object now.
 */
export class CondemnedWatch {
  readonly #source: CondemnedSource
  /** Keys read, with their packs. Unreadable records are not here: they are never acknowledged. */
  #known = new Map<string, ReadonlySet<string>>()
  #polling: Promise<void> | undefined

  constructor(source: CondemnedSource) {
    this.#source = source
  }

  /** Keys of the condemnation records read at the last poll. */
  get keys(): string[] {
    return [...this.#known.keys()]
  }

  /** Reads the condemnation records (one poll at a time; a caller arriving during one waits for the next). */
  async poll(signal?: AbortSignal): Promise<void> {
    const before = this.#polling
    const run = (async () => {
      await before?.catch(() => {})
      const keys = await this.#source.listKeys(signal)
      const next = new Map<string, ReadonlySet<string>>()
      for (const key of keys) {
        const seen = this.#known.get(key)
        if (seen) {
          next.set(key, seen)
          continue
        }
        try {
          next.set(key, new Set((await this.#source.read(key, signal)).packs))
        } catch (err) {
          // Removed since the listing (processed by gc): nothing to avoid. Damaged: never acknowledged, so gc does
          // not delete what it names; the packs it names stay usable here, which is safe for the same reason.
          if (!(err instanceof IntegrityError) && (err as { code?: string }).code !== 'NOT_FOUND') throw err
        }
      }
      const all = new Set<string>()
      for (const packs of next.values()) for (const p of packs) all.add(p)
      // Avoid first, then forget: a key present in both views never leaves a gap.
      this.#source.setCondemned(all)
      this.#known = next
    })()
    this.#polling = run
    try {
      await run
    } finally {
      if (this.#polling === run) this.#polling = undefined
    }
  }

  /**
   * Keys this session acknowledges now: read, and none of whose packs it may still reference. Once a key is
   * acknowledged it stays so: the index avoids its packs for every new reference from the poll on.
   */
  acknowledged(): string[] {
    const out: string[] = []
    for (const [key, packs] of this.#known) if (!this.#source.mayReference(packs)) out.push(key)
    return out
  }
}
