// "Did you mean …?": the known word nearest to a mistyped one (a command, a configuration key), by edit distance.

/** Levenshtein distance with transpositions counted as one edit (optimal string alignment). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)])
  for (let j = 1; j <= b.length; j++) d[0]![j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1)
      d[i]![j] = v
    }
  }
  return d[a.length]![b.length]!
}

/**
 * The candidate nearest to `word` when it is near enough to be a typing mistake (at most a third of its letters
 * off, and at least 1 for short words), else undefined. A candidate that starts with `word` counts as near.
 */
export function closestWord(word: string, candidates: readonly string[]): string | undefined {
  const w = word.toLowerCase()
  let best: { c: string; d: number } | undefined
  for (const c of candidates) {
    const d = w.length >= 3 && c.startsWith(w) ? 0.5 : editDistance(w, c.toLowerCase())
    if (!best || d < best.d) best = { c, d }
  }
  return best && best.d <= Math.max(1, Math.floor(w.length / 3)) ? best.c : undefined
}
