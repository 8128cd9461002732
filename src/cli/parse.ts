// Argument parsing for commands: node:util parseArgs with pgkeep's error style (UsageError with a hint).

import { parseArgs, type ParseArgsConfig } from 'node:util'
import { UsageError } from '../errors.js'

/** parseArgs (strict), turning its errors into UsageError with a hint naming the command's help. */
export function parseCommandArgs<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs<T>({ strict: true, ...config })
  } catch (err) {
    throw new UsageError(
      (err as Error).message.replace(/\.$/, '').replace(/^./, (c) => c.toLowerCase()),
      {
        hint: `run 'pgkeep ${command} --help' for its options`,
        cause: err,
      },
    )
  }
}

/** `--workers N`: worker threads for per-byte work, 0 to 64; undefined leaves the choice to the library. */
export function parseWorkers(text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const n = Number(text)
  if (!/^[0-9]+$/.test(text) || n > 64) throw new UsageError(`invalid --workers '${text}'`, { hint: 'give a number from 0 to 64' })
  return n
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/**
 * A duration such as `90s`, `30m`, `1h`, `2d`, `1w`, `1h30m` or `0`, in milliseconds. `what` names the option in the
 * error.
 */
export function parseDuration(text: string, what: string): number {
  const t = text.trim()
  if (t === '0') return 0
  const parts = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$/.test(t) ? [...t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)] : []
  if (parts.length === 0) throw new UsageError(`invalid ${what} '${text}'`, { hint: 'give a duration such as 90s, 30m, 1h, 2d or 0' })
  return parts.reduce((ms, p) => ms + Number(p[1]) * DURATION_UNITS_MS[p[2]!]!, 0)
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1e6,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1e9,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1e12,
  tib: 1024 ** 4,
}

/** A byte count such as `1000`, `512M`, `10GiB` or `2GB` (K/M/G/T alone are binary). `what` names the option. */
export function parseByteSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim())
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined
  if (!m || unit === undefined) throw new UsageError(`invalid ${what} '${text}'`, { hint: 'give a size such as 1000000, 512M or 10GiB' })
  return Math.floor(Number(m[1]) * unit)
}
