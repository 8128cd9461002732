// Where the compiled module of a worker thread lies. A worker runs JavaScript, so the module is the build's: beside
// the module that starts it when that one runs from dist/, or the build's copy in dist/ when it runs from the
// TypeScript sources (tests; `npm test` builds first). A leaf: it imports nothing of the project.

import { existsSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'

/**
 * The compiled module `name` (a .js file name) in the directory of `from` (an `import.meta.url`), or its copy
 * under dist/ when `from` lies in the sources; undefined when neither exists (callers then work on their own
 * thread).
 */
export function compiledModuleUrl(from: string, name: string): URL | undefined {
  const beside = new URL(`./${name}`, from)
  const candidates = [beside]
  const path = fileURLToPath(beside)
  const at = path.lastIndexOf('/src/')
  if (at >= 0 && !path.includes('/dist/src/')) candidates.push(pathToFileURL(`${path.slice(0, at)}/dist${path.slice(at)}`))
  return candidates.find((u) => existsSync(fileURLToPath(u)))
}
