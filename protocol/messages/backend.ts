// Pure decoders of the backend messages a replication client meets, keyed by the names of the PostgreSQL docs
// ("Message Formats", protocol-message-formats.html). Input: one owned frame from FrameReader.

import { ProtocolError, type ServerMessageFields } from '../errors.js'
import { ByteReader } from '../wire/byte-reader.js'
import type { Frame } from '../wire/frame-reader.js'

export interface FieldDescription {
  readonly name: string
  readonly dataTypeId: number
}

export type BackendMessage =
  | { type: 'AuthenticationOk' }
  | { type: 'AuthenticationCleartextPassword' }
  | { type: 'AuthenticationMD5Password'; salt: Buffer }
  | { type: 'AuthenticationSASL'; mechanisms: string[] }
  | { type: 'AuthenticationSASLContinue'; data: string }
  | { type: 'AuthenticationSASLFinal'; data: string }
  | { type: 'AuthenticationUnsupported'; method: number }
  | { type: 'ParameterStatus'; name: string; value: string }
  | { type: 'BackendKeyData'; processId: number; secretKey: Buffer }
  | { type: 'ReadyForQuery'; status: string }
  | { type: 'RowDescription'; fields: FieldDescription[] }
  | { type: 'DataRow'; values: (Buffer | null)[] }
  | { type: 'CommandComplete'; tag: string }
  | { type: 'EmptyQueryResponse' }
  | { type: 'ErrorResponse'; fields: ServerMessageFields }
  | { type: 'NoticeResponse'; fields: ServerMessageFields }
  | { type: 'CopyInResponse'; columns: number }
  | { type: 'CopyOutResponse'; columns: number }
  | { type: 'CopyBothResponse'; columns: number }
  | { type: 'CopyData'; data: Buffer }
  | { type: 'CopyDone' }
  | { type: 'NegotiateProtocolVersion'; newestMinor: number; unrecognized: string[] }
  | { type: 'NotificationResponse'; channel: string; payload: string }

/** Backend message type bytes. */
export const BackendTag = {
  Authentication: 0x52, // 'R'
  ParameterStatus: 0x53, // 'S'
  BackendKeyData: 0x4b, // 'K'
  ReadyForQuery: 0x5a, // 'Z'
  RowDescription: 0x54, // 'T'
  DataRow: 0x44, // 'D'
  CommandComplete: 0x43, // 'C'
  EmptyQueryResponse: 0x49, // 'I'
  ErrorResponse: 0x45, // 'E'
  NoticeResponse: 0x4e, // 'N'
  CopyInResponse: 0x47, // 'G'
  CopyOutResponse: 0x48, // 'H'
  CopyBothResponse: 0x57, // 'W'
  CopyData: 0x64, // 'd'
  CopyDone: 0x63, // 'c'
  NegotiateProtocolVersion: 0x76, // 'v'
  NotificationResponse: 0x41, // 'A'
} as const

