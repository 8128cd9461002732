// An HTTP proxy on loopback in front of an S3 server (the harness's s3rver) that changes one thing: what happens
// to conditional writes (`If-None-Match`). s3rver ignores the header; behind this proxy the same server can act
// as a store that refuses it (501 NotImplemented, as OpenStack Swift's S3 layer does) or one that enforces it
// (412 PreconditionFailed when the key exists, atomically per key, as AWS S3 and recent MinIO do). Everything
// else is forwarded byte for byte.

import http from 'node:http'

/**
 * - `refuse`: any request with an If-None-Match header is answered 501 NotImplemented (S3 XML error), untouched.
 * - `enforce`: PutObject and CompleteMultipartUpload with `If-None-Match: *` are serialised per key; if the key
 *   exists upstream the proxy answers 412 PreconditionFailed, otherwise it forwards the request.
 * - `pass`: everything is forwarded; the server's own behaviour (s3rver: ignore the header) shows.
 */
export type ConditionalMode = 'refuse' | 'enforce' | 'pass'

/** A running proxy. */
export interface S3ConditionalProxy {
  /** http://127.0.0.1:port */
  readonly endpoint: string
  readonly port: number
  /** Settable at any time; applies to requests that arrive afterwards. */
  mode: ConditionalMode
  /** Requests the proxy answered itself, by status (501 and 412): tests check which path a write took. */
  readonly answered: { readonly notImplemented: number; readonly preconditionFailed: number }
  close(): Promise<void>
}

/** Starts a proxy on 127.0.0.1 (a free port) in front of `upstream` (an http:// endpoint). */
export async function startS3ConditionalProxy(upstream: string, mode: ConditionalMode): Promise<S3ConditionalProxy> {
  const target = new URL(upstream)
  const agent = new http.Agent({ keepAlive: true })
  const answered = { notImplemented: 0, preconditionFailed: 0 }
  // Per key, the tail of the chain of conditional writes in progress.
  const keyChains = new Map<string, Promise<void>>()

  const upstreamRequest = (method: string, path: string, headers: http.OutgoingHttpHeaders) =>
    http.request({ host: target.hostname, port: target.port, method, path, headers, agent })

  /** Forwards `req` and pipes the answer back; resolves once the answer is complete (or the exchange failed). */
  const forward = (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> =>
    new Promise((resolve) => {
      const headers = { ...req.headers }
      // Node already answered `100 Continue` to the client; the body comes without waiting.
      delete headers.expect
      const up = upstreamRequest(req.method ?? 'GET', req.url ?? '/', headers)
      up.on('response', (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers)
        ur.pipe(res)
        ur.on('end', () => resolve())
        ur.on('error', () => {
          res.destroy()
          resolve()
        })
      })
      up.on('error', () => {
        res.destroy()
        resolve()
      })
      req.pipe(up)
    })

  /** True when the object at `path` exists upstream (a HEAD with the client's credentials). */
  const existsUpstream = (path: string, headers: http.IncomingHttpHeaders): Promise<boolean> =>
    new Promise((resolve, reject) => {
      const h: http.OutgoingHttpHeaders = {}
      for (const name of ['authorization', 'x-amz-date', 'x-amz-content-sha256', 'x-amz-security-token', 'host']) {
        if (headers[name] !== undefined) h[name] = headers[name]
      }
      const up = upstreamRequest('HEAD', path, h)
      up.on('response', (ur) => {
        ur.resume()
        if (ur.statusCode === 200) resolve(true)
        else if (ur.statusCode === 404) resolve(false)
        else reject(new Error(`HEAD ${path} answered ${ur.statusCode ?? '?'}`))
      })
      up.on('error', reject)
      up.end()
    })

  const replyError = async (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    status: number,
    code: string,
    message: string,
    resource: string,
  ): Promise<void> => {
    // Read the whole body first, so the client is not cut off while it still sends.
    for await (const _ of req) {
      // discard
    }
    const body =
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      `<Error><Code>${code}</Code><Message>${message}</Message><Resource>${resource}</Resource><RequestId>conditional-proxy</RequestId></Error>`
    res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  }

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://proxy')
    const condition = req.headers['if-none-match']
    if (condition !== undefined && proxy.mode === 'refuse') {
      answered.notImplemented++
      await replyError(req, res, 501, 'NotImplemented', 'A header you provided implies functionality that is not implemented', url.pathname)
      return
    }
    const makesVisible = (req.method === 'PUT' && !url.searchParams.has('partNumber')) || (req.method === 'POST' && url.searchParams.has('uploadId'))
    if (condition === '*' && makesVisible && proxy.mode === 'enforce') {
      const key = url.pathname
      const before = keyChains.get(key) ?? Promise.resolve()
      const mine = before.then(async () => {
        if (await existsUpstream(key, req.headers)) {
          answered.preconditionFailed++
          await replyError(req, res, 412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', key)
        } else {
          await forward(req, res)
        }
      })
      const tail = mine.catch(() => {})
      keyChains.set(key, tail)
      await mine.finally(() => {
        if (keyChains.get(key) === tail) keyChains.delete(key)
      })
      return
    }
    await forward(req, res)
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch(() => res.destroy())
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('conditional proxy has no port')

  const proxy: S3ConditionalProxy = {
    endpoint: `http://127.0.0.1:${address.port}`,
    port: address.port,
    mode,
    answered,
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      agent.destroy()
    },
  }
  return proxy
}
