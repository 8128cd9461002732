// Running the CLI in tests: in-process through main() (fast, uses the TypeScript sources) or as the installed
// binary bin/pgkeep.js in a child process (uses dist/, built by `npm test`'s pretest step).

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { main } from '../../src/cli/main.js'
import { serverUser } from './server-user.js'

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

const ROOT = join(import.meta.dirname, '..', '..')

/** Runs `pgkeep ARGS` in this process with its own environment and captured output. */
export async function runMain(args: string[], env: Record<string, string | undefined> = {}, signal?: AbortSignal): Promise<CliResult> {
  const out = new PassThrough()
  const err = new PassThrough()
  let stdout = ''
  let stderr = ''
  out.on('data', (d) => (stdout += d))
  err.on('data', (d) => (stderr += d))
  const code = await main(args, { env: { PATH: process.env.PATH, ...env }, stdout: out, stderr: err, signal: signal ?? new AbortController().signal })
  return { code, stdout, stderr }
}

/**
 * Runs the real binary `node bin/pgkeep.js ARGS` in a child process (in `o.cwd` when given); with `asServerUser`,
 * as the user the test servers run as (`postgres` when the tests run as root, see server-user.ts).
 */
export function runBin(args: string[], env: Record<string, string | undefined> = {}, o: { cwd?: string; asServerUser?: boolean } = {}): Promise<CliResult> {
  if (!existsSync(join(ROOT, 'dist', 'src', 'cli', 'main.js'))) {
    throw new Error("dist/ is missing: run 'npm run build' (npm test does it for you)")
  }
  const u = serverUser()
  const as = o.asServerUser && u.drop ? { uid: u.uid, gid: u.gid } : {}
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'pgkeep.js'), ...args], {
      env: { PATH: process.env.PATH, HOME: o.asServerUser && u.drop ? '/tmp' : process.env.HOME, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: o.cwd,
      ...as,
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }))
  })
}
