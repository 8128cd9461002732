// The libpq-style connection options every server-facing command accepts: -d CONNINFO, -h HOST, -p PORT, -U USER.

import type { ParseArgsConfig } from 'node:util'

export const connectionOptions = {
  dbname: { type: 'string', short: 'd' },
  host: { type: 'string', short: 'h' },
  port: { type: 'string', short: 'p' },
  username: { type: 'string', short: 'U' },
} as const satisfies ParseArgsConfig['options']

export const CONNECTION_USAGE = `connection options (as libpq; PG* environment variables and ~/.pgpass apply):
  -d, --dbname=CONNINFO   connection string: 'postgres://user@host:5432/' or 'host=… user=…'
  -h, --host=HOST         server host or socket directory
  -p, --port=PORT         server port
  -U, --username=USER     role with the REPLICATION attribute`

export function connectionFrom(values: { dbname?: string; host?: string; port?: string; username?: string }) {
  return {
    conninfo: values.dbname,
    overrides: { host: values.host, port: values.port, user: values.username },
  }
}
