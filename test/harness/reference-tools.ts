// Reference tools used as oracles: Debian's PostgreSQL 15 client programs of this machine, and pg_verifybackup and
// pg_waldump of 17, 18 and 19 unpacked from Debian's newer suites (test/harness/debian-pg.ts). They fit only some
// server versions (pg_basebackup 15 talks to servers ≤ 15; pg_verifybackup 15 reads manifest version 1, written
// by 13–16; its WAL check needs pg_waldump of the same major). Tests ask here and print why a check is skipped.

import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { debianPgMissingReason, debianPgTool } from './debian-pg.js'

const DEBIAN_BIN = '/usr/lib/postgresql/15/bin'
const TOOL_MAJOR = 15

export const execFileP = promisify(execFile)

export function debianTool(name: string): string | undefined {
  const p = join(DEBIAN_BIN, name)
  return existsSync(p) ? p : undefined
}

export interface VerifyPlan {
  tool?: string
  args: string[]
  /** Why the check cannot run, or runs without WAL parsing. */
  note?: string
}

/**
 * How to run pg_verifybackup on a backup of a server of `major`, or why it cannot run: the unpacked pg_verifybackup
 * of the same major when there is one (17–19; it parses the WAL with the pg_waldump beside it), else Debian's 15.
 */
export function verifyBackupPlan(major: number): VerifyPlan {
  const own = debianPgTool(major, 'pg_verifybackup')
  if (own) return { tool: own, args: [] }
  const tool = debianTool('pg_verifybackup')
  if (!tool) return { args: [], note: `pg_verifybackup not installed at ${DEBIAN_BIN}` }
  if (major >= 17)
    return {
      args: [],
      note: `pg_verifybackup ${TOOL_MAJOR} cannot read the version 2 manifest of PostgreSQL ${major}, and pg_verifybackup ${major} is missing: ${debianPgMissingReason()}`,
    }
  if (major !== TOOL_MAJOR) return { tool, args: ['-n'], note: `WAL not parsed: pg_waldump ${TOOL_MAJOR} cannot read PostgreSQL ${major} WAL` }
  return { tool, args: [] }
}

/** pg_basebackup from Debian when it can back up a server of `major`. */
export function pgBasebackupFor(major: number): string | undefined {
  return major <= TOOL_MAJOR ? debianTool('pg_basebackup') : undefined
}

/** Logs a skipped or reduced check so that it shows in the test output. */
export function noteSkip(what: string, why: string): void {
  console.log(`[skip] ${what}: ${why}`)
}
