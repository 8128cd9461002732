// The architecture's import rules (docs: README "Reading the code", design.md "Layers"), checked on the sources.

import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ROOT, sources } from '../harness/source-files.js'

const imports = (file: string) => [...readFileSync(join(ROOT, file), 'utf8').matchAll(/^\s*(?:import|export)[^'"]*from\s+'([^']+)'/gm)].map((m) => m[1])

/** Code, not comments: `process.env` or `console.` in a line that is not a comment. */
const codeUses = (file: string, needle: RegExp) =>
  readFileSync(join(ROOT, file), 'utf8')
    .split('\n')
    .filter((l) => !/^\s*(\/\/|\*|\/\*)/.test(l) && needle.test(l))

describe('layering', () => {
  it('protocol/ imports nothing from src/', () => {
    for (const f of sources('protocol')) for (const i of imports(f)) expect(i, `${f} imports ${i}`).not.toMatch(/(^|\/)src\//)
  })

  it('src/ reaches protocol/ only through protocol/index.ts, or its two leaves errors.ts and lsn.ts', () => {
    // The leaves import nothing but each other: src/errors.ts and src/pg/lsn.ts, which nearly every module loads,
    // take them without loading the whole protocol layer (100 ms of every command's start; restore_command runs
    // one per WAL file: src/cli/wal-get-lean.ts).
    for (const f of sources('src')) {
      for (const i of imports(f)) if (i.includes('protocol/')) expect(i, `${f} imports ${i}`).toMatch(/protocol\/(index|errors|lsn)\.js$/)
    }
    expect(imports('protocol/errors.ts')).toEqual([])
    expect(imports('protocol/lsn.ts')).toEqual(['./errors.js'])
  })

  it('only src/cli/ reads process.env or prints', () => {
    for (const f of sources('src').filter((f) => !f.startsWith('src/cli/'))) {
      expect(codeUses(f, /process\.env|console\./), f).toEqual([])
    }
  })

  it('engines and the repository see the Storage interface, never a driver', () => {
    // The CLI and the library's door (src/index.ts) choose drivers for their users; nothing below them does.
    for (const f of sources('src').filter((f) => !f.startsWith('src/storage/') && !f.startsWith('src/cli/') && f !== 'src/index.ts')) {
      for (const i of imports(f)) expect(i, `${f} imports ${i}`).not.toMatch(/storage\/(fs|s3|open)\.js$/)
    }
  })

  const ENGINES = ['backup', 'restore', 'wal', 'verify', 'check', 'expire', 'copy', 'drill', 'metrics']
  const engineOf = (file: string) => ENGINES.find((e) => file.startsWith(`src/${e}/`))

  it('the repository is one door: outside src/repo/ nothing imports a repo/ module other than repo/index.ts', () => {
    for (const f of sources('src').filter((f) => !f.startsWith('src/repo/'))) {
      for (const i of imports(f)) if (/(^|\/)repo\//.test(i)) expect(i, `${f} imports ${i}`).toMatch(/(^|\/)repo\/index\.js$/)
    }
  })

  it("engines do not reach past the repository's door to its storage", () => {
    for (const f of sources('src').filter((f) => engineOf(f)))
      expect(codeUses(f, /\brepo\.storage\b|\.storage\.(list|read|write|remove|stat)\(/), f).toEqual([])
  })

  it('engines do not import each other (what two share lives below them: repo/, pg/)', () => {
    for (const f of sources('src')) {
      const own = engineOf(f)
      if (!own) continue
      for (const i of imports(f)) {
        const other = ENGINES.find((e) => e !== own && new RegExp(`(^|/)${e}/`).test(i) && i.startsWith('..'))
        expect(other, `${f} imports ${i}`).toBeUndefined()
      }
    }
  })

  it('the layers below the engines never import an engine or the CLI', () => {
    // local-server/ (finding server binaries, starting a server of one's own) serves the drill engine and the CLI.
    for (const f of sources('src').filter((f) => /^src\/(repo|storage|pg|local-server)\//.test(f))) {
      for (const i of imports(f)) expect(i, `${f} imports ${i}`).not.toMatch(/(^|\/)(backup|restore|wal|verify|check|expire|copy|drill|metrics|cli)\//)
    }
  })

  it('backup, restore, verify and the WAL commands load no PostgreSQL client library (pg): its load is 0.1 s of a start', () => {
    // Static imports only (a dynamic import() loads when used): the closure of each command's module.
    const closure = (start: string) => {
      const seen = new Set<string>()
      const packages = new Set<string>()
      const visit = (file: string) => {
        if (seen.has(file)) return
        seen.add(file)
        for (const i of imports(file)) {
          if (i.startsWith('.')) visit(join(dirname(file), i).replace(/\.js$/, '.ts'))
          else packages.add(i)
        }
      }
      visit(start)
      return packages
    }
    for (const command of ['backup', 'restore', 'verify', 'wal-get', 'wal-push', 'wal-stream']) {
      const packages = closure(`src/cli/commands/${command}.ts`)
      expect(packages.size, command).toBeGreaterThan(3)
      // (pg/lib/crypto/sasl.js, the SCRAM arithmetic protocol/session/scram.ts uses, loads alone in 17 ms.)
      expect(packages.has('pg'), command).toBe(false)
    }
  })

  it('src/ never imports test/ or bench/', () => {
    for (const f of sources('src')) for (const i of imports(f)) expect(i, `${f} imports ${i}`).not.toMatch(/(^|\/)(test|bench)\//)
  })
})
