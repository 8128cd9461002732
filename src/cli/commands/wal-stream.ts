// `pgkeep wal stream`: continuous WAL archiving from a physical slot into the repository, until SIGINT/SIGTERM.

import { constants, setPriority } from 'node:os'
import { formatLsn } from '../../../protocol/index.js'
import { UsageError } from '../../errors.js'
import type { PgkeepEvent } from '../../events.js'
import { type MetricsServer, serveMetrics } from '../../metrics/metrics-server.js'
import { WalStreamer, type WalStreamStatus } from '../../wal/wal-streamer.js'
import type { CliContext, Command } from '../command.js'
import { CONNECTION_USAGE, connectionOptions, serverFrom } from '../connection-args.js'
import { parseCommandArgs, parseListenAddress } from '../parse.js'
import { rejectPassphraseArgument } from '../passphrase.js'
import { openRepoForCommand, REPO_USAGE, repoOptions } from '../repo-args.js'

/** `pgkeep wal stream`. */
export const walStreamCommand: Command = {
  usage: `usage: pgkeep wal stream -d CONNINFO --repo URL --slot NAME [--metrics-listen ADDR] [options]

Streams WAL from a physical replication slot and stores each completed segment in the repository, until SIGINT
or SIGTERM; then it stores the segment in progress as a partial segment and exits 0. Run again, it resumes after
the newest WAL the repository holds for the cluster. The flush position reported to the server advances only once
WAL is durable in the repository, so the slot keeps whatever is not yet safe. Timeline switches (promotion) are
followed: the new timeline's history file is stored and streaming continues on it. A lost connection is retried.
The repository must exist ('pgkeep init'); a location that holds none is an error.
It holds a shared repository lock; when it cannot keep it (refreshes failing until it expired and another process
took a conflicting lock, or broke it), it stops at once with exit status 24 and reports nothing more as flushed:
the slot keeps the WAL for the next run.

Send SIGUSR1 to print the current lag and receive rate. With --metrics-listen it serves Prometheus metrics on
http://ADDR/metrics: the repository's (as 'pgkeep metrics' prints them, read at most every 30 s) and its own:
connected, timeline, received and durable positions, archive lag in bytes and seconds, restarts, segments stored.

options:
  --slot NAME             physical replication slot to stream from (required, unless the config file's cluster
                          names one: 'slot' of [clusters.NAME])
  --cluster NAME          the config file's cluster to stream from (its conninfo and slot)
  --metrics-listen ADDR   serve /metrics on ADDR: HOST:PORT (127.0.0.1:9187), [IPV6]:PORT, or :PORT for every
                          interface; port 0 picks a free one (the log says which)
  --create-slot           create the slot (reserving WAL) if it does not exist
  --synchronous           make every received batch durable at once and report it immediately, so the server can
                          list this streamer in synchronous_standby_names (by its application_name, which
                          defaults to the slot name) and a commit returns only once its WAL is in the repository
  --status-interval S     seconds between status updates to the server (default 10)
  --priority low|normal   CPU priority (default: low, i.e. nice 10, unless --synchronous): hashing and compressing
                          WAL takes CPU the server's own backends may need; a low-priority streamer falls behind
                          in a CPU-bound burst (the slot keeps the WAL) instead of slowing the server down
  --json                  print events as JSON lines on stdout instead of messages on stderr

${REPO_USAGE}

${CONNECTION_USAGE}
`,
  async run(args, ctx) {
    rejectPassphraseArgument(args)
    const { values } = parseCommandArgs('wal stream', {
      args,
      options: {
        ...connectionOptions,
        ...repoOptions,
        slot: { type: 'string' },
        cluster: { type: 'string' },
        'metrics-listen': { type: 'string' },
        'create-slot': { type: 'boolean' },
        synchronous: { type: 'boolean' },
        'status-interval': { type: 'string' },
        priority: { type: 'string' },
        json: { type: 'boolean' },
      },
    })
    const listen = values['metrics-listen'] === undefined ? undefined : parseListenAddress(values['metrics-listen'], '--metrics-listen')
    const { server, configCluster } = await serverFrom(values, ctx, 'wal stream')
    const slot = values.slot ?? configCluster?.slot
    if (!slot)
      throw new UsageError('pgkeep wal stream needs --slot', { hint: 'name a physical replication slot: --slot pgkeep (add --create-slot to create it)' })
    let statusIntervalMs = 10_000
    if (values['status-interval'] !== undefined) {
      const s = Number(values['status-interval'])
      if (!Number.isFinite(s) || s <= 0 || s > 3600) {
        throw new UsageError(`invalid --status-interval '${values['status-interval']}'`, {
          hint: 'give seconds, more than 0 and at most 3600 (keep it below wal_sender_timeout)',
        })
      }
      statusIntervalMs = Math.round(s * 1000)
    }
    const priority = values.priority ?? (values.synchronous ? 'normal' : 'low')
    if (priority !== 'low' && priority !== 'normal') throw new UsageError(`invalid --priority '${priority}'`, { hint: 'use low or normal' })
    if (priority === 'low') {
      try {
        setPriority(constants.priority.PRIORITY_BELOW_NORMAL)
      } catch {
        // Not permitted here: run at the priority we have.
      }
    }
    const opened = await openRepoForCommand(values, ctx, 'wal stream')
    const say = sayer(ctx, values.json === true)
    const streamer = new WalStreamer({
      repo: opened.repo,
      server,
      slot,
      createSlot: values['create-slot'],
      synchronous: values.synchronous,
      statusIntervalMs,
      signal: ctx.signal,
      onEvent: (e) => say.event(e),
    })
    const onUsr1 = () => say.status(streamer.status())
    process.on('SIGUSR1', onUsr1)
    let metrics: MetricsServer | undefined
    try {
      if (listen) {
        metrics = await serveMetrics({
          ...listen,
          repo: opened.repo,
          stream: () => streamer.status(),
          signal: ctx.signal,
          onEvent: (e) => say.event(e),
        })
        say.event({
          type: 'message',
          operation: 'wal-stream',
          level: 'info',
          text: `serving metrics at ${metrics.url}`,
          code: 'metrics-listening',
          data: { url: metrics.url },
        })
      }
      const result = await streamer.run()
      say.stopped(result.timeline, result.durableLsn)
      return 0
    } finally {
      process.off('SIGUSR1', onUsr1)
      await metrics?.close()
      await opened.repo.close().catch(() => {})
    }
  },
}

