// The PostgreSQL majors pgkeep supports: one constant that check, backup and restore read. Older majors are refused
// (their BASE_BACKUP or formats differ); newer ones are untested (warned about, not refused: a backup tool that
// blocks an upgrade is replaced, and the formats it reads are checked where they enter).

/** Oldest and newest majors pgkeep is tested against. */
export const SUPPORTED_MAJORS = { min: 14, max: 19 } as const

/** 'too-old' below the supported majors, 'untested' above them, undefined within. */
export function majorSupport(major: number): 'too-old' | 'untested' | undefined {
  if (major < SUPPORTED_MAJORS.min) return 'too-old'
  if (major > SUPPORTED_MAJORS.max) return 'untested'
  return undefined
}
