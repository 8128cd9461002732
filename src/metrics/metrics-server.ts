// The HTTP endpoint `wal stream --metrics-listen` serves: GET /metrics renders the repository's metrics and the
// streamer's own (prometheus.ts). The repository state is read at most once per `statusMaxAgeMs` however often
// Prometheus scrapes (it lists records and objects), and concurrent scrapes share one reading.

import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { UsageError } from '../errors.js'
import { OperationEvents, type OperationOptions } from '../events.js'
import { type Repository, type RepositoryStatus, readRepositoryStatus } from '../repo/index.js'
import { formatMetrics, METRICS_CONTENT_TYPE, type StreamMetricsSource } from './prometheus.js'

/** Options of {@link serveMetrics}. */
export interface ServeMetricsOptions extends OperationOptions {
  /** Address to listen on: a host name or IP address; undefined: every interface. */
  host?: string
  /** Port; 0 picks a free one (see `url`). */
  port: number
  repo: Repository
  /** The streamer's state at the moment of a scrape. */
  stream?: () => StreamMetricsSource
  /** A repository state younger than this is served again instead of being read anew (default 30 s). */
  statusMaxAgeMs?: number
}

/** A running metrics endpoint. */
export interface MetricsServer {
  /** Where it serves, e.g. `http://127.0.0.1:9187/metrics`. */
  readonly url: string
  /** Stops listening and closes open connections. */
  close(): Promise<void>
}

/**
 * Serves the metrics on `host:port` until `close()` or until `signal` aborts. A repository that cannot be read at a
 * scrape gives `pgkeep_repository_readable 0` (and a warning event), not an error response: the streamer's own
 * metrics still matter then.
 * @throws UsageError when the address cannot be listened on (in use, not permitted, unknown host)
 */
export async function serveMetrics(o: ServeMetricsOptions): Promise<MetricsServer> {
  const events = new OperationEvents('wal-stream', o.onEvent)
  const maxAgeMs = o.statusMaxAgeMs ?? 30_000
  let cached: { status: RepositoryStatus | null; atMs: number } | undefined
  let reading: Promise<RepositoryStatus | null> | undefined
  let lastError: string | undefined
  const status = (): Promise<RepositoryStatus | null> => {
    if (cached && Date.now() - cached.atMs < maxAgeMs) return Promise.resolve(cached.status)
    reading ??= readRepositoryStatus(o.repo, { signal: o.signal })
      .then(
        (s) => {
          lastError = undefined
          return s
        },
        (err: unknown) => {
          const message = (err as Error).message
          if (message !== lastError)
            events.say('warning', `metrics: cannot read the repository: ${message}`, 'metrics-repository-unreadable', { error: message })
          lastError = message
          return null
        },
      )
      .then((s) => {
        cached = { status: s, atMs: Date.now() }
        reading = undefined
        return s
      })
    return reading
  }

  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: metrics are at /metrics\n')
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n')
      return
    }
    status()
      .then((s) => formatMetrics(s, { stream: o.stream?.() }))
      .then(
        (text) => res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE }).end(req.method === 'HEAD' ? undefined : text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`cannot render metrics: ${(err as Error).message}\n`),
      )
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new UsageError(`cannot serve metrics on ${o.host ?? ''}:${o.port}: ${err.code ?? err.message}`, {
          cause: err,
          hint:
            err.code === 'EADDRINUSE'
              ? 'another process listens there: choose another port'
              : err.code === 'EACCES'
                ? 'ports below 1024 need privileges: choose a port above 1024'
                : 'give --metrics-listen HOST:PORT with an address of this host, or :PORT for every interface',
        }),
      ),
    )
    server.listen(o.port, o.host, () => resolve())
  })
  const address = server.address() as AddressInfo
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  let closed: Promise<void> | undefined
  const close = () =>
    (closed ??= new Promise<void>((resolve) => {
      o.signal?.removeEventListener('abort', onAbort)
      server.close(() => resolve())
      server.closeAllConnections()
    }))
  const onAbort = () => void close()
  o.signal?.addEventListener('abort', onAbort, { once: true })
  return { url: `http://${host}:${address.port}/metrics`, close }
}
