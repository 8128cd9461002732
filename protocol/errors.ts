// The error base of the whole project, and the errors of the replication protocol layer.
// Every error carries a stable string `code` (never match on message text), an optional remediation `hint`,
// and `retryable`. A Symbol.for brand makes `isPgkeepError` work across duplicated copies of the package.

const BRAND = Symbol.for('pgkeep.error')

export interface ErrorOptions {
  cause?: unknown
  hint?: string
  retryable?: boolean
}

/** Base of every error pgkeep throws on purpose. Messages are lowercase, without a final period. */
export class BaseError extends Error {
  readonly code: string
  readonly hint?: string
  readonly retryable: boolean

  constructor(code: string, message: string, o: ErrorOptions = {}) {
    super(message, o.cause === undefined ? undefined : { cause: o.cause })
    this.name = new.target.name
    this.code = code
    this.hint = o.hint
    this.retryable = o.retryable ?? false
  }

  get [BRAND](): true {
    return true
  }
}

/** True for every error pgkeep throws on purpose, also when it comes from another copy of the package. */
export const isPgkeepError = (e: unknown): e is BaseError => typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[BRAND] === true

/**
 * True when `e` is a pgkeep error with this stable code (`Codes.INTEGRITY`, `'LOCKED'`, …). Use it rather than
 * `instanceof`: it holds across two copies of the package.
 */
export const hasErrorCode = (e: unknown, code: string): e is BaseError => isPgkeepError(e) && e.code === code

/** Error codes of the protocol layer. */
export const ProtocolCodes = {
  PROTOCOL: 'PROTOCOL',
  CONNECTION: 'CONNECTION',
  AUTH: 'AUTH',
  SERVER: 'SERVER',
  CONFIG: 'CONFIG',
  ABORTED: 'ABORTED',
} as const

/** Bytes from the server that do not follow the protocol; the session is unusable afterwards. */
export class ProtocolError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(ProtocolCodes.PROTOCOL, message, o)
  }
}

/** The connection could not be made or was lost. Usually worth retrying. */
export class ConnectionError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(ProtocolCodes.CONNECTION, message, { retryable: true, ...o })
  }
}

/** Authentication failed or is not supported (wrong password, pg_hba.conf rejection, unknown method). */
export class AuthError extends BaseError {
  constructor(
    message: string,
    readonly sqlState?: string,
    o: ErrorOptions = {},
  ) {
    super(ProtocolCodes.AUTH, message, o)
  }
}

/** Bad connection options (conninfo syntax, sslmode values, missing files). */
export class ConnectionConfigError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(ProtocolCodes.CONFIG, message, o)
  }
}

/** Fields of a PostgreSQL ErrorResponse or NoticeResponse. */
export interface ServerMessageFields {
  severity?: string
  sqlState: string
  message: string
  detail?: string
  hint?: string
  where?: string
  position?: string
  file?: string
  line?: string
  routine?: string
}

/** The server answered with an ErrorResponse. `sqlState` is PostgreSQL's code; `code` is always 'SERVER'. */
export class ServerError extends BaseError {
  readonly sqlState: string
  readonly severity?: string
  readonly detail?: string
  readonly serverHint?: string

  constructor(fields: ServerMessageFields, o: ErrorOptions = {}) {
    super(ProtocolCodes.SERVER, fields.message, { hint: fields.hint, ...o })
    this.sqlState = fields.sqlState
    this.severity = fields.severity
    this.detail = fields.detail
    this.serverHint = fields.hint
  }
}

/** An operation was cancelled through its AbortSignal. */
export class AbortedError extends BaseError {
  constructor(message = 'operation aborted', o: ErrorOptions = {}) {
    super(ProtocolCodes.ABORTED, message, o)
  }
}
