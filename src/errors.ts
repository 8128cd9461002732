// Errors of the layers under src/ (storage, repository, PostgreSQL formats, engines, CLI), on the shared base
// from protocol/errors.ts. Codes are stable strings; src/cli/exit-codes.ts maps every code to an exit status.
// Imported from protocol/errors.js itself, not protocol/index.js: every module loads this one, and the index
// loads the whole protocol layer (see test/unit/layering.test.ts).

import { BaseError, type ErrorOptions } from '../protocol/errors.js'

export {
  BaseError,
  isPgkeepError,
  hasErrorCode,
  ProtocolError,
  ConnectionError,
  AuthError,
  ConnectionConfigError,
  ServerError,
  AbortedError,
  ProtocolCodes,
  type ErrorOptions,
  type ServerMessageFields,
} from '../protocol/errors.js'

/** Error codes of the layers under src/. */
export const Codes = {
  STORAGE: 'STORAGE',
  NOT_FOUND: 'NOT_FOUND',
  ALREADY_EXISTS: 'ALREADY_EXISTS',
  INTEGRITY: 'INTEGRITY',
  REPO_FORMAT: 'REPO_FORMAT',
  PASSPHRASE: 'PASSPHRASE',
  LOCKED: 'LOCKED',
  FORMAT: 'FORMAT',
  USAGE: 'USAGE',
  CONFIG: 'CONFIG',
  NOT_READY: 'NOT_READY',
  /** A restore drill ran and failed a check (the report names it). */
  DRILL_FAILED: 'DRILL_FAILED',
  ASSERTION: 'ASSERTION',
} as const

/** A storage operation failed (I/O error, S3 error, disk full). `retryable` says whether a retry may help. */
export class StorageError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(Codes.STORAGE, message, o)
  }
}

/**
 * The storage refused an operation for lack of permission: fs EACCES, EPERM or EROFS, S3 403 AccessDenied. With
 * read-only access (a DR credential, a directory the user may only read) every write gets it; readers that would
 * only write a lock (restore, verify) go on without one.
 */
export class AccessDeniedError extends StorageError {}

/** A key or object does not exist. */
export class NotFoundError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(Codes.NOT_FOUND, message, o)
  }
}

/** A write with `ifAbsent` found the key already present. */
export class AlreadyExistsError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(Codes.ALREADY_EXISTS, message, o)
  }
}

/** Bytes read back do not match their content address or checksum (restic's ErrInvalidData). */
export class IntegrityError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(Codes.INTEGRITY, message, o)
  }
}

/** The repository is not a pgkeep repository, or of a format version this build cannot read. */
export class RepoFormatError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(Codes.REPO_FORMAT, message, o)
  }
}

/** The passphrase is missing or does not open the repository key. */
export class PassphraseError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(Codes.PASSPHRASE, message, o)
  }
}

/** A conflicting lock is held by a live owner. */
export class LockedError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(Codes.LOCKED, message, { retryable: true, ...o })
  }
}

/** Bytes of a PostgreSQL format (page, pg_control, manifest, WAL header, backup_label) are malformed. */
export class FormatError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(Codes.FORMAT, message, o)
  }
}

/** The command line is wrong. */
export class UsageError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(Codes.USAGE, message, o)
  }
}

/** A configuration value (environment, file, option) is wrong. */
export class ConfigError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(Codes.CONFIG, message, o)
  }
}

/** A broken internal expectation: a bug in pgkeep. */
export class AssertionError extends BaseError {
  constructor(message: string, o: ErrorOptions = {}) {
    super(Codes.ASSERTION, message, o)
  }
}
