// A physical replication connection: transport (TCP or Unix socket, optional TLS), startup and authentication,
// and the pull-based message pump every command reads from. The socket is read ahead of the commands by a bounded
// amount only (socket-input.ts; for TLS, Node's stream buffer), so a slow consumer pauses the socket
// (backpressure) and memory stays bounded.
// Longer than 400 lines on purpose: the state of one socket (TLS upgrade, authentication exchange, the framer, who
// waits for the next message) is shared by every step; split, each part would reach into the others' fields.

import { connect as netConnect, type Socket } from 'node:net'
import { readFileSync, existsSync } from 'node:fs'
import { connect as tlsConnect, type TLSSocket, type ConnectionOptions as TlsOptions } from 'node:tls'
import { isIP } from 'node:net'
import { join } from 'node:path'
import { AbortedError, AuthError, ConnectionConfigError, ConnectionError, ProtocolError, ServerError, type ServerMessageFields } from '../errors.js'
import { type BackendMessage, decodeBackend, type FieldDescription } from '../messages/backend.js'
import { type Frame, FrameReader } from '../wire/frame-reader.js'
import { type ByteSource, SocketInput, streamSource } from '../wire/socket-input.js'
import { frontend, md5PasswordResponse } from '../wire/frontend.js'
import { type ConnectOptions, describeHost, type HostPort, lookupPgpass } from './conninfo.js'
import { type ResultLimits, SMALL_RESULT } from './result-limits.js'
import { ScramClient } from './scram.js'

/** ParameterStatus names kept at most: a server reports about 15; more is a server flooding us. */
const MAX_PARAMETERS = 256

/** One result set of a simple query, values as raw bytes (text format). */
export interface ResultSet {
  readonly fields: readonly FieldDescription[]
  readonly rows: (Buffer | null)[][]
  /** CommandComplete tag ('SELECT' on PG13 for every replication command). */
  tag?: string
}

export interface OpenOptions {
  signal?: AbortSignal
  /** Receives every NoticeResponse that no running command captures. */
  onNotice?: (notice: ServerMessageFields) => void
}

export class ReplicationConnection {
  /** ParameterStatus values reported by the server (server_version, …). */
  readonly parameters = new Map<string, string>()
  backendPid = 0
  private readonly framer = new FrameReader()
  /** What the server sent: the plain socket's SocketInput, or the TLS socket's own chunks. */
  private readonly input: ByteSource
  /** The plain socket's SocketInput (undefined with TLS), for releaseReceived. */
  private readonly slabs: SocketInput | undefined
  private noticeSink: (n: ServerMessageFields) => void
  private busyWith: string | undefined
  private closed = false
  private failure: Error | undefined
  /** The bound on the response being read (see limitResponse), and what it has used so far. */
  private limit: { command: string; limits: ResultLimits; startBytes: number; rows: number } | undefined

  private constructor(
    private readonly socket: Socket | TLSSocket,
    input: SocketInput,
    readonly hostPort: HostPort,
    readonly user: string,
    readonly tls: boolean,
    onNotice?: (n: ServerMessageFields) => void,
  ) {
    this.input = tls ? streamSource(socket) : input
    this.slabs = tls ? undefined : input
    this.noticeSink = onNotice ?? (() => {})
    socket.setNoDelay(true)
    socket.on('error', (err) => {
      this.failure ??= err
    })
  }

  /** Opens a connection to the first host of `opts.hosts` that accepts it; throws the last failure otherwise. */
  static async open(opts: ConnectOptions, o: OpenOptions = {}): Promise<ReplicationConnection> {
    let last: unknown
    for (const hp of opts.hosts) {
      try {
        return await ReplicationConnection.openOne(opts, hp, o)
      } catch (err) {
        last = err
        if (o.signal?.aborted) throw err
        // Authentication failures are final; only transport failures move on to the next host (as libpq).
        if (!(err instanceof ConnectionError)) throw err
      }
    }
    throw last
  }

