// The framer over recorded server bytes: every split point, byte-at-a-time delivery, and payload ownership.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ProtocolError } from '../../protocol/errors.js'
import { FRAME_LIMITS, type Frame, FrameReader } from '../../protocol/wire/frame-reader.js'

const fixture = (name: string) => readFileSync(join(import.meta.dirname, '..', 'fixtures', 'protocol', name))

function frames(chunks: Buffer[]): Frame[] {
  const f = new FrameReader()
  const out: Frame[] = []
  for (const c of chunks) {
    f.push(c)
    for (let fr = f.next(); fr; fr = f.next()) out.push({ type: fr.type, payload: Buffer.from(fr.payload) })
  }
  expect(f.pendingBytes).toBe(0)
  return out
}

/** Frames found by walking the bytes by hand, independently of FrameReader. */
function walk(buf: Buffer): Frame[] {
  const out: Frame[] = []
  for (let off = 0; off < buf.length; ) {
    const len = buf.readInt32BE(off + 1)
    out.push({ type: buf[off], payload: buf.subarray(off + 5, off + 1 + len) })
    off += 1 + len
  }
  return out
}

const same = (a: Frame[], b: Frame[]) => a.length === b.length && a.every((f, i) => f.type === b[i].type && f.payload.equals(b[i].payload))

