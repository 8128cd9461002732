// The benchmark suite's results: one JSON line per measured run, medians per variant, ratios to each variant's
// reference, the bars (goals, not asserts) and the markdown report that README.md shows.

import { median } from './measure.js'

/** Which column a variant stands in: our tool, what a user would use instead, or the machine's limit. */
export type Side = 'pgkeep' | 'reference' | 'limit'

/** One measured run of one variant: a JSON line in `suite.jsonl`. */
export interface Sample {
  suite: 'pgkeep-bench'
  runId: string
  group: string
  variant: string
  side: Side
  /** 0-based; runs below the warm-up count are warm-ups, kept in the file but not in the medians. */
  run: number
  warmup: boolean
  wallMs: number
  userS: number | null
  sysS: number | null
  maxRssKb: number | null
  /** What the run left on disk (a backup's files, a restored directory, fetched WAL), bytes. */
  bytesWritten?: number
  /** Growth of the pgkeep repository in this run, bytes. */
  repoGrowthBytes?: number
  /** Bytes read or received (physical-limit rows). */
  bytesRead?: number
  /** Size of the database the run worked on (pg_database_size summed), bytes: the base of CPU-s per GB. */
  databaseBytes?: number
  /** 1-minute load average when the run started (the machine may be shared). */
  load1?: number
  /** Recovery rows: CPU of the whole recovering server (its processes and the restore_command calls), seconds. */
  serverUserS?: number | null
  serverSysS?: number | null
  /** Recovery rows: how many times the server ran restore_command. */
  restoreCalls?: number
}

/** A variant's place in the report: its group, its side, and the variant its ratio is taken against. */
export interface VariantSpec {
  group: string
  name: string
  side: Side
  /** The repository kind of a pgkeep variant. */
  repoKind?: 'fs' | 's3'
  /** The variant of the same group this one is compared with (none: it is a reference itself). */
  ref?: string
  /** A bar on the wall-time ratio to `ref`: at most this (drawn as a mark on the chart). */
  goalRatio?: number
}

export interface GroupSpec {
  id: string
  title: string
}

/** What the run was: printed above the table and kept in the summary line. */
export interface RunMeta {
  runId: string
  at: string
  scale: number
  runs: number
  warmup: number
  repoKinds: string[]
  walSegments: number
  /** MB of WAL the recovery rows replay (0 or missing: none). */
  recoveryWalMb?: number
  /** Heap pages whose rows the 1% change updated (PG 15, last run). */
  touchedPages?: number
  node: string
  pgkeepCommit: string
  postgres: Record<string, string>
  databaseBytes: number
  zstd: { rawBytes: number; zstdBytes: number; ratio: number }
  machine: { cpus: number; model: string; memGiB: number; loadBefore: number[]; loadAfter?: number[] }
}

export interface VariantSummary {
  spec: VariantSpec
  wallMs: number
  ratio: number | null
  userS: number | null
  sysS: number | null
  maxRssKb: number | null
  bytesWritten: number | null
  repoGrowthBytes: number | null
  bytesRead: number | null
  /** Median of the runs' user + system CPU seconds per GB of database. */
  cpuSPerGb: number | null
  /** Median 1-minute load average at the start of the runs. */
  load1: number | null
  runsMs: number[]
}

/** One of the bars: a measured value against its goal. */
export interface BarResult {
  text: string
  measured: number | null
  goal: string
  display: string
  holds: boolean | null
}

const medianOf = (xs: (number | null | undefined)[]): number | null => {
  const v = xs.filter((x): x is number => typeof x === 'number')
  return v.length === xs.length && v.length > 0 ? median(v) : null
}

/** Medians per variant over the measured (non-warm-up) runs, in the order of `specs`; ratios to each reference. */
export function summarize(specs: VariantSpec[], samples: Sample[]): VariantSummary[] {
  const measured = samples.filter((s) => !s.warmup)
  const wallOf = (group: string, name: string) => {
    const xs = measured.filter((s) => s.group === group && s.variant === name).map((s) => s.wallMs)
    return xs.length ? median(xs) : null
  }
  const out: VariantSummary[] = []
  for (const spec of specs) {
    const mine = measured.filter((s) => s.group === spec.group && s.variant === spec.name)
    if (mine.length === 0) continue
    const wallMs = median(mine.map((s) => s.wallMs))
    const refMs = spec.ref ? wallOf(spec.group, spec.ref) : null
    out.push({
      spec,
      wallMs,
      ratio: refMs ? wallMs / refMs : null,
      userS: medianOf(mine.map((s) => s.userS)),
      sysS: medianOf(mine.map((s) => s.sysS)),
      maxRssKb: medianOf(mine.map((s) => s.maxRssKb)),
      bytesWritten: medianOf(mine.map((s) => s.bytesWritten)),
      repoGrowthBytes: medianOf(mine.map((s) => s.repoGrowthBytes)),
      bytesRead: medianOf(mine.map((s) => s.bytesRead)),
      cpuSPerGb: medianOf(mine.map((s) => (s.userS !== null && s.sysS !== null && s.databaseBytes ? (s.userS + s.sysS) / (s.databaseBytes / 1e9) : null))),
      load1: medianOf(mine.map((s) => s.load1)),
      runsMs: mine.map((s) => s.wallMs),
    })
  }
  return out
}