  private static async openOne(opts: ConnectOptions, hp: HostPort, o: OpenOptions): Promise<ReplicationConnection> {
    const plainFirst = opts.sslmode === 'disable' || opts.sslmode === 'allow'
    try {
      return await ReplicationConnection.attempt(opts, hp, o, !plainFirst)
    } catch (err) {
      // sslmode=allow: retry with TLS when the server refused the unencrypted connection.
      if (opts.sslmode === 'allow' && err instanceof AuthError && err.sqlState === '28000') {
        return ReplicationConnection.attempt(opts, hp, o, true)
      }
      throw err
    }
  }

  private static async attempt(opts: ConnectOptions, hp: HostPort, o: OpenOptions, wantTls: boolean): Promise<ReplicationConnection> {
    o.signal?.throwIfAborted()
    const input = new SocketInput()
    let socket: Socket | TLSSocket = await openSocket(hp, opts.connectTimeoutMs, input, o.signal)
    let tls = false
    try {
      if (wantTls && !hp.host.startsWith('/')) {
        socket.write(frontend.sslRequest())
        const answer = await readOneByte(input, hp)
        if (answer === 0x53 /* 'S' */) {
          input.pause()
          socket = await startTls(socket, hp, opts)
          tls = true
        } else if (answer === 0x4e /* 'N' */) {
          if (opts.sslmode === 'require' || opts.sslmode === 'verify-ca' || opts.sslmode === 'verify-full') {
            throw new ConnectionError(`server at ${describeHost(hp)} does not support SSL, but SSL was required`, {
              retryable: false,
              hint: 'enable ssl on the server, or connect with sslmode=prefer',
            })
          }
        } else {
          throw new ProtocolError(`unexpected answer 0x${answer.toString(16)} to SSLRequest`)
        }
      }
      const conn = new ReplicationConnection(socket, input, hp, opts.user, tls, o.onNotice)
      const onAbort = () => conn.destroy(o.signal?.reason)
      o.signal?.addEventListener('abort', onAbort, { once: true })
      try {
        await conn.startup(opts)
      } finally {
        o.signal?.removeEventListener('abort', onAbort)
      }
      return conn
    } catch (err) {
      socket.destroy()
      throw err
    }
  }

  /** server_version_num, e.g. 150018. */
  get serverVersionNum(): number {
    const v = this.parameters.get('server_version') ?? ''
    const m = /^(\d+)(?:\.(\d+))?/.exec(v)
    if (!m) throw new ProtocolError(`cannot parse server_version '${v}'`)
    const major = Number(m[1])
    return major >= 10 ? major * 10000 + Number(m[2] ?? 0) : major * 10000 + Number(m[2] ?? 0) * 100
  }

  get serverMajor(): number {
    return Math.floor(this.serverVersionNum / 10000)
  }

