// Every error code has its own exit status (pgBackRest's registry idea), and errors carry what the CLI prints.

import { describe, expect, it } from 'vitest'
import { EXIT_UNEXPECTED, ExitCodes, exitCodeFor } from '../../src/cli/exit-codes.js'
import { reportError } from '../../src/cli/main.js'
import { AuthError, Codes, IntegrityError, isPgkeepError, ProtocolCodes, ServerError } from '../../src/errors.js'

describe('error codes', () => {
  const all = [...new Set([...Object.values(Codes), ...Object.values(ProtocolCodes)])]

  it('map every code to an exit status, distinct except the deliberate shared ones', () => {
    for (const code of all) expect(ExitCodes[code], code).toBeGreaterThan(0)
    // 1 is shared on purpose: "not ready" (check) and "not found" (wal get) are the expected negative answers.
    const byStatus = new Map<number, string[]>()
    for (const code of all) byStatus.set(ExitCodes[code], [...(byStatus.get(ExitCodes[code]) ?? []), code])
    for (const [status, codes] of byStatus) if (status !== 1) expect(codes, `exit ${status}`).toHaveLength(1)
    expect(exitCodeFor('NO_SUCH_CODE')).toBe(EXIT_UNEXPECTED)
  })

  it('are recognised across copies by their brand, and printed with detail and hint', () => {
    const e = new ServerError({ sqlState: '58P01', message: 'requested WAL segment has already been removed', detail: 'segment 3' }, { hint: 'use a slot' })
    expect(isPgkeepError(e)).toBe(true)
    expect(isPgkeepError(new Error('x'))).toBe(false)
    let text = ''
    const status = reportError(e, { stderr: { write: (t: string) => (text += t) } as never, env: {} })
    expect(status).toBe(12)
    expect(text).toBe('pgkeep: error: requested WAL segment has already been removed\nDETAIL: segment 3\nHINT: use a slot\n')
    expect(reportError(new AuthError('no'), { stderr: { write: () => true } as never, env: {} })).toBe(11)
    expect(reportError(new IntegrityError('bad'), { stderr: { write: () => true } as never, env: {} })).toBe(30)
  })
})
