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

const DURATION_UNITS_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/**
 * A duration such as `26h`, `5m`, `8d`, `90s`, `1w` or `1h30m` (units s, m, h, d, w; no bare numbers: `5` could be
 * seconds or minutes) → milliseconds.
 * @param what names the option or key in the error, e.g. `--max-backup-age`
 */
export function parseDuration(text: string, what: string): number {
  const t = text.trim()
  let ms = 0
  let rest = t
  for (let m = /^(\d+(?:\.\d+)?)([smhdw])/.exec(rest); m; m = /^(\d+(?:\.\d+)?)([smhdw])/.exec(rest)) {
    ms += Number(m[1]) * DURATION_UNITS_MS[m[2]!]!
    rest = rest.slice(m[0].length)
  }
  if (t === '' || rest !== '' || !(ms > 0) || !Number.isFinite(ms)) {
    throw new UsageError(`invalid ${what} '${text}'`, { hint: 'give a duration with a unit: 90s, 5m, 26h, 8d, 1w or 1h30m' })
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