export const formatBytes = (n: number | null): string => {
  if (n === null) return '–'
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e8 ? 0 : 1)} MB`
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)} kB`
  return `${n} B`
}
/** A table cell: pipes escaped so that a command line with a pipe stays in its column. */
const cell = (s: string) => s.replace(/\|/g, '\\|')
const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`

/** The markdown report: a setup line, the table of medians and ratios, and the bars. */
export function formatMarkdown(meta: RunMeta, groups: GroupSpec[], rows: VariantSummary[], bars: BarResult[]): string {
  const m = meta.machine
  const lines = [
    `pgkeep ${meta.pgkeepCommit} · Node ${meta.node} · PostgreSQL ${Object.values(meta.postgres).join(' and ')} · ` +
      `${m.cpus} × ${m.model}, ${m.memGiB} GiB · load average ${m.loadBefore.map((x) => x.toFixed(1)).join(' ')} before` +
      (m.loadAfter ? `, ${m.loadAfter.map((x) => x.toFixed(1)).join(' ')} after` : ''),
    '',
    `Database: pgbench scale ${meta.scale} (indexes in a second tablespace) plus a table of random bytes, ` +
      `${formatBytes(meta.databaseBytes)}; \`zstd -1\` compresses it ${meta.zstd.ratio.toFixed(1)}x ` +
      `(${formatBytes(meta.zstd.rawBytes)} → ${formatBytes(meta.zstd.zstdBytes)}). The 1% change updates one row on every ` +
      `100th page of the two large tables (${meta.touchedPages ?? '?'} pages, ` +
      `${meta.touchedPages ? ((100 * meta.touchedPages * 8192) / meta.databaseBytes).toFixed(2) : '?'}% of the database's pages). ` +
      `Repository: ${meta.repoKinds.join(', ')}. ` +
      `Medians of ${meta.runs} run(s) after ${meta.warmup} warm-up, variants alternating within each run; ` +
      `\`sync\` before every run; ratio = median / the group's reference (marked ◆); CPU-s per GB = user + system ` +
      `CPU of the measured process per GB of the database it worked on; load = 1-minute load average at the start. Bytes: files written ` +
      `(pg_basebackup, restore, WAL), repository growth (pgkeep backup) or bytes read (physical limit). ` +
      `The WAL rows run one process per segment, as restore_command does (in a directory standing for a data ` +
      `directory in recovery: the bench server's postmaster.pid, the segments written into its pg_wal/; pgkeep as ` +
      `the \`pgkeep\` command, whose launcher serves prefetched segments without starting node); their CPU and RSS ` +
      `leave out \`wal get\`'s detached prefetch process. ` +
      (meta.recoveryWalMb
        ? `The recovery rows extract one pg_basebackup of the database into a fresh directory and start the server ` +
          `with recovery.signal and that restore_command on ${meta.recoveryWalMb} MB of archived WAL written after it: ` +
          `wall from the server's start until pg_is_in_recovery() is false (each run checked to have replayed it all); ` +
          `CPU and RSS are the restore_command processes' (summed; peak), without \`wal get\`'s prefetch process. `
        : '') +
      `The receive row runs pgkeep's protocol code with the process settings of \`pgkeep backup\`. ` +
      `The SHA-256 and zstd rows run no code of pgkeep's (bench/store-limit.mjs): the files cut into 1 MiB windows, ` +
      `each hashed and compressed at the repository's default level on one thread, then read back, decompressed and ` +
      `checked; with the receive row they are the CPU a full backup cannot go below on this machine. ` +
      `\`pg_basebackup -D - -X none\` cannot stand for the limit here: ` +
      `it writes only a single tablespace to stdout.`,
    '',
    '| | variant | wall | ratio | user CPU | sys CPU | CPU-s per GB | peak RSS | bytes | load | runs (s) |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ]
  for (const g of groups) {
    const mine = rows.filter((r) => r.spec.group === g.id)
    mine.forEach((r, i) => {
      const isRef = mine.some((o) => o.spec.ref === r.spec.name)
      const name = r.spec.side === 'pgkeep' ? `**${cell(r.spec.name)}**` : cell(r.spec.name)
      const written = formatBytes(r.repoGrowthBytes ?? r.bytesWritten ?? r.bytesRead)
      lines.push(
        `| ${i === 0 ? g.title : ''} | ${name}${isRef ? ' ◆' : ''} | ${seconds(r.wallMs)} | ${r.ratio === null ? '' : r.ratio.toFixed(2)} | ` +
          `${r.userS === null ? '–' : r.userS.toFixed(1) + ' s'} | ${r.sysS === null ? '–' : r.sysS.toFixed(1) + ' s'} | ` +
          `${r.cpuSPerGb === null ? '–' : r.cpuSPerGb.toFixed(2)} | ` +
          `${r.maxRssKb === null ? '–' : (r.maxRssKb / 1024).toFixed(0) + ' MB'} | ${written} | ${r.load1 === null ? '–' : r.load1.toFixed(1)} | ` +
          `${r.runsMs.map((x) => (x / 1000).toFixed(2)).join(' ')} |`,
      )
    })
  }
  lines.push('', '| bar (goal, not a test assert) | measured | goal | holds |', '| --- | ---: | ---: | :---: |')
  for (const b of bars) lines.push(`| ${cell(b.text)} | ${b.display} | ${b.goal} | ${b.holds === null ? 'n/a' : b.holds ? 'yes' : '**no**'} |`)
  return lines.join('\n') + '\n'
}
