// The check file of `pgkeep drill --check FILE`: directives in SQL comments, expected rows with | between values.

import { describe, expect, it } from 'vitest'
import { formatRow, parseCheckFile } from '../../src/drill/check-file.js'
import { UsageError } from '../../src/errors.js'

describe('drill check files', () => {
  it('reads checks with their database, SQL and expected rows or row count', () => {
    const checks = parseCheckFile(`# orders
-- a comment before the first check

-- check: orders are there
-- database: shop
select count(*),
       max(id)
  from orders;
-- expect: 1200|1200

-- check: newest two, with a NULL and a pipe
select id, note from orders order by id desc limit 2;
-- expect: 1200|\\N
-- expect: 1199|a \\| b \\\\ c
-- trailing comment

-- check: nothing negative
select 1 from accounts where balance < 0
-- expect-rows: 0
`)
    expect(checks).toEqual([
      { name: 'orders are there', database: 'shop', sql: 'select count(*),\n       max(id)\n  from orders', expect: { rows: [['1200', '1200']] }, line: 4 },
      {
        name: 'newest two, with a NULL and a pipe',
        database: 'postgres',
        sql: 'select id, note from orders order by id desc limit 2',
        expect: {
          rows: [
            ['1200', null],
            ['1199', 'a | b \\ c'],
          ],
        },
        line: 11,
      },
      { name: 'nothing negative', database: 'postgres', sql: 'select 1 from accounts where balance < 0', expect: { rowCount: 0 }, line: 17 },
    ])
    expect(formatRow(['1199', 'a | b \\ c', null])).toBe('1199|a \\| b \\\\ c|\\N')
  })

  it('keeps spaces inside expected values and reads an empty value', () => {
    const [c] = parseCheckFile('-- check: x\nselect 1\n-- expect:  two  spaces|\n')
    expect(c!.expect).toEqual({ rows: [[' two  spaces', '']] })
  })

  it.each([
    ['select 1\n-- check: x\n', 'line 1: SQL before the first'],
    ['-- check: x\nselect 1\n', "check 'x' has no '-- expect:' or '-- expect-rows:' line"],
    ['-- check: x\n-- expect: 1\n', "check 'x' has no SQL"],
    ['-- check: x\nselect 1\n-- expect: 1\nselect 2\n', 'line 4: SQL after the expected result'],
    ['-- check: x\nselect 1\n-- expect-rows: many\n', "line 3: '-- expect-rows:' needs a number"],
    ['-- check: x\nselect 1\n-- expect: 1\n-- expect-rows: 1\n', 'more than one kind of expectation'],
    ['-- check: x\nselect 1\n-- expect: a\\tb\n', "'\\t' is not an escape"],
    ['-- check: x\nselect 1\n-- database: d\n-- expect: 1\n', "'-- database:' must come before the SQL"],
    ['-- check: x\nselect 1\n-- expect: 1\n-- check: x\nselect 2\n-- expect: 2\n', "two checks are named 'x'"],
    ['-- database: d\n', "'-- database:' before the first"],
    ['\n# nothing\n', 'holds no check'],
  ])('refuses %j', (text, message) => {
    let err: unknown
    try {
      parseCheckFile(text, 'checks.sql')
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(UsageError)
    expect((err as Error).message).toContain(message)
  })
})
