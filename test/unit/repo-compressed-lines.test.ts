import { describe, expect, it } from 'vitest'
import { CompressedLines } from '../../src/repo/compressed-lines.js'

describe('compressed lines', () => {
  it('gives back every line in order: empty ones, names beyond ASCII, and lines longer than a block', () => {
    const want: string[] = []
    for (let i = 0; i < 5000; i++) want.push(i % 7 === 0 ? '' : `["base/16384/${i}","f",384,${i},8192,"ünïcödé-€-\u{1F418}"]`)
    // Longer than a block (64 KiB), and longer than what a block's buffer first holds, in 1, 2, 3 and 4 bytes of
    // UTF-8 per character.
    want.splice(10, 0, 'a'.repeat(70_000), 'é'.repeat(50_000), '€'.repeat(40_000), '\u{1F418}'.repeat(30_000))
    const lines = new CompressedLines()
    // Sealed along the way (its open block compressed and its buffer freed), then added to again.
    want.forEach((l, i) => {
      lines.push(l)
      if (i % 1999 === 0) lines.seal()
    })
    expect(lines.count).toBe(want.length)
    expect([...lines.lines()]).toEqual(want)
    // Held compressed: far less than the text.
    expect(lines.heldBytes).toBeGreaterThan(0)
    expect(lines.heldBytes).toBeLessThan(want.join('\n').length / 4)
    // Read again: the same.
    expect([...lines.lines()]).toEqual(want)
  })

  it('has nothing to give when empty, and refuses lines added while reading', () => {
    expect([...new CompressedLines().lines()]).toEqual([])
    const lines = new CompressedLines()
    for (let i = 0; i < 3000; i++) lines.push(`line ${i} ${'x'.repeat(40)}`)
    const reading = lines.lines()
    reading.next()
    lines.push('late')
    expect(() => [...reading]).toThrow(/lines added while reading/)
  })
})
