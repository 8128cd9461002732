// A real TCP proxy on loopback for fault injection between a client and any server (S3, PostgreSQL): cut every
// connection, cut after N bytes, pause forwarding, add latency, refuse new connections. Generic: it knows no
// protocol. Forwarding is pull-based (one chunk at a time per direction), so pausing really stops the bytes.

import net from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'

/** Direction of forwarded bytes: `up` is client → server, `down` is server → client. */
export type ProxyDirection = 'up' | 'down' | 'both'

/** A running proxy. Every control takes effect at once on live connections and new ones. */
export interface TcpProxy {
  /** The loopback port clients connect to (127.0.0.1). */
  readonly port: number
  /** Extra delay before forwarding each chunk, in both directions (settable at any time; 0 = none). */
  delayMs: number
  /** When true, new connections are accepted and immediately destroyed (a server that went away). */
  refuseNew: boolean
  /** Bytes forwarded so far, per direction. */
  readonly bytesForwarded: { readonly up: number; readonly down: number }
  /** Connections currently open. */
  readonly liveConnections: number
  /** Connections accepted so far (refused ones included). */
  readonly totalConnections: number
  /** Destroys every live connection (both sockets, abruptly). New connections are still accepted. */
  cutAll(): void
  /**
   * Forwards `n` more bytes in `direction` (counted over all connections), then cuts every live connection in the
   * middle of whatever was being sent. Resolves when the cut happened. `refuseAfter` also sets `refuseNew`.
   */
  cutAfterBytes(n: number, o?: { direction?: ProxyDirection; refuseAfter?: boolean }): Promise<void>
  /** Stops forwarding in both directions; connections stay open and data waits (in kernel buffers). */
  pause(): void
  /** Resumes forwarding after `pause()`. */
  resume(): void
  /** Cuts every connection and stops listening. */
  close(): Promise<void>
}

interface Pair {
  client: net.Socket
  server: net.Socket
}

interface CutPlan {
  remaining: number
  direction: ProxyDirection
  refuseAfter: boolean
  done: () => void
}

/** Starts a proxy on 127.0.0.1 (a free port) forwarding to `targetHost:targetPort`. */
export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<Pair>()
  const counts = { up: 0, down: 0 }
  let total = 0
  let paused = false
  let resumeWaiters: (() => void)[] = []
  let cutPlan: CutPlan | undefined

  const destroyPair = (p: Pair): void => {
    p.client.destroy()
    p.server.destroy()
    pairs.delete(p)
  }
  const cutAll = (): void => {
    for (const p of [...pairs]) destroyPair(p)
  }

  /** How many bytes of a chunk may pass before a planned cut; Infinity when no cut applies. */
  const allowance = (dir: 'up' | 'down'): number => {
    if (cutPlan === undefined) return Infinity
    if (cutPlan.direction !== 'both' && cutPlan.direction !== dir) return Infinity
    return cutPlan.remaining
  }

  async function pump(from: net.Socket, to: net.Socket, dir: 'up' | 'down', pair: Pair): Promise<void> {
    try {
      for await (const chunk of from as AsyncIterable<Buffer>) {
        if (proxy.delayMs > 0) await delay(proxy.delayMs)
        while (paused) await new Promise<void>((r) => resumeWaiters.push(r))
        if (!pairs.has(pair)) return
        const allowed = allowance(dir)
        const piece = chunk.byteLength > allowed ? chunk.subarray(0, allowed) : chunk
        if (piece.byteLength > 0 && !to.destroyed) {
          counts[dir] += piece.byteLength
          if (!to.write(piece)) {
            await new Promise<void>((r) => {
              to.once('drain', r)
              to.once('close', r)
            })
          }
        }
        if (cutPlan !== undefined && allowed !== Infinity) {
          cutPlan.remaining -= piece.byteLength
          if (cutPlan.remaining <= 0) {
            const plan = cutPlan
            cutPlan = undefined
            if (plan.refuseAfter) proxy.refuseNew = true
            cutAll()
            plan.done()
            return
          }
        }
      }
      // Clean end of one direction: half-close the other side, as the peer did.
      if (!to.destroyed) to.end()
    } catch {
      destroyPair(pair)
    }
  }

  const server = net.createServer((client) => {
    total += 1
    if (proxy.refuseNew) {
      client.destroy()
      return
    }
    const upstream = net.connect({ host: targetHost, port: targetPort })
    const pair: Pair = { client, server: upstream }
    pairs.add(pair)
    // Errors end the pair; they are the faults this proxy exists to cause.
    client.on('error', () => destroyPair(pair))
    upstream.on('error', () => destroyPair(pair))
    client.on('close', () => destroyPair(pair))
    upstream.on('close', () => destroyPair(pair))
    upstream.once('connect', () => {
      void pump(client, upstream, 'up', pair)
      void pump(upstream, client, 'down', pair)
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('tcp proxy has no port')

  const proxy: TcpProxy = {
    port: address.port,
    delayMs: 0,
    refuseNew: false,
    get bytesForwarded() {
      return { up: counts.up, down: counts.down }
    },
    get liveConnections() {
      return pairs.size
    },
    get totalConnections() {
      return total
    },
    cutAll,
    cutAfterBytes(n, o = {}) {
      return new Promise<void>((resolve) => {
        cutPlan = { remaining: n, direction: o.direction ?? 'both', refuseAfter: o.refuseAfter ?? false, done: resolve }
      })
    },
    pause() {
      paused = true
    },
    resume() {
      paused = false
      const waiters = resumeWaiters
      resumeWaiters = []
      for (const w of waiters) w()
    },
    async close() {
      proxy.resume()
      cutAll()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
  return proxy
}