  private async startup(opts: ConnectOptions): Promise<void> {
    const params: Record<string, string> = {
      user: opts.user,
      replication: 'true',
      application_name: opts.applicationName,
    }
    if (opts.options) params.options = opts.options
    this.send(frontend.startup(params))
    let scram: ScramClient | undefined
    let scramVerified = false
    for (;;) {
      const msg = await this.readRaw()
      switch (msg.type) {
        case 'AuthenticationOk':
          // A server that skips SASLFinal has not proved that it knows the password (RFC 5802 §3).
          if (scram && !scramVerified) throw new AuthError('server ended SCRAM authentication without proving its identity (no SASLFinal)')
          break
        case 'AuthenticationCleartextPassword':
          this.send(frontend.password(await this.password(opts)))
          break
        case 'AuthenticationMD5Password':
          this.send(frontend.password(md5PasswordResponse(opts.user, await this.password(opts), msg.salt)))
          break
        case 'AuthenticationSASL': {
          const password = await this.password(opts)
          try {
            scram = new ScramClient(msg.mechanisms, this.tls ? (this.socket as TLSSocket) : undefined)
          } catch (err) {
            throw new AuthError(`server requested unsupported SASL mechanisms: ${msg.mechanisms.join(', ')}`, undefined, { cause: err })
          }
          this.send(frontend.saslInitialResponse(scram.mechanism, scram.initialResponse))
          // Continue is handled below; keep the password for it.
          const next = await this.readRaw()
          if (next.type === 'ErrorResponse') throw connectError(next.fields, this)
          if (next.type !== 'AuthenticationSASLContinue') throw new ProtocolError(`expected SASLContinue, got ${next.type}`)
          try {
            this.send(frontend.saslResponse(await scram.respond(password, next.data)))
          } catch (err) {
            throw new AuthError(`SCRAM authentication failed: ${(err as Error).message}`, undefined, { cause: err })
          }
          break
        }
        case 'AuthenticationSASLFinal':
          try {
            if (!scram) throw new ProtocolError('SASLFinal without a SASL exchange')
            scram.verify(msg.data)
            scramVerified = true
          } catch (err) {
            throw new AuthError('server failed SCRAM mutual authentication: its signature is wrong', undefined, { cause: err })
          }
          break
        case 'AuthenticationUnsupported':
          throw new AuthError(`authentication method ${msg.method} is not supported`, undefined, {
            hint: 'pgkeep supports trust, password, md5 and scram-sha-256; change the pg_hba.conf line for replication',
          })
        case 'ParameterStatus':
          this.setParameter(msg.name, msg.value)
          break
        case 'BackendKeyData':
          this.backendPid = msg.processId
          break
        case 'NoticeResponse':
          this.noticeSink(msg.fields)
          break
        case 'NegotiateProtocolVersion':
          // We ask for 3.0 with no _pq_ options, so a server has no reason to send this; accept and carry on.
          break
        case 'ErrorResponse':
          throw connectError(msg.fields, this)
        case 'ReadyForQuery':
          return
        default:
          throw new ProtocolError(`unexpected ${msg.type} during startup`)
      }
    }
  }

  private async password(opts: ConnectOptions): Promise<string> {
    if (opts.password !== undefined) return opts.password
    if (opts.passfile) {
      const found = await lookupPgpass(opts.passfile, this.hostPort, opts.user)
      if (found !== undefined) return found
    }
    throw new AuthError(`password required for user "${opts.user}" but none was given`, '28P01', {
      hint: 'set PGPASSWORD, add a line to ~/.pgpass (database field "replication"), or put the password in the connection string',
    })
  }

  /** Writes bytes to the server. */
  send(buf: Buffer): void {
    if (this.closed) throw new ConnectionError('connection is closed')
    this.socket.write(buf)
  }

