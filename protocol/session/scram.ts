// SCRAM-SHA-256 (and -PLUS with tls-server-end-point channel binding) through pg's client implementation, which
// also applies SASLprep. pg publishes it only under lib/, so this is the one file that reaches into it.

import type { TLSSocket } from 'node:tls'
// @ts-expect-error pg ships no types for its internal SASL module
import * as sasl from 'pg/lib/crypto/sasl.js'

interface SaslSession {
  mechanism: string
  response: string
}

interface SaslModule {
  startSession(mechanisms: string[], stream?: unknown): SaslSession
  continueSession(session: SaslSession, password: string, serverData: string, stream?: unknown): Promise<void>
  finalizeSession(session: SaslSession, serverData: string): void
}

const impl = ((sasl as { default?: SaslModule }).default ?? sasl) as SaslModule

export class ScramClient {
  private readonly session: SaslSession

  /** Picks SCRAM-SHA-256-PLUS when the server offers it over TLS, as libpq's channel_binding=prefer does. */
  constructor(
    mechanisms: string[],
    private readonly tls?: TLSSocket,
  ) {
    this.session = impl.startSession(mechanisms, tls)
  }

  get mechanism(): string {
    return this.session.mechanism
  }

  /** client-first-message. */
  get initialResponse(): string {
    return this.session.response
  }

  /** Consumes server-first-message; returns client-final-message. */
  async respond(password: string, serverFirst: string): Promise<string> {
    await impl.continueSession(this.session, password, serverFirst, this.tls)
    return this.session.response
  }

  /** Verifies the server signature in server-final-message (mutual authentication). */
  verify(serverFinal: string): void {
    impl.finalizeSession(this.session, serverFinal)
  }
}
