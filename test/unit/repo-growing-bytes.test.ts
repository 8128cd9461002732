import { describe, expect, it } from 'vitest'
import { GrowingBytes } from '../../src/repo/growing-bytes.js'

describe('growing bytes', () => {
  it('keeps everything appended, in order, across growth: UTF-8 of 1 to 4 bytes a character, hex, bytes', () => {
    const g = new GrowingBytes(16)
    const want: Buffer[] = []
    for (let i = 0; i < 2000; i++) {
      const text = `${i}:ü€\u{1F418}`.repeat((i % 7) + 1)
      g.appendUtf8(text)
      want.push(Buffer.from(text, 'utf8'))
      const hex = (i * 2654435761).toString(16).padStart(16, '0').slice(-16)
      g.appendHex(hex)
      want.push(Buffer.from(hex, 'hex'))
      g.appendByte(i & 0xff)
      want.push(Buffer.from([i & 0xff]))
      const raw = Buffer.alloc(i % 300, i & 0xff)
      g.append(raw)
      want.push(raw)
    }
    const all = Buffer.concat(want)
    expect(g.length).toBe(all.length)
    expect(g.view().equals(all)).toBe(true)
    const first = Buffer.from('0:ü€\u{1F418}', 'utf8')
    expect(g.utf8(0, first.length)).toBe('0:ü€\u{1F418}')
  })

  it('is empty after clear() and free(), and takes more after either', () => {
    const g = new GrowingBytes(4)
    g.appendUtf8('abcdefgh')
    g.clear()
    expect(g.length).toBe(0)
    g.appendUtf8('xy')
    expect(g.view().toString()).toBe('xy')
    g.free()
    expect(g.length).toBe(0)
    expect(g.view().length).toBe(0)
    g.appendHex('00ff')
    expect([...g.view()]).toEqual([0, 255])
  })
})
