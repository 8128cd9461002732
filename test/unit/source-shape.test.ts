// Habits of the sources that a reviewer would otherwise check by hand: no source file over 400 lines unless its
// opening comment says why, and every file opens with a comment saying what it owns.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { ROOT, sources } from '../harness/source-files.js'

const MAX_LINES = 400

/** The comment lines a file opens with. */
const opening = (text: string) => text.split('\n').filter((l, i, all) => all.slice(0, i + 1).every((x) => x.startsWith('//')))

it(`no source file is over ${MAX_LINES} lines without a reason at its top`, () => {
  const long = [...sources('src'), ...sources('protocol')]
    .map((f) => ({ f, text: readFileSync(join(ROOT, f), 'utf8') }))
    .filter(({ text }) => text.split('\n').length > MAX_LINES && !opening(text).some((l) => /longer than 400 lines/i.test(l)))
    .map(({ f }) => f)
  expect(long).toEqual([])
})

it('every source file opens with a comment saying what it owns', () => {
  const bare = [...sources('src'), ...sources('protocol')].filter((f) => opening(readFileSync(join(ROOT, f), 'utf8')).length === 0)
  expect(bare).toEqual([])
})
