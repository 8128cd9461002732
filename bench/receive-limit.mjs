#!/usr/bin/env node
// The physical limit of a base backup on this machine: receive BASE_BACKUP through protocol/ (the compiled code in
// dist/) with the options pgkeep's backup asks for (fast checkpoint, progress, CRC32C manifest, memory read into
// again) and discard it.
// Prints {"bytes": N} on stdout. Usage: node bench/receive-limit.mjs CONNINFO   (the password from PGPASSWORD)

import { baseBackup, connect } from '../dist/protocol/index.js'

const conninfo = process.argv[2]
if (!conninfo) {
  process.stderr.write('usage: node bench/receive-limit.mjs CONNINFO\n')
  process.exit(2)
}
const c = await connect(conninfo, { env: process.env })
let bytes = 0
try {
  for await (const e of baseBackup(c, { checkpoint: 'fast', progress: true, manifest: true, manifestChecksums: 'CRC32C', transientData: true })) {
    if (e.type === 'data') bytes += e.data.length
  }
} finally {
  await c.close()
}
process.stdout.write(JSON.stringify({ bytes }) + '\n')
