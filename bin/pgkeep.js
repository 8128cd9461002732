#!/usr/bin/env -S node --max-semi-space-size=8
// Entry point of the CLI (the `pgkeep` command, bin/pgkeep, runs it with the settings it explains; restore_command
// runs it directly): the compiled CLI lives in dist/ (built by `npm install` through `prepare`).
// The flag above: a young generation of 8 MB semi-spaces (V8's default grows to 16). A backup of 40,000 small
// files then peaked 45 MB lower with the same CPU; on large files it made no difference (docs/operations.md).

const args = process.argv.slice(2)

// Set for this process by bin/pgkeep (read by glibc at start): not for the programs this one starts.
if (process.env.PGKEEP_SET_GLIBC_TUNABLES === '1') {
  delete process.env.GLIBC_TUNABLES
  delete process.env.PGKEEP_SET_GLIBC_TUNABLES
}

/**
 * restore_command runs `pgkeep wal get` once per WAL file: first the lean path (dist/src/cli/wal-get-lean.js),
 * which serves through a live prefetch daemon without loading the CLI, and answers only when it answers as the
 * full command would. Undefined: the full CLI runs, as if the lean path had not been tried.
 */
async function lean() {
  if (!args.includes('wal') || !args.includes('get') || args.includes('--daemon')) return undefined
  try {
    const { leanWalGet } = await import('../dist/src/cli/wal-get-lean.js')
    return await leanWalGet(args, { env: process.env, stderr: process.stderr })
  } catch {
    return undefined
  }
}

const served = await lean()
if (served !== undefined) process.exitCode = served
else {
  const { main } = await import('../dist/src/cli/main.js')
  process.exitCode = await main(args)
}
