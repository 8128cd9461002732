// The project's TypeScript sources, for the tests that check rules over them (layering, source shape).

import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'

/** The repository's root directory. */
export const ROOT = join(import.meta.dirname, '..', '..')

/** Every `.ts` file below `dir` (relative to ROOT), as paths relative to ROOT. */
export function sources(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(join(ROOT, dir))) {
    const path = join(ROOT, dir, name)
    if (statSync(path).isDirectory()) out.push(...sources(relative(ROOT, path)))
    else if (name.endsWith('.ts')) out.push(relative(ROOT, path))
  }
  return out
}
