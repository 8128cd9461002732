// Frontend messages. pg-protocol's serializer encodes the standard ones; this is the only file that imports it.

import { createHash } from 'node:crypto'
import { serialize } from 'pg-protocol'

export const frontend = {
  startup: (params: Record<string, string>): Buffer => serialize.startup(params),
  /** SSLRequest: Int32 8 | Int32 80877103. */
  sslRequest: (): Buffer => serialize.requestSsl(),
  password: (text: string): Buffer => serialize.password(text),
  saslInitialResponse: (mechanism: string, data: string): Buffer => serialize.sendSASLInitialResponseMessage(mechanism, data),
  saslResponse: (data: string): Buffer => serialize.sendSCRAMClientFinalMessage(data),
  query: (text: string): Buffer => serialize.query(text),
  copyData: (payload: Buffer): Buffer => serialize.copyData(payload),
  copyDone: (): Buffer => serialize.copyDone(),
  copyFail: (message: string): Buffer => serialize.copyFail(message),
  terminate: (): Buffer => serialize.end(),
}

/** The MD5 password response: "md5" + hex(md5(hex(md5(password ‖ user)) ‖ salt)). */
export function md5PasswordResponse(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5')
    .update(password + user)
    .digest('hex')
  return (
    'md5' +
    createHash('md5')
      .update(Buffer.concat([Buffer.from(inner), salt]))
      .digest('hex')
  )
}
