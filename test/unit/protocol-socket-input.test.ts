// SocketInput on real loopback sockets: every byte in order, reads side by side in slabs, slabs read into again
// only once released, reading paused while nothing is taken, the end and errors of the connection.

import { randomBytes } from 'node:crypto'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { SLAB_BYTES, SocketInput } from '../../protocol/wire/socket-input.js'

let server: Server | undefined
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()))
  server = undefined
})

/** A loopback server running `serve` on its one connection, and a client socket reading into a SocketInput. */
async function pair(serve: (s: Socket) => void): Promise<{ input: SocketInput; socket: Socket }> {
  server = createServer(serve)
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  const input = new SocketInput()
  const socket = connect({ host: '127.0.0.1', port, onread: input.onread })
  input.attach(socket)
  await new Promise((resolve) => socket.once('connect', resolve))
  return { input, socket }
}

async function readAll(input: SocketInput): Promise<Buffer[]> {
  const chunks: Buffer[] = []
  for (let c = await input.next(); c !== undefined; c = await input.next()) chunks.push(c)
  return chunks
}

/** Sends `data` in pieces of uneven sizes with pauses between some, so reads of many sizes happen; then ends. */
function sendUneven(s: Socket, data: Buffer): void {
  let off = 0
  const next = () => {
    if (off >= data.length) return void s.end()
    const n = 1 + ((off * 7919) % 100_000)
    s.write(data.subarray(off, off + n))
    off += n
    if (off % 3 === 0) setTimeout(next, 1)
    else setImmediate(next)
  }
  next()
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('SocketInput', () => {
  it('hands out every byte in order, in slabs, never writing over a chunk it handed out', async () => {
    const data = randomBytes(5 * SLAB_BYTES + 12_345)
    const { input } = await pair((s) => sendUneven(s, data))
    const chunks: { view: Buffer; copy: Buffer }[] = []
    for (let c = await input.next(); c !== undefined; c = await input.next()) chunks.push({ view: c, copy: Buffer.from(c) })
    expect(Buffer.concat(chunks.map((c) => c.view)).equals(data)).toBe(true)
    for (const c of chunks) expect(c.view.equals(c.copy)).toBe(true) // nothing later landed on an earlier chunk
    const slabs = new Set(chunks.map((c) => c.view.buffer))
    expect(slabs.size).toBeLessThan(chunks.length)
    for (const b of slabs) expect(b.byteLength).toBe(SLAB_BYTES)
  })

  it('reads into a slab again once its bytes are released, never into bytes still pending', async () => {
    const data = randomBytes(12 * SLAB_BYTES + 777)
    const { input } = await pair((s) => sendUneven(s, data))
    // The reader keeps the views of its last chunks, over a slab's worth, and releases everything before them.
    const held: { view: Buffer; copy: Buffer }[] = []
    let heldBytes = 0
    const copies: Buffer[] = []
    const slabs = new Set<ArrayBufferLike>()
    let last: ArrayBufferLike | undefined
    let reused = 0
    for (let c = await input.next(); c !== undefined; c = await input.next()) {
      if (c.buffer !== last && slabs.has(c.buffer)) reused++
      slabs.add(c.buffer)
      last = c.buffer
      copies.push(Buffer.from(c))
      held.push({ view: c, copy: Buffer.from(c) })
      heldBytes += c.length
      while (heldBytes - held[0]!.view.length >= SLAB_BYTES + 50_000) {
        const h = held.shift()!
        expect(h.view.equals(h.copy)).toBe(true) // not read into while pending
        heldBytes -= h.view.length
      }
      input.release(heldBytes)
    }
    for (const h of held) expect(h.view.equals(h.copy)).toBe(true)
    expect(Buffer.concat(copies).equals(data)).toBe(true)
    expect(reused).toBeGreaterThan(0)
    expect(slabs.size).toBeLessThan(12)
  })

  it('stops reading while nothing is taken, and reads on once the bytes are', async () => {
    let written = 0
    let ended = false
    const { input, socket } = await pair((s) => {
      const piece = Buffer.alloc(64 * 1024, 7)
      const write = () => {
        while (written < 64 * 1024 * 1024) {
          written += piece.length
          if (!s.write(piece)) return void s.once('drain', write)
        }
        ended = true
        s.end()
      }
      write()
    })
    await input.next()
    await sleep(300)
    // The server could write 64 MiB; the client holds at most about a slab beyond the pause mark, the kernel's
    // socket buffers the rest, and the server waits for them to drain.
    expect(input.pendingBytes).toBeLessThanOrEqual(2 * SLAB_BYTES)
    expect(ended).toBe(false)
    expect(socket.bytesRead).toBeLessThan(16 * 1024 * 1024)
    const rest = await readAll(input)
    expect(ended).toBe(true)
    expect(rest.reduce((n, c) => n + c.length, 0)).toBeGreaterThan(60 * 1024 * 1024)
  })

  it('ends with undefined after the last bytes, and fails with the socket error', async () => {
    const { input } = await pair((s) => s.end(Buffer.from('last words')))
    expect(Buffer.concat(await readAll(input)).toString()).toBe('last words')
    expect(await input.next()).toBeUndefined()

    const broken = await pair((s) => {
      s.write('partial')
      setTimeout(() => s.resetAndDestroy(), 20)
    })
    const got: Buffer[] = []
    const err = await (async () => {
      try {
        for (let c = await broken.input.next(); c !== undefined; c = await broken.input.next()) got.push(c)
      } catch (e) {
        return e as NodeJS.ErrnoException
      }
    })()
    expect(Buffer.concat(got).toString()).toBe('partial')
    expect(err?.code).toBe('ECONNRESET')
  })
})
