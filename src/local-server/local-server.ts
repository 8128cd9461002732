// A PostgreSQL server this process starts on a data directory it owns (a drill's restored copy, the demo's
// cluster): `postgres -D DIR -c …` as a child process, as the server's user when this process is root, with its
// log in a file; connections over its Unix socket only; stopped with a fast shutdown (then immediate, then
// SIGKILL) by `stop()`. It never touches a server it did not start.

import { type ChildProcess, spawn } from 'node:child_process'
import { closeSync, openSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import pg from 'pg'
import type { OsUser } from './os-user.js'
import type { PgBinaries } from './pg-binaries.js'

export interface StartLocalServerOptions {
  binaries: PgBinaries
  pgdata: string
  /** The directory of its Unix socket: the server user's own, mode 0700, so nobody else can connect. */
  socketDir: string
  port: number
  /** stdout and stderr of the server (logging_collector is turned off). */
  logFile: string
  /** Run as this user (this process must be root); undefined: as this process's user. */
  user?: OsUser
  /** The server's whole environment (restore_command runs in it). */
  env: Readonly<Record<string, string>>
  /** `-c name=value` settings, which win over the configuration files. */
  settings?: Readonly<Record<string, string | number | boolean>>
}

/** How a server process ended. */
export interface ServerExit {
  readonly code: number | null
  readonly signal: string | null
}

/** A connection attempt's outcome: connected, not yet (starting up, no socket yet), or refused for good. */
export type ConnectOutcome = { ok: true; client: pg.Client } | { ok: false; retry: boolean; code: string | undefined; message: string }

const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_.]*$/

export class LocalServer {
  readonly #child: ChildProcess
  readonly #exited: Promise<ServerExit>
  #exit: ServerExit | undefined

  private constructor(
    child: ChildProcess,
    readonly port: number,
    readonly socketDir: string,
    readonly logFile: string,
    readonly binaries: PgBinaries,
    readonly pgdata: string,
  ) {
    this.#child = child
    this.#exited = new Promise((resolve) => {
      const done = (exit: ServerExit) => {
        this.#exit ??= exit
        resolve(this.#exit)
      }
      child.once('exit', (code, signal) => done({ code, signal }))
      child.once('error', () => done({ code: null, signal: null }))
    })
  }

  /** Spawns the postmaster; it is starting once this resolves (see `connect`). */
  static start(o: StartLocalServerOptions): LocalServer {
    const args = ['-D', o.pgdata]
    for (const [name, value] of Object.entries({ port: o.port, unix_socket_directories: o.socketDir, logging_collector: false, ...o.settings })) {
      if (!SETTING_NAME.test(name)) throw new Error(`invalid setting name '${name}'`)
      args.push('-c', `${name}=${value === true ? 'on' : value === false ? 'off' : String(value)}`)
    }
    const log = openSync(o.logFile, 'a', 0o600)
    try {
      const child = spawn(o.binaries.postgres, args, {
        cwd: o.pgdata,
        env: { ...o.env },
        stdio: ['ignore', log, log],
        ...(o.user ? { uid: o.user.uid, gid: o.user.gid } : {}),
      })
      return new LocalServer(child, o.port, o.socketDir, o.logFile, o.binaries, o.pgdata)
    } finally {
      closeSync(log)
    }
  }

  get pid(): number | undefined {
    return this.#child.pid
  }

  /** Resolves when the postmaster has exited. */
  get exited(): Promise<ServerExit> {
    return this.#exited
  }

  /** Set once the postmaster has exited. */
  get exit(): ServerExit | undefined {
    return this.#exit
  }

  /** One connection attempt over the socket. */
  async connect(database: string, user: string): Promise<ConnectOutcome> {
    const client = new pg.Client({ host: this.socketDir, port: this.port, user, database, connectionTimeoutMillis: 15_000 })
    // A server stopping under a connection must not become an uncaught exception.
    client.on('error', () => {})
    try {
      await client.connect()
      return { ok: true, client }
    } catch (err) {
      await client.end().catch(() => {})
      const e = err as Error & { code?: string }
      // 57P03: starting up, in recovery before consistency, shutting down. No socket yet: not listening yet.
      const retry = e.code === '57P03' || e.code === 'ECONNREFUSED' || e.code === 'ENOENT'
      return { ok: false, retry, code: e.code, message: e.message }
    }
  }

  /**
   * What the postmaster says of itself in postmaster.pid (line 8, PostgreSQL 10+): 'starting', 'standby' (read-only
   * connections allowed during recovery), 'ready' or 'stopping'; undefined before it wrote the file.
   */
  async status(): Promise<string | undefined> {
    const text = await readFile(join(this.pgdata, 'postmaster.pid'), 'utf8').catch(() => undefined)
    return text?.split('\n')[7]?.trim() || undefined
  }

  /** The last `lines` lines of the server's log. */
  async logTail(lines = 20): Promise<string[]> {
    const text = await readFile(this.logFile, 'utf8').catch(() => '')
    return text
      .split('\n')
      .filter((l) => l.trim() !== '')
      .slice(-lines)
  }

  /**
   * Stops the server: a fast shutdown (SIGINT), after `graceMs` an immediate one (SIGQUIT), then SIGKILL.
   * Resolves once the postmaster has exited.
   */
  async stop(graceMs = 60_000): Promise<ServerExit> {
    if (this.#exit) return this.#exit
    const wait = (ms: number) => Promise.race([this.#exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), ms).unref())])
    this.#child.kill('SIGINT')
    let exit = await wait(graceMs)
    if (!exit) {
      this.#child.kill('SIGQUIT')
      exit = await wait(10_000)
    }
    if (!exit) {
      this.#child.kill('SIGKILL')
      exit = await this.#exited
    }
    return exit
  }
}