  /** Resolves when the socket's write buffer has room again (use after large sends). */
  async drained(): Promise<void> {
    if (!this.socket.writableNeedDrain) return
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        this.socket.off('close', onClose)
        resolve()
      }
      const onClose = () => {
        this.socket.off('drain', done)
        reject(this.lostError())
      }
      this.socket.once('drain', done)
      this.socket.once('close', onClose)
    })
  }

  /**
   * The next complete frame from the framer, counted against the response bound. Any ProtocolError here (a
   * declared length over its cap, a response over its bound) drops the connection at once: the byte stream cannot
   * be trusted or resynchronised after it.
   */
  private nextFrame(): Frame | undefined {
    try {
      const frame = this.framer.next()
      if (frame && this.limit) this.countAgainstLimit(frame)
      return frame
    } catch (err) {
      this.destroy(err)
      throw err
    }
  }

  private countAgainstLimit(frame: Frame): void {
    const l = this.limit!
    if (frame.type === 0x44 /* DataRow */ && ++l.rows > l.limits.rows) {
      throw new ProtocolError(`the server answered ${l.command} with more than ${l.limits.rows} rows`, { hint: RESULT_HINT })
    }
    const bytes = this.framer.framedBytes - l.startBytes
    if (bytes > l.limits.bytes) {
      throw new ProtocolError(`the server answered ${l.command} with more than ${l.limits.bytes} bytes`, { hint: RESULT_HINT })
    }
  }

  /**
   * Bounds the response to `command` from the next message on: more DataRows or bytes than `limits` allow is a
   * ProtocolError and drops the connection. Returns the function that lifts the bound (call it in `finally`).
   */
  limitResponse(command: string, limits: ResultLimits): () => void {
    const l = { command, limits, startBytes: this.framer.framedBytes, rows: 0 }
    this.limit = l
    return () => {
      if (this.limit === l) this.limit = undefined
    }
  }

  private setParameter(name: string, value: string): void {
    if (!this.parameters.has(name) && this.parameters.size >= MAX_PARAMETERS) {
      const err = new ProtocolError(`the server reported more than ${MAX_PARAMETERS} parameters`, { hint: RESULT_HINT })
      this.destroy(err)
      throw err
    }
    this.parameters.set(name, value)
  }

  /**
   * Declares the messages read so far, and every view of their bytes, no longer used: the memory they lie in may be
   * read into again (socket-input.ts). Only a command whose caller promised to copy what it keeps calls this.
   */
  releaseReceived(): void {
    this.slabs?.release(this.framer.pendingBytes)
    this.framer.release()
  }

  /** Next message from the server, as it came (notices included). */
  async readRaw(): Promise<BackendMessage> {
    for (;;) {
      const frame = this.nextFrame()
      if (frame) return decodeBackend(frame)
      let chunk: Buffer | undefined
      try {
        chunk = await this.input.next()
      } catch (err) {
        throw this.lostError(err)
      }
      if (chunk === undefined) throw this.lostError()
      this.framer.push(chunk)
    }
  }

  /**
   * Next message a command cares about: ParameterStatus updates are applied and NoticeResponses go to the current
   * notice sink, so no caller has to handle them and none is lost.
   */
  async read(): Promise<BackendMessage> {
    for (;;) {
      const msg = this.readBuffered() ?? (await this.readRaw())
      if (msg.type === 'NoticeResponse') this.noticeSink(msg.fields)
      else if (msg.type === 'ParameterStatus') this.setParameter(msg.name, msg.value)
      else return msg
    }
  }

  /**
   * The next message if it is already complete in the buffer, without waiting (and without the cost of a promise:
   * a base backup is tens of thousands of CopyData messages). Notices and ParameterStatus are handled as in read().
   */
  readBuffered(): BackendMessage | undefined {
    for (;;) {
      const frame = this.nextFrame()
      if (!frame) return undefined
      const msg = decodeBackend(frame)
      if (msg.type === 'NoticeResponse') this.noticeSink(msg.fields)
      else if (msg.type === 'ParameterStatus') this.setParameter(msg.name, msg.value)
      else return msg
    }
  }

  /** Routes notices to `sink` until the returned function is called. */
  captureNotices(sink: (n: ServerMessageFields) => void): () => void {
    const previous = this.noticeSink
    this.noticeSink = sink
    return () => {
      this.noticeSink = previous
    }
  }

  /** Marks the connection busy with one command; a second concurrent command is a programming error. */
  begin(command: string): () => void {
    if (this.closed) throw new ConnectionError('connection is closed', { retryable: false })
    if (this.busyWith) {
      throw new ProtocolError(`connection is busy with ${this.busyWith}; cannot start ${command}`)
    }
    this.busyWith = command
    return () => {
      this.busyWith = undefined
    }
  }

  /**
   * Runs a replication command that returns only result sets (no COPY) and waits for ReadyForQuery. The response is
   * bounded by `limits` (default SMALL_RESULT).
   */
  async simpleQuery(text: string, o: { signal?: AbortSignal; limits?: ResultLimits } = {}): Promise<ResultSet[]> {
    const command = text.split(/\s/)[0]
    const end = this.begin(command)
    const onAbort = () => this.destroy(o.signal?.reason)
    o.signal?.throwIfAborted()
    o.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      this.send(frontend.query(text))
      return await this.collectResults(undefined, o.limits ?? SMALL_RESULT, command)
    } finally {
      o.signal?.removeEventListener('abort', onAbort)
      end()
    }
  }

  /**
   * Reads result sets until ReadyForQuery; throws ServerError if an ErrorResponse came. The response (from the
   * message after `first`) is bounded by `limits`.
   */
  async collectResults(first?: BackendMessage, limits: ResultLimits = SMALL_RESULT, command = this.busyWith ?? 'a command'): Promise<ResultSet[]> {
    const lift = this.limitResponse(command, limits)
    try {
      return await this.readResults(first)
    } finally {
      lift()
    }
  }

  private async readResults(first?: BackendMessage): Promise<ResultSet[]> {
    const sets: ResultSet[] = []
    let error: ServerMessageFields | undefined
    for (let msg = first ?? (await this.read()); ; msg = await this.read()) {
      switch (msg.type) {
        case 'RowDescription':
          sets.push({ fields: msg.fields, rows: [] })
          break
        case 'DataRow':
          if (sets.length === 0) throw new ProtocolError('DataRow without RowDescription')
          sets[sets.length - 1].rows.push(msg.values)
          break
        case 'CommandComplete':
          if (sets.length > 0 && sets[sets.length - 1].tag === undefined) sets[sets.length - 1].tag = msg.tag
          break
        case 'EmptyQueryResponse':
          break
        case 'ErrorResponse':
          error = msg.fields
          break
        case 'ReadyForQuery':
          if (error) throw new ServerError(error)
          return sets
        default:
          throw new ProtocolError(`unexpected ${msg.type} in the response to a replication command`)
      }
    }
  }

  /** Drains the rest of a failed command up to ReadyForQuery (a bounded amount), then throws the server's error. */
  async failWith(fields: ServerMessageFields): Promise<never> {
    const lift = this.limitResponse(`${this.busyWith ?? 'a command'} after its error`, SMALL_RESULT)
    try {
      for (let msg = await this.read(); msg.type !== 'ReadyForQuery'; msg = await this.read()) {
        /* skip */
      }
    } finally {
      lift()
    }
    throw new ServerError(fields)
  }

  /** Sends Terminate and closes the socket. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (!this.socket.destroyed) {
      await new Promise<void>((resolve) => {
        this.socket.once('close', () => resolve())
        this.socket.end(frontend.terminate())
        setTimeout(() => this.socket.destroy(), 2000).unref()
      })
    }
  }

  /** Drops the connection at once; pending reads reject with `reason`. */
  destroy(reason?: unknown): void {
    this.closed = true
    if (reason !== undefined) this.failure ??= reason instanceof Error ? reason : new AbortedError(String(reason))
    this.socket.destroy()
  }

  /** Bytes read from the socket so far (after TLS decryption); with the bytes consumed, shows what is buffered. */
  get bytesReceived(): number {
    return this.socket.bytesRead
  }

  get isClosed(): boolean {
    return this.closed || this.socket.destroyed
  }

  private lostError(cause?: unknown): Error {
    if (this.failure && (this.failure instanceof AbortedError || (this.failure as Error).name === 'AbortError')) return this.failure
    const c = cause ?? this.failure
    if (c instanceof AbortedError) return c
    return new ConnectionError(`server at ${describeHost(this.hostPort)} closed the connection unexpectedly`, {
      cause: c,
      hint: 'the server may have been restarted or the network interrupted; check the server log, then run again',
    })
  }
}

