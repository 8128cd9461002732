// Which PostgreSQL server an operation talks to, in one shape for every operation that connects (check, backup,
// WAL streaming): a libpq connection string, values that win over it, and the environment its PG* variables come
// from. Resolved as libpq does (protocol/session/conninfo.ts).

/** Values that win over the connection string, as libpq's command-line options do (-h, -p, -U). */
export type ConnectionOverrides = Partial<Record<'host' | 'port' | 'user' | 'password' | 'application_name' | 'sslmode', string>>

export interface ServerTarget {
  /** A URI (`postgres://repl@db1:5432/`) or `key=value` string; empty or missing: PG* variables and defaults. */
  conninfo?: string
  overrides?: ConnectionOverrides
  /** Where PG* variables, HOME (for .pgpass) and USER come from; default: none (a library never reads process.env). */
  env?: Readonly<Record<string, string | undefined>>
}