describe('FrameReader', () => {
  const session = fixture('session-pg15.bin')
  const expected = walk(session)

  it('finds the frames of a recorded session', () => {
    expect(expected.length).toBeGreaterThan(30)
    expect(same(frames([session]), expected)).toBe(true)
  })

  it('gives the same frames for every split point of the control messages (startup, auth, commands)', () => {
    const head = session.subarray(0, boundaryBeforeFirstLargeFrame(session))
    expect(head.length).toBeGreaterThan(500)
    const want = walk(head)
    for (let k = 0; k <= head.length; k++) {
      if (!same(frames([head.subarray(0, k), head.subarray(k)]), want)) throw new Error(`split at ${k} differs`)
    }
  })

  it('gives the same frames for every split point inside and around each message of the whole recording', () => {
    // Split points: each frame boundary and every byte of each frame's 5-byte header and first/last payload bytes.
    const points = new Set<number>()
    for (let off = 0; off < session.length; ) {
      const len = session.readInt32BE(off + 1)
      for (let d = -2; d <= 7; d++) points.add(off + d)
      points.add(off + 1 + len - 1)
      off += 1 + len
    }
    for (const k of points) {
      if (k < 0 || k > session.length) continue
      if (!same(frames([session.subarray(0, k), session.subarray(k)]), expected)) throw new Error(`split at ${k} differs`)
    }
  })

  it('gives the same frames when bytes arrive one at a time and in three uneven pieces', () => {
    const bb = fixture('base-backup-pg15.bin')
    const want = walk(bb)
    const ones: Buffer[] = []
    for (let i = 0; i < 20_000; i++) ones.push(bb.subarray(i, i + 1))
    ones.push(bb.subarray(20_000))
    expect(same(frames(ones), want)).toBe(true)
    for (const [a, b] of [
      [1, 2],
      [4, 5],
      [100, 70_000],
      [65_536, 65_541],
    ]) {
      expect(same(frames([bb.subarray(0, a), bb.subarray(a, b), bb.subarray(b)]), want)).toBe(true)
    }
  })

  it('hands out payloads that later pushes never change', () => {
    const bb = fixture('base-backup-pg14.bin')
    const f = new FrameReader()
    const kept: { view: Buffer; copy: Buffer }[] = []
    // Reuse one scratch buffer for every push, the way pg-protocol's parser reuses its own.
    const scratch = Buffer.alloc(1000)
    for (let off = 0; off < bb.length; off += 1000) {
      const n = bb.copy(scratch, 0, off, off + 1000)
      f.push(Buffer.from(scratch.subarray(0, n))) // the socket gives fresh buffers; the framer must not rely on more
      scratch.fill(0xee)
      for (let fr = f.next(); fr; fr = f.next()) kept.push({ view: fr.payload, copy: Buffer.from(fr.payload) })
    }
    expect(kept.length).toBe(walk(bb).length)
    for (const k of kept) expect(k.view.equals(k.copy)).toBe(true)
  })

  it('hands out a payload across chunks that lie side by side in one buffer as a view of it, others as copies', () => {
    const bb = fixture('base-backup-pg15.bin')
    const want = walk(bb)
    // The recording in one slab, pushed as reads of 4,000 bytes would land (SocketInput), then as separate buffers.
    const slab = Buffer.from(bb)
    const reads: Buffer[] = []
    for (let off = 0; off < slab.length; off += 4000) reads.push(slab.subarray(off, off + 4000))
    const f = new FrameReader()
    const got: Frame[] = []
    for (const r of reads) {
      f.push(r)
      for (let fr = f.next(); fr; fr = f.next()) got.push(fr)
    }
    expect(same(got, want)).toBe(true)
    const large = got.filter((fr) => fr.payload.length > 4000)
    expect(large.length).toBeGreaterThan(3)
    for (const fr of got) expect(fr.payload.buffer).toBe(slab.buffer) // not one copied
    const apart = frames(reads.map((r) => Buffer.from(r)))
    expect(same(apart, want)).toBe(true)
    // Side by side but pushed out of order, or with a gap: never joined.
    const g = new FrameReader()
    const frame = bb.subarray(0, 1 + bb.readInt32BE(1))
    const gapped = Buffer.alloc(frame.length + 1)
    frame.copy(gapped, 0, 0, 3)
    frame.copy(gapped, 4, 3)
    g.push(gapped.subarray(0, 3))
    g.push(gapped.subarray(4))
    expect(g.next()?.payload.equals(frame.subarray(5))).toBe(true)
  })

  it('after release(), assembles payloads across chunks in one buffer used again, never one still handed out', () => {
    const bb = fixture('base-backup-pg15.bin')
    const want = walk(bb)
    // Separate buffers of 4,000 bytes (as TLS reads arrive; not Buffer.from, whose small buffers lie side by side in
    // one pool and would be joined): every larger payload has to be assembled.
    const reads: Buffer[] = []
    for (let off = 0; off < bb.length; off += 4000) {
      const read = Buffer.allocUnsafeSlow(Math.min(4000, bb.length - off))
      bb.copy(read, 0, off, off + read.length)
      reads.push(read)
    }
    const assembled = (fr: Frame) => reads.every((c) => c.buffer !== fr.payload.buffer)
    /** Every frame, released after each ('each'), only before the first ('once') or never; the assembled ones. */
    const read = (release: 'each' | 'once' | 'never') => {
      const f = new FrameReader()
      if (release === 'once') f.release()
      const got: Frame[] = []
      for (const r of reads) {
        f.push(r)
        for (let fr = f.next(); fr; fr = f.next()) {
          got.push(fr)
          if (release !== 'each') continue
          expect(fr.payload.equals(want[got.length - 1]!.payload)).toBe(true)
          f.release()
          // Tests poison what is released: a view kept past release() sees other bytes.
          if (assembled(fr) && fr.payload.length > 0) expect(fr.payload.every((x) => x === 0xa5)).toBe(true)
        }
      }
      expect(got.length).toBe(want.length)
      if (release !== 'each') expect(same(got, want)).toBe(true) // nothing handed out was written over
      return got.filter(assembled).map((fr) => fr.payload.buffer)
    }
    const each = read('each')
    expect(each.length).toBeGreaterThan(3)
    expect(new Set(each).size).toBe(1)
    for (const release of ['once', 'never'] as const) expect(new Set(read(release)).size).toBe(each.length)
  })

  it('rejects an impossible length', () => {
    const f = new FrameReader()
    f.push(Buffer.from([0x64, 0, 0, 0, 2]))
    expect(() => f.next()).toThrow(ProtocolError)
  })
})

/** A message header declaring `length` (the length word counts itself). */
const header = (type: string, length: number) => {
  const b = Buffer.alloc(5)
  b[0] = type.charCodeAt(0)
  b.writeInt32BE(length, 1)
  return b
}
const AUTH_OK = Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0])