const RESULT_HINT = 'PostgreSQL never answers a replication command like this: check that the connection leads to a genuine PostgreSQL server'

/** Connects; what the socket receives goes to `input` (see socket-input.ts). */
function openSocket(hp: HostPort, timeoutMs: number | undefined, input: SocketInput, signal?: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const onread = input.onread
    const socket = hp.host.startsWith('/')
      ? netConnect({ path: join(hp.host, `.s.PGSQL.${hp.port}`), onread })
      : netConnect({ host: hp.host, port: hp.port, onread })
    input.attach(socket)
    let timer: NodeJS.Timeout | undefined
    const cleanup = () => {
      socket.off('connect', onConnect)
      socket.off('error', onError)
      signal?.removeEventListener('abort', onAbort)
      if (timer) clearTimeout(timer)
    }
    const onConnect = () => {
      cleanup()
      resolve(socket)
    }
    const onError = (err: NodeJS.ErrnoException) => {
      cleanup()
      socket.destroy()
      reject(
        new ConnectionError(`could not connect to server at ${describeHost(hp)}: ${err.message}`, {
          cause: err,
          hint:
            err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
              ? 'is the server running there and accepting connections? check host, port and listen_addresses'
              : 'check the host name, port and network',
        }),
      )
    }
    const onAbort = () => {
      cleanup()
      socket.destroy()
      reject(signal?.reason)
    }
    socket.once('connect', onConnect)
    socket.once('error', onError)
    signal?.addEventListener('abort', onAbort, { once: true })
    if (timeoutMs) {
      timer = setTimeout(() => onError(Object.assign(new Error(`timeout after ${timeoutMs} ms`), { code: 'ETIMEDOUT' })), timeoutMs)
    }
  })
}

