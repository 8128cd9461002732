// `pgkeep config show`: the settings in effect for a command run here (with the same options and environment),
// and where each came from: an option, an environment variable, the config file, or the default. Secrets are never
// printed: passwords in connection strings are masked, and the passphrase's source is named, never its value.

import type { CliContext, Command } from '../command.js'
import { cliConfig, type LoadedConfig } from '../config-file.js'
import { CONNECTION_USAGE, connectionOptions, serverFrom } from '../connection-args.js'
import { parseCommandArgs } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { REPO_USAGE, repoOptions, resolveRepo } from '../repo-args.js'

export const configShowCommand: Command = {
  usage: `usage: pgkeep [--config FILE] config show [--cluster NAME] [--json] [repository and connection options]

Prints the configuration file read (or the places looked at), the repository, where the passphrase comes from,
the server a server command would connect to, the clusters of the config file, and its [check], [retention] and
[drill] settings, each with its source. Passwords in connection strings are shown as ***, and the passphrase
never. Options given here are applied as any command applies them, so the output shows what that command uses.

Which file: --config FILE, else PGKEEP_CONFIG, else the first that exists of $XDG_CONFIG_HOME/pgkeep/config.toml
(default ~/.config/pgkeep/config.toml) and /etc/pgkeep/config.toml; --no-config reads none. Options override
environment variables, which override the file (docs/operations.md).

  --cluster NAME          the config file's cluster whose server to show
  --json                  print one JSON object

${REPO_USAGE}

${CONNECTION_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('config show', {
      args,
      options: { ...repoOptions, ...connectionOptions, cluster: { type: 'string' }, json: { type: 'boolean' } },
    })
    const config = await cliConfig(ctx)
    const settings = await effectiveSettings(values, ctx, config)
    ctx.stdout.write(values.json ? JSON.stringify(settings, null, 2) + '\n' : formatSettings(settings))
    return 0
  },
}

interface Setting {
  value: string
  source: string
}

async function effectiveSettings(values: Record<string, string | boolean | undefined>, ctx: CliContext, config: LoadedConfig) {
  const file = config.file
  const fileSource = file ? `config file '${file.path}'` : ''
  const repository: Setting | null = await resolveRepo(values, ctx, 'config show').then(
    (r) => ({ value: r.url, source: r.source }),
    () => null,
  )
  let passphrase: { source: string; file: string | null } | null = null
  if (typeof values['passphrase-file'] === 'string') passphrase = { source: '--passphrase-file', file: values['passphrase-file'] }
  else if (ctx.env.PGKEEP_PASSPHRASE_FILE) passphrase = { source: 'PGKEEP_PASSPHRASE_FILE', file: ctx.env.PGKEEP_PASSPHRASE_FILE }
  else if (ctx.env.PGKEEP_PASSPHRASE) passphrase = { source: 'PGKEEP_PASSPHRASE (value not shown)', file: null }
  else if (file?.passphraseFile) passphrase = { source: fileSource, file: file.passphraseFile }
  let server: Setting | { value: null; source: string }
  try {
    const choice = await serverFrom(values, ctx, 'config show')
    const conninfo = choice.server.conninfo
    const source =
      typeof values.dbname === 'string'
        ? '-d'
        : choice.configCluster
          ? `cluster '${choice.configCluster.name}' of ${fileSource}`
          : 'PG* environment variables and libpq defaults'
    server = { value: conninfo ? maskConninfo(conninfo) : '', source }
    const over = Object.entries(choice.server.overrides ?? {}).filter(([, v]) => v !== undefined)
    if (over.length > 0) server.source += `, with ${over.map(([k, v]) => `${k}=${v}`).join(' ')} from -h/-p/-U`
  } catch (err) {
    server = { value: null, source: (err as Error).message }
  }
  return {
    configFile: file ? { path: file.path, source: config.source } : null,
    configSource: config.source,
    searched: config.searched,
    repository,
    passphrase,
    server,
    clusters: Object.fromEntries(
      Object.entries(file?.clusters ?? {}).map(([name, c]) => [name, { conninfo: c.conninfo ? maskConninfo(c.conninfo) : null, slot: c.slot ?? null }]),
    ),
    check: {
      ...(file?.check.maxBackupAge ? { max_backup_age: file.check.maxBackupAge } : {}),
      ...(file?.check.maxWalAge ? { max_wal_age: file.check.maxWalAge } : {}),
      ...(file?.check.maxDrillAge ? { max_drill_age: file.check.maxDrillAge } : {}),
    },
    retention: file?.retention ?? null,
    drill: file?.drill ?? null,
  }
}

/**
 * A connection string with its passwords replaced by `***`: the password of a URI's user info, a `password=`
 * query parameter, and `password` / `sslpassword` keywords of a key=value string.
 */
export function maskConninfo(conninfo: string): string {
  if (/^postgres(?:ql)?:\/\//i.test(conninfo)) {
    return conninfo.replace(/^(postgres(?:ql)?:\/\/[^:@/?#]*:)[^@/?#]*@/i, '$1***@').replace(/([?&](?:ssl)?password=)[^&#]*/gi, '$1***')
  }
  return conninfo.replace(/(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)/gi, '$1***')
}

function formatSettings(s: Awaited<ReturnType<typeof effectiveSettings>>): string {
  const rows: [string, string][] = []
  rows.push([
    'config file',
    s.configFile
      ? `${s.configFile.path} (${s.configFile.source})`
      : s.configSource === '--no-config'
        ? 'none (--no-config)'
        : `none (looked at ${s.searched.join(', ')})`,
  ])
  rows.push([
    'repository',
    s.repository ? `${s.repository.value}  (from ${s.repository.source})` : 'not set (--repo, PGKEEP_REPO or repository in the config file)',
  ])
  rows.push([
    'passphrase',
    s.passphrase
      ? s.passphrase.file
        ? `file '${s.passphrase.file}'  (from ${s.passphrase.source})`
        : `from ${s.passphrase.source}`
      : 'none (unencrypted repositories only)',
  ])
  rows.push([
    'server',
    s.server.value === null ? `not determined: ${s.server.source}` : s.server.value ? `${s.server.value}  (from ${s.server.source})` : `${s.server.source}`,
  ])
  for (const [name, c] of Object.entries(s.clusters)) rows.push([`cluster ${name}`, `${c.conninfo ?? '(no conninfo)'}${c.slot ? `  slot ${c.slot}` : ''}`])
  const check = Object.entries(s.check)
  if (check.length > 0) rows.push(['check', check.map(([k, v]) => `${k} ${v}`).join(', ')])
  if (s.retention) rows.push(['retention', JSON.stringify(s.retention)])
  if (s.drill) rows.push(['drill', JSON.stringify(s.drill)])
  const width = Math.max(...rows.map(([k]) => k.length))
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n'
}
