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

const DURATION_UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/**
 * A duration such as `26h`, `5m`, `8d`, `90s`, `1w`, `500ms` or `1h30m` → milliseconds. No bare numbers (`5` could
 * be seconds or minutes), except `0` where the option allows it (`allowZero`).
 * @param what names the option or key in the error, e.g. `--max-backup-age`
 */
export function parseDuration(text: string, what: string, o: { allowZero?: boolean } = {}): number {
  const t = text.trim()
  if (o.allowZero && t === '0') return 0
  const parts = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$/.test(t) ? [...t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)] : []
  const ms = parts.reduce((sum, p) => sum + Number(p[1]) * DURATION_UNITS_MS[p[2]!]!, 0)
  if (parts.length === 0 || !Number.isFinite(ms) || (ms <= 0 && !o.allowZero)) {
    throw new UsageError(`invalid ${what} '${text}'`, {
      hint: `give a duration with a unit: 90s, 5m, 26h, 8d, 1w or 1h30m${o.allowZero ? ', or 0' : ''}`,
    })
  }
  return Math.round(ms)
}

/**
 * `HOST:PORT`, `[IPV6]:PORT`, `:PORT` or `PORT` (the last two: every interface) → host and port; port 0 picks a
 * free one.
 */
export function parseListenAddress(text: string, what: string): { host: string | undefined; port: number } {
  const t = text.trim()
  let host: string | undefined
  let portText: string | undefined
  if (/^\d+$/.test(t)) portText = t
  else if (t.startsWith('[')) {
    const m = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(t)
    host = m?.[1]
    portText = m?.[2]
  } else {
    const i = t.lastIndexOf(':')
    const h = t.slice(0, i)
    if (i >= 0 && /^[A-Za-z0-9.-]*$/.test(h)) {
      host = h || undefined
      portText = t.slice(i + 1)
    }
  }
  const port = portText !== undefined && /^\d{1,5}$/.test(portText) ? Number(portText) : NaN
  if (!(port <= 65535)) {
    throw new UsageError(`invalid ${what} '${text}'`, { hint: 'give HOST:PORT (127.0.0.1:9187, [::1]:9187) or :PORT for every interface' })
  }
  return { host, port }
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
