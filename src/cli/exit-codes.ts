// One registry from error code to process exit status (the pgBackRest habit): scripts can branch on the status.
// 0 success, 1 "not found" for `wal get` and "not ready" for `check`, 2 usage; everything else is listed here.

import { Codes, ProtocolCodes } from '../errors.js'

export const ExitCodes: Readonly<Record<string, number>> = {
  [Codes.NOT_READY]: 1,
  [Codes.NOT_FOUND]: 1,
  [Codes.USAGE]: 2,
  [Codes.CONFIG]: 3,
  [ProtocolCodes.CONNECTION]: 10,
  [ProtocolCodes.AUTH]: 11,
  [ProtocolCodes.SERVER]: 12,
  [ProtocolCodes.PROTOCOL]: 13,
  [ProtocolCodes.ABORTED]: 14,
  [Codes.STORAGE]: 20,
  [Codes.ALREADY_EXISTS]: 21,
  [Codes.REPO_FORMAT]: 22,
  [Codes.PASSPHRASE]: 23,
  [Codes.LOCKED]: 24,
  [Codes.INTEGRITY]: 30,
  [Codes.FORMAT]: 31,
  [Codes.DRILL_FAILED]: 40,
  [Codes.ASSERTION]: 70,
}

/** Exit status for an error that is not one of ours (a bug or an unexpected system error). */
export const EXIT_UNEXPECTED = 70

export function exitCodeFor(code: string | undefined): number {
  return (code !== undefined && ExitCodes[code]) || EXIT_UNEXPECTED
}