/** Reads exactly the one-byte answer to SSLRequest, and refuses anything sent after it (CVE-2021-23222). */
async function readOneByte(input: SocketInput, hp: HostPort): Promise<number> {
  let answer: Buffer | undefined
  try {
    answer = await input.next()
  } catch (err) {
    throw new ConnectionError(`SSL negotiation with ${describeHost(hp)} failed: ${(err as Error).message}`, { cause: err })
  }
  if (answer === undefined) throw new ConnectionError(`server at ${describeHost(hp)} closed the connection during SSL negotiation`)
  if (answer.length !== 1 || input.pendingBytes > 0) throw new ProtocolError('received unencrypted data after SSL request')
  return answer[0]!
}

function startTls(socket: Socket, hp: HostPort, opts: ConnectOptions): Promise<TLSSocket> {
  const o: TlsOptions = { socket }
  const rootCert = opts.sslrootcert
  const verify = opts.sslmode === 'verify-ca' || opts.sslmode === 'verify-full'
  // libpq: with a root certificate file present, sslmode=require verifies the chain like verify-ca.
  const haveRoot = rootCert !== undefined && rootCert !== 'system' && existsSync(rootCert)
  if (verify && rootCert !== 'system' && !haveRoot) {
    return Promise.reject(
      new ConnectionConfigError(`root certificate file "${rootCert ?? '~/.postgresql/root.crt'}" does not exist`, {
        hint: 'either provide the file (sslrootcert=…), use sslrootcert=system, or change sslmode to disable server certificate verification',
      }),
    )
  }
  if (haveRoot) o.ca = readFileSync(rootCert!)
  o.rejectUnauthorized = verify || haveRoot
  if (opts.sslmode !== 'verify-full') o.checkServerIdentity = () => undefined
  if (!isIP(hp.host)) o.servername = hp.host
  if (opts.sslcert && opts.sslkey && existsSync(opts.sslcert) && existsSync(opts.sslkey)) {
    o.cert = readFileSync(opts.sslcert)
    o.key = readFileSync(opts.sslkey)
  }
  return new Promise((resolve, reject) => {
    const t = tlsConnect(o)
    const onError = (err: Error) => {
      t.destroy()
      reject(
        new ConnectionError(`SSL connection to ${describeHost(hp)} failed: ${err.message}`, {
          cause: err,
          retryable: false,
          hint: verify ? 'check sslrootcert and that the server certificate matches the host name' : undefined,
        }),
      )
    }
    t.once('secureConnect', () => {
      t.off('error', onError)
      resolve(t)
    })
    t.once('error', onError)
  })
}

/** Turns an ErrorResponse received while connecting into the error a user can act on. */
function connectError(f: ServerMessageFields, c: ReplicationConnection): Error {
  const who = `user "${c.user}"`
  switch (f.sqlState) {
    case '28P01':
      return new AuthError(`password authentication failed for ${who}`, f.sqlState, {
        hint: 'check the password (PGPASSWORD, ~/.pgpass or the connection string)',
      })
    case '28000':
      return new AuthError(f.message, f.sqlState, {
        hint: `add a line such as 'host replication ${c.user} <client address>/32 scram-sha-256' to pg_hba.conf on the server and reload it`,
      })
    case '42501':
      return new AuthError(f.message, f.sqlState, {
        hint: `grant the role replication rights: ALTER ROLE ${c.user} REPLICATION (or connect as a role that has them)`,
      })
    case '53300':
      return new ServerError(f, {
        hint: 'all WAL senders are in use: raise max_wal_senders on the server (restart needed) or stop other replication clients; a backup needs two',
      })
    case '57P03':
      return new ConnectionError(f.message, { hint: 'the server is starting up or shutting down; try again in a moment' })
    default:
      return new ServerError(f)
  }
}
