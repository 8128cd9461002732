// The libpq-style connection options every server-facing command accepts: -d CONNINFO, -h HOST, -p PORT, -U USER,
// and the server they name: without -d, the connection string of a cluster of the config file (--cluster NAME, or
// the only one there).

import type { ParseArgsConfig } from 'node:util'
import { UsageError } from '../errors.js'
import type { ServerTarget } from '../server-target.js'
import type { CliContext } from './command.js'
import { type ClusterConfig, cliConfig } from './config-file.js'
import { closestWord } from './did-you-mean.js'

export const connectionOptions = {
  dbname: { type: 'string', short: 'd' },
  host: { type: 'string', short: 'h' },
  port: { type: 'string', short: 'p' },
  username: { type: 'string', short: 'U' },
} as const satisfies ParseArgsConfig['options']

export const CONNECTION_USAGE = `connection options (as libpq; PG* environment variables and ~/.pgpass apply):
  -d, --dbname=CONNINFO   connection string: 'postgres://user@host:5432/' or 'host=… user=…'; without it, the
                          conninfo of the config file's cluster (--cluster NAME, or its only cluster)
  -h, --host=HOST         server host or socket directory
  -p, --port=PORT         server port
  -U, --username=USER     role with the REPLICATION attribute`

type ConnectionValues = { dbname?: string; host?: string; port?: string; username?: string; cluster?: string }

export function connectionFrom(values: ConnectionValues) {
  return {
    conninfo: values.dbname,
    overrides: { host: values.host, port: values.port, user: values.username },
  }
}

/** The server a command connects to, and the config file's cluster it came from (if it did). */
export interface ServerChoice {
  readonly server: ServerTarget
  /** The cluster of the config file whose settings apply (its name and table), when one does. */
  readonly configCluster?: { readonly name: string } & ClusterConfig
}

/**
 * The server: -d (and -h -p -U over it) as libpq takes them; without -d, the conninfo of the config file's
 * cluster that --cluster names, or of its only cluster. A config file with several clusters and neither -d nor
 * --cluster is a usage error naming them (`-d ''` asks for libpq's defaults and PG* variables instead).
 */
export async function serverFrom(values: ConnectionValues, ctx: CliContext, command: string): Promise<ServerChoice> {
  const { conninfo, overrides } = connectionFrom(values)
  const file = (await cliConfig(ctx)).file
  const names = Object.keys(file?.clusters ?? {})
  let name: string | undefined
  if (values.cluster !== undefined && names.includes(values.cluster)) name = values.cluster
  else if (values.cluster === undefined && names.length === 1) name = names[0]
  const picked = name === undefined ? undefined : { name, ...file!.clusters[name] }
  if (conninfo !== undefined) return { server: { conninfo, overrides, env: ctx.env }, configCluster: picked }
  if (picked) return { server: { conninfo: picked.conninfo, overrides, env: ctx.env }, configCluster: picked }
  if (values.cluster !== undefined && names.length > 0) {
    const near = closestWord(values.cluster, names)
    throw new UsageError(`the config file '${file!.path}' has no cluster '${values.cluster}'; it has ${names.join(', ')}`, {
      hint: `${near ? `did you mean '${near}'? ` : ''}or give the server with -d CONNINFO`,
    })
  }
  if (names.length > 1 && values.host === undefined) {
    throw new UsageError(`the config file '${file!.path}' names ${names.length} clusters (${names.join(', ')}): which server should pgkeep ${command} use?`, {
      hint: `give --cluster NAME, or -d CONNINFO (-d '' for PG* variables and libpq's defaults)`,
    })
  }
  return { server: { conninfo, overrides, env: ctx.env } }
}
