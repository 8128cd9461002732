// The lifecycle commands on the standard bench data (pgbench plus random bytes, about 3x compressible; bench-data.ts)
// of a PostgreSQL 15 cluster, in the order a scheduled job runs them: three backups a full and two incrementals,
// each after 10% of the pages changed, into a filesystem repository; then `expire --keep-last 1`, `gc --grace 0`
// (the bytes on disk before and after, measured on the file system), and `copy` of what is left into a new plain
// repository. Each command is the real binary, measured from outside (wall, CPU, peak RSS: measure.ts). One run
// each; a JSON line in bench/results/lifecycle.jsonl. PGKEEP_BENCH_SCALE (default 90, as `npm run bench`).

import { execFileSync } from 'node:child_process'
import { appendFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { startCluster } from '../test/harness/cluster.js'
import { loadBenchData, touchPages } from './bench-data.js'
import { dirBytes, syncDisks } from './bench-fs.js'
import { type Measured, measure } from './measure.js'

const scale = Number(process.env.PGKEEP_BENCH_SCALE ?? 90)
const BIN = join(import.meta.dirname, '..', 'bin', 'pgkeep.js')

it(`expire, gc and copy: standard bench data at scale ${scale}`, async () => {
  const pg = await startCluster({ major: 15 })
  const work = join(pg.baseDir, 'bench-lifecycle')
  await mkdir(work)
  const pgkeep = (args: string[]) => execFileSync(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }).toString()
  const timed = async (args: string[]): Promise<Measured> => {
    await syncDisks()
    return measure(BIN, args)
  }
  const source = join(work, 'source')
  const target = join(work, 'target')
  try {
    const data = await loadBenchData(pg, scale)
    pgkeep(['init', '--repo', source])
    const backups = [JSON.parse(pgkeep(['backup', '-d', pg.url(), '--repo', source, '--json']))]
    for (let i = 0; i < 2; i++) {
      await touchPages(pg, 10)
      backups.push(JSON.parse(pgkeep(['backup', '-d', pg.url(), '--repo', source, '--json'])))
    }
    const bytesBackedUp = await dirBytes(source)

    const expire = await timed(['expire', '--repo', source, '--keep-last', '1', '--json'])
    const expired = JSON.parse(expire.stdout).clusters[0]
    expect(expired.removedBackups).toBe(2)
    const bytesBeforeGc = await dirBytes(source)
    const gc = await timed(['gc', '--repo', source, '--grace', '0', '--json'])
    const collected = JSON.parse(gc.stdout)
    const bytesAfterGc = await dirBytes(source)
    expect(bytesAfterGc).toBeLessThan(bytesBeforeGc)
    pgkeep(['init', '--repo', target])
    const copy = await timed(['copy', '--repo', source, '--to', target, '--json'])
    const copied = JSON.parse(copy.stdout)
    const targetBytes = await dirBytes(target)

    const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`
    const row = (name: string, m: Measured) =>
      `| ${name} | ${(m.ms / 1000).toFixed(1)} s | ${m.userS?.toFixed(1) ?? 'n/a'} s | ${m.sysS?.toFixed(1) ?? 'n/a'} s | ${m.maxRssKb === null ? 'n/a' : `${(m.maxRssKb / 1024).toFixed(0)} MB`} |`
    console.log(
      [
        `Standard bench data at scale ${scale} (PostgreSQL 15, database ${mb(data.databaseBytes)}); backups stored ` +
          `${backups.map((b) => mb(b.storedBytes)).join(', ')}; repository ${mb(bytesBackedUp)}:`,
        '',
        '| command | wall | user CPU | sys CPU | peak RSS |',
        '| --- | ---: | ---: | ---: | ---: |',
        row('expire --keep-last 1 (2 backups and their WAL removed)', expire),
        row('gc --grace 0', gc),
        row('copy of the remaining backup to a new plain repository', copy),
        '',
        `expire removed ${expired.removedBackups} backups and ${expired.removedWalFiles} WAL files; gc: ${mb(bytesBeforeGc)} -> ${mb(bytesAfterGc)} on disk ` +
          `(deleted ${collected.packsDeleted} packs, repacked ${collected.packsRepacked}); the copy stored ${mb(copied.stored.storedBytes)}, target ${mb(targetBytes)} on disk`,
      ].join('\n'),
    )
    await mkdir(join(import.meta.dirname, 'results'), { recursive: true })
    await appendFile(
      join(import.meta.dirname, 'results', 'lifecycle.jsonl'),
      JSON.stringify({
        at: new Date().toISOString(),
        scale,
        databaseBytes: data.databaseBytes,
        backupsStoredBytes: backups.map((b) => b.storedBytes),
        bytesBackedUp,
        expire: { ...expire, stdout: undefined, removedBackups: expired.removedBackups, removedWalFiles: expired.removedWalFiles },
        gc: {
          ...gc,
          stdout: undefined,
          bytesBefore: bytesBeforeGc,
          bytesAfter: bytesAfterGc,
          packsDeleted: collected.packsDeleted,
          packsRepacked: collected.packsRepacked,
        },
        copy: { ...copy, stdout: undefined, storedBytes: copied.stored.storedBytes, targetBytes },
      }) + '\n',
    )
  } finally {
    await pg.destroy()
  }
})
