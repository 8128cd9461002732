// Helpers for writing replication commands and reading their text results.

import { ConnectionConfigError, ProtocolError } from '../errors.js'
import type { ResultSet } from '../session/connection.js'

/** A replication-grammar string literal: single quotes, embedded quotes doubled, backslashes literal. */
export const quoteLiteral = (s: string): string => `'${s.replace(/'/g, "''")}'`

/** Slot names may contain only [a-z0-9_] and are at most 63 characters (slot.c ReplicationSlotValidateName). */
export function checkSlotName(name: string): string {
  if (!/^[a-z0-9_]{1,63}$/.test(name)) {
    throw new ConnectionConfigError(`invalid replication slot name '${name}'`, {
      hint: 'use 1 to 63 lower-case letters, digits and underscores',
    })
  }
  return name
}

/** The single row of a one-row result set, or throws. */
export function onlyRow(sets: ResultSet[], command: string, index = 0): (Buffer | null)[] {
  const set = sets[index]
  if (set?.rows.length !== 1) {
    throw new ProtocolError(`${command}: expected one row in result set ${index}, got ${set?.rows.length ?? 'none'}`)
  }
  return set.rows[0]
}

export const text = (v: Buffer | null | undefined): string | null => (v == null ? null : v.toString('utf8'))

export function requiredText(v: Buffer | null | undefined, what: string): string {
  if (v == null) throw new ProtocolError(`${what} is NULL`)
  return v.toString('utf8')
}