describe('FrameReader caps declared lengths by protocol state', () => {
  /** What next() does with only this header pushed: 'waits' for the payload, or the error it throws. */
  function verdict(f: FrameReader, type: string, length: number): 'waits' | ProtocolError {
    f.push(header(type, length))
    try {
      expect(f.next()).toBeUndefined()
      return 'waits'
    } catch (err) {
      expect(err).toBeInstanceOf(ProtocolError)
      return err as ProtocolError
    }
  }

  it('before authentication: 2000 bytes, 30000 for errors and notices (libpq), and a 1 GiB frame is refused at its header', () => {
    expect(verdict(new FrameReader(), 'R', 2000)).toBe('waits')
    expect(verdict(new FrameReader(), 'E', 30_000)).toBe('waits')
    expect(verdict(new FrameReader(), 'N', 30_000)).toBe('waits')
    const auth = verdict(new FrameReader(), 'R', 2001) as ProtocolError
    expect(auth.message).toMatch(/type 'R' declaring 2001 bytes; at most 2000 are allowed before authentication/)
    expect(auth.hint).toMatch(/genuine PostgreSQL server/)
    expect((verdict(new FrameReader(), 'E', 30_001) as ProtocolError).message).toMatch(/'E' declaring 30001 bytes/)
    for (const type of ['d', 'D', 'S', 'Z']) expect(verdict(new FrameReader(), type, 2001)).toBeInstanceOf(ProtocolError)
    // A gigabyte announced before authentication: refused with nothing but the header buffered.
    const f = new FrameReader()
    expect((verdict(f, 'd', 1 << 30) as ProtocolError).message).toMatch(/'d' declaring 1073741824 bytes/)
    expect(f.pendingBytes).toBe(5)
  })

  it('after AuthenticationOk: 30000 for short messages, 2 MiB for rows and errors, 8 MiB for CopyData', () => {
    const authenticated = () => {
      const f = new FrameReader()
      f.push(AUTH_OK)
      expect(f.next()?.type).toBe(0x52)
      expect(f.isAuthenticated).toBe(true)
      return f
    }
    expect(FRAME_LIMITS.copyData).toBe(8 << 20)
    expect(verdict(authenticated(), 'Z', 30_000)).toBe('waits')
    expect((verdict(authenticated(), 'Z', 30_001) as ProtocolError).message).toMatch(/'Z' declaring 30001 bytes; at most 30000 are allowed for it/)
    expect((verdict(authenticated(), 'C', 30_001) as ProtocolError).message).toMatch(/'C' declaring 30001/)
    for (const type of ['D', 'T', 'E', 'N', 'A']) {
      expect(verdict(authenticated(), type, FRAME_LIMITS.session.long), type).toBe('waits')
      expect(verdict(authenticated(), type, FRAME_LIMITS.session.long + 1), type).toBeInstanceOf(ProtocolError)
    }
    expect(verdict(authenticated(), 'd', FRAME_LIMITS.copyData)).toBe('waits')
    expect((verdict(authenticated(), 'd', FRAME_LIMITS.copyData + 1) as ProtocolError).message).toMatch(/'d' declaring 8388609 bytes/)
    expect((verdict(authenticated(), 'D', 0x7fff_ffff) as ProtocolError).message).toMatch(/'D' declaring 2147483647 bytes/)
    // Only AuthenticationOk opens the session caps: another authentication request does not.
    const f = new FrameReader()
    f.push(Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 3]))
    f.next()
    expect(f.isAuthenticated).toBe(false)
  })

  it('checks a header that arrives split over several pushes', () => {
    const f = new FrameReader()
    const h = header('d', 100_000)
    f.push(h.subarray(0, 2))
    expect(f.next()).toBeUndefined()
    f.push(h.subarray(2, 4))
    expect(f.next()).toBeUndefined()
    f.push(h.subarray(4))
    expect(() => f.next()).toThrow(/'d' declaring 100000 bytes/)
  })

  it('counts the bytes of the frames it hands out', () => {
    const f = new FrameReader()
    f.push(AUTH_OK)
    f.push(Buffer.from([0x5a, 0, 0, 0, 5, 0x49]))
    f.next()
    f.next()
    expect(f.framedBytes).toBe(AUTH_OK.length + 6)
  })
})

/** Offset of the first frame with a payload over 1 KiB: everything before it is startup, auth and commands. */
function boundaryBeforeFirstLargeFrame(buf: Buffer): number {
  let off = 0
  while (buf.readInt32BE(off + 1) <= 1024) off += 1 + buf.readInt32BE(off + 1)
  return off
}
