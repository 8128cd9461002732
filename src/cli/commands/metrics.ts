// `pgkeep metrics`: a repository's state as Prometheus metrics (text exposition format), for a scrape through
// node_exporter's textfile collector or a cron job; `wal stream --metrics-listen` serves the same continuously.

import { rename, unlink, writeFile } from 'node:fs/promises'
import { ConfigError } from '../../errors.js'
import { formatMetrics } from '../../metrics/prometheus.js'
import { readRepositoryStatus } from '../../repo/index.js'
import type { Command } from '../command.js'
import { parseCommandArgs } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'

export const metricsCommand: Command = {
  usage: `usage: pgkeep metrics --repo URL [--output FILE] [--json]

Prints Prometheus metrics (text exposition format) of the repository: per cluster (labels cluster = system
identifier, cluster_name) the newest backup's end time, age, duration, size and stored bytes, the newest stored
WAL and the archive lag it implies, the recoverable window, the last good restore drill and its RTO; for the
repository its size, deduplication ratio and locks. docs/operations.md lists every metric. Reads only: read-only
access to the repository is enough. 'pgkeep wal stream --metrics-listen ADDR' serves the same on /metrics, with
the streamer's own state.

  --output FILE           write the metrics to FILE atomically (a temporary file renamed over it), e.g. for
                          node_exporter's textfile collector: --output /var/lib/node_exporter/pgkeep.prom
  --json                  print the state the metrics are made of as one JSON object instead

${REPO_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('metrics', { args, options: { ...repoOptions, output: { type: 'string' }, json: { type: 'boolean' } } })
    const { repo, storage } = await openRepoForCommand(values, ctx, 'metrics')
    let text: string
    try {
      const status = await readRepositoryStatus(repo, { signal: ctx.signal })
      text = values.json ? JSON.stringify(status, null, 2) + '\n' : await formatMetrics(status)
    } finally {
      await repo.close().catch(() => {})
      await storage.close().catch(() => {})
    }
    if (values.output === undefined) {
      ctx.stdout.write(text)
      return 0
    }
    // The collector must never read half a file: write beside it, then rename over it.
    const tmp = `${values.output}.${process.pid}.tmp`
    try {
      await writeFile(tmp, text, { mode: 0o644 })
      await rename(tmp, values.output)
    } catch (err) {
      await unlink(tmp).catch(() => {})
      throw new ConfigError(`cannot write --output '${values.output}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
        cause: err,
        hint: 'check that the directory exists and that this user may write in it',
      })
    }
    return 0
  },
}