export function decodeBackend(frame: Frame): BackendMessage {
  const r = new ByteReader(frame.payload)
  switch (frame.type) {
    case BackendTag.CopyData:
      // The hot path: CopyData carries every byte of a backup and of the WAL stream.
      return { type: 'CopyData', data: frame.payload }
    case BackendTag.Authentication:
      return decodeAuthentication(r)
    case BackendTag.ParameterStatus:
      return { type: 'ParameterStatus', name: r.cstring(), value: r.cstring() }
    case BackendTag.BackendKeyData:
      // Int32 pid | secret key (4 bytes before protocol 3.2, up to 256 after)
      return { type: 'BackendKeyData', processId: r.i32(), secretKey: Buffer.from(r.rest()) }
    case BackendTag.ReadyForQuery:
      return { type: 'ReadyForQuery', status: String.fromCharCode(r.u8()) }
    case BackendTag.RowDescription: {
      // Int16 n | n × (String name | Int32 tableOid | Int16 column | Int32 typeOid | Int16 typlen | Int32 typmod | Int16 format)
      const n = r.i16()
      const fields: FieldDescription[] = []
      for (let i = 0; i < n; i++) {
        const name = r.cstring()
        r.i32()
        r.i16()
        const dataTypeId = r.i32()
        r.i16()
        r.i32()
        r.i16()
        fields.push({ name, dataTypeId })
      }
      return { type: 'RowDescription', fields }
    }
    case BackendTag.DataRow: {
      // Int16 n | n × (Int32 len (-1 = NULL) | Byte[len]); kept as raw bytes: TIMELINE_HISTORY content is not text
      const n = r.i16()
      const values: (Buffer | null)[] = []
      for (let i = 0; i < n; i++) {
        const len = r.i32()
        values.push(len < 0 ? null : r.bytes(len))
      }
      return { type: 'DataRow', values }
    }
    case BackendTag.CommandComplete:
      return { type: 'CommandComplete', tag: r.cstring() }
    case BackendTag.EmptyQueryResponse:
      return { type: 'EmptyQueryResponse' }
    case BackendTag.ErrorResponse:
      return { type: 'ErrorResponse', fields: decodeFields(r) }
    case BackendTag.NoticeResponse:
      return { type: 'NoticeResponse', fields: decodeFields(r) }
    case BackendTag.CopyInResponse:
    case BackendTag.CopyOutResponse:
    case BackendTag.CopyBothResponse: {
      // Int8 overall format | Int16 columns | columns × Int16 format
      r.u8()
      const columns = r.i16()
      const type =
        frame.type === BackendTag.CopyInResponse ? 'CopyInResponse' : frame.type === BackendTag.CopyOutResponse ? 'CopyOutResponse' : 'CopyBothResponse'
      return { type, columns }
    }
    case BackendTag.CopyDone:
      return { type: 'CopyDone' }
    case BackendTag.NegotiateProtocolVersion: {
      const newestMinor = r.i32()
      const n = r.i32()
      const unrecognized: string[] = []
      for (let i = 0; i < n; i++) unrecognized.push(r.cstring())
      return { type: 'NegotiateProtocolVersion', newestMinor, unrecognized }
    }
    case BackendTag.NotificationResponse:
      r.i32()
      return { type: 'NotificationResponse', channel: r.cstring(), payload: r.cstring() }
    default:
      throw new ProtocolError(`unexpected backend message type 0x${frame.type.toString(16)}`)
  }
}

function decodeAuthentication(r: ByteReader): BackendMessage {
  const code = r.i32()
  switch (code) {
    case 0:
      return { type: 'AuthenticationOk' }
    case 3:
      return { type: 'AuthenticationCleartextPassword' }
    case 5:
      return { type: 'AuthenticationMD5Password', salt: Buffer.from(r.bytes(4)) }
    case 10: {
      const mechanisms: string[] = []
      for (let m = r.cstring(); m !== ''; m = r.cstring()) mechanisms.push(m)
      return { type: 'AuthenticationSASL', mechanisms }
    }
    case 11:
      return { type: 'AuthenticationSASLContinue', data: r.rest().toString('utf8') }
    case 12:
      return { type: 'AuthenticationSASLFinal', data: r.rest().toString('utf8') }
    default:
      // 2 Kerberos, 7 GSS, 8 GSS continue, 9 SSPI
      return { type: 'AuthenticationUnsupported', method: code }
  }
}

/** ErrorResponse / NoticeResponse: (Byte1 code | String value)* then a zero byte. */
function decodeFields(r: ByteReader): ServerMessageFields {
  const f: Partial<ServerMessageFields> & Record<string, string | undefined> = {}
  for (let code = r.u8(); code !== 0; code = r.u8()) {
    const value = r.cstring()
    switch (String.fromCharCode(code)) {
      case 'V': // non-localized severity (9.6+); preferred
        f.severity = value
        break
      case 'S':
        f.severity ??= value
        break
      case 'C':
        f.sqlState = value
        break
      case 'M':
        f.message = value
        break
      case 'D':
        f.detail = value
        break
      case 'H':
        f.hint = value
        break
      case 'W':
        f.where = value
        break
      case 'P':
        f.position = value
        break
      case 'F':
        f.file = value
        break
      case 'L':
        f.line = value
        break
      case 'R':
        f.routine = value
        break
    }
  }
  return { sqlState: f.sqlState ?? 'XX000', message: f.message ?? '(no message)', ...f } as ServerMessageFields
}
