// Log sequence numbers: a u64 position in the WAL, written `HI/LO` in hex by PostgreSQL.
// Kept as bigint everywhere; 13–18 print no zero padding, 19 pads the low half, so parsing accepts both.

import { ProtocolError } from './errors.js'

/** A WAL position (u64). */
export type Lsn = bigint

const LSN_RE = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/

/** Parses `16/B374D848` (or `0/03000028`); undefined for anything else. The one parser of the text form. */
export function tryParseLsn(text: string): Lsn | undefined {
  const m = LSN_RE.exec(text)
  return m ? (BigInt('0x' + m[1]) << 32n) | BigInt('0x' + m[2]) : undefined
}

/** Parses an LSN the server sent. Throws ProtocolError on anything else. */
export function parseLsn(text: string): Lsn {
  const lsn = tryParseLsn(text)
  if (lsn === undefined) throw new ProtocolError(`invalid LSN '${text}'`, { hint: "an LSN looks like '0/3000028'" })
  return lsn
}

/** True when `text` is a well-formed LSN. */
export const isLsn = (text: string): boolean => LSN_RE.test(text)

/** Formats as PostgreSQL 13–18 do: upper-case hex, no padding (`0/3000028`). */
export function formatLsn(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`
}