const mib = (n: number) => `${(n / (1 << 20)).toFixed(1)} MiB`

function sayer(ctx: CliContext, json: boolean) {
  // A long-running process's log: every line carries its time.
  const line = (text: string) => ctx.stderr.write(`pgkeep: ${new Date().toISOString()} ${text}\n`)
  const out = (o: Record<string, unknown>) =>
    ctx.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...o }, (_k, v) => (typeof v === 'bigint' ? formatLsn(v) : v)) + '\n')
  return {
    event(e: PgkeepEvent) {
      if (e.type !== 'message') return
      if (json) out({ type: e.code ?? 'message', level: e.level, text: e.text, ...e.data })
      else line(`${e.level === 'warning' ? 'warning: ' : ''}${e.text}`)
    },
    status(s: WalStreamStatus) {
      if (json) return out({ type: 'status', ...s })
      line(
        `timeline ${s.timeline ?? '-'}: received ${s.receivedLsn !== undefined ? formatLsn(s.receivedLsn) : '-'}, durable ` +
          `${s.durableLsn !== undefined ? formatLsn(s.durableLsn) : '-'}, server at ${s.serverWalEnd !== undefined ? formatLsn(s.serverWalEnd) : '-'}; ` +
          `lag ${s.lagBytes !== undefined ? mib(s.lagBytes) : '-'}${s.lagSeconds ? ` (${s.lagSeconds.toFixed(0)} s)` : ''}, queued ${mib(s.queuedBytes)}, receiving ${mib(s.receiveBytesPerSec)}/s, ` +
          `${s.segmentsStored} segments stored`,
      )
    },
    stopped(timeline: number, durableLsn: bigint) {
      if (json) return out({ type: 'stopped', timeline, durableLsn })
      line(`stopped; WAL is durable up to ${formatLsn(durableLsn)} on timeline ${timeline}`)
    },
  }
}
