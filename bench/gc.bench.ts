// Garbage collection on a synthetic repository of PGKEEP_BENCH_GC_BLOBS blobs (default 1,000,000) built through the
// library: small blobs (256 bytes) in 64 KiB packs, so that the repository has as many blobs as a 1 TB one of 1 MiB
// blobs, in a few thousand packs. A backup record whose file list and file maps name a tenth of them (walked
// structurally), and records of another kind naming blobs by `blobRefs`, keep 48% of the blobs live: whole packs dead, packs 30% live
// (repacked) and packs 80% live (kept). Then the real binary runs `gc --dry-run` and `gc --grace 0`, each under
// /usr/bin/time (wall time and peak RSS measured from outside), and `info` for comparison: it loads the whole index
// into memory, which gc never does. Results: bench/results/gc.jsonl, and a table on the console.

import { randomBytes } from 'node:crypto'
import { appendFile, mkdir, readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { initRepository } from '../src/repo/index.js'
import { openFsStorage } from '../src/storage/fs.js'
import { tempDir } from '../test/harness/repo-fixtures.js'
import { writeSyntheticBackup } from '../test/harness/synthetic-backup.js'
import { ensureBuilt } from '../test/integration/wal-helpers.js'
import { measure, type Measured } from './measure.js'

const BLOBS = Number(process.env.PGKEEP_BENCH_GC_BLOBS ?? 1_000_000)
const BLOB_BYTES = 256
const ROOT = join(import.meta.dirname, '..')
const RESULTS = join(ROOT, 'bench', 'results', 'gc.jsonl')
/** Blobs named by one `blobRefs` record (~670 kB of JSON). */
const REFS_PER_RECORD = 10_000

/** Whether blob `i` stays referenced: the first 40% mostly (80% of each pack), the next 20% sparsely (30%), the rest not. */
function live(i: number): boolean {
  if (i < BLOBS * 0.4) return i % 5 !== 0
  if (i < BLOBS * 0.6) return i % 10 < 3
  return i >= BLOBS * 0.9 // a tail that a backup keeps whole
}

/** Bytes of every file under `dir`, measured on the file system (not taken from gc's own report). */
async function bytesOnDisk(dir: string): Promise<number> {
  let n = 0
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) n += (await stat(join(e.parentPath, e.name))).size
  }
  return n
}

async function build(dir: string): Promise<{ liveBlobs: number; ms: number }> {
  const t0 = performance.now()
  const repo = await initRepository(await openFsStorage(dir), { packTargetBytes: 64 << 10, compression: 'none' })
  const noise = randomBytes(BLOB_BYTES)
  const ids: string[] = []
  const blob = Buffer.alloc(BLOB_BYTES)
  for (let i = 0; i < BLOBS; i++) {
    noise.copy(blob)
    blob.writeUInt32LE(i, 0)
    ids.push((await repo.putBlob('data', blob, { compress: false })).id)
  }
  await repo.flush()
  // The tail as a backup: relation-like files of 100 blobs each, their extents in file maps (as a backup stores
  // relation files), found by walking the file list and the maps.
  const tail = ids.slice(Math.floor(BLOBS * 0.9))
  await writeSyntheticBackup(repo, { blobs: tail, blobBytes: BLOB_BYTES })
  // The rest through blobRefs.
  const named = ids.filter((_, i) => live(i) && i < BLOBS * 0.9)
  for (let r = 0; r * REFS_PER_RECORD < named.length; r++) {
    await repo.writeRecord('bench', `refs-${r}`, {}, { blobRefs: named.slice(r * REFS_PER_RECORD, (r + 1) * REFS_PER_RECORD) })
  }
  await repo.close()
  return { liveBlobs: named.length + tail.length, ms: performance.now() - t0 }
}

it(`gc on a repository of ${BLOBS} blobs`, async () => {
  ensureBuilt()
  const dir = tempDir('bench-gc')
  try {
    const repoDir = join(dir.dir, 'repo')
    const built = await build(repoDir)
    console.log(`built ${BLOBS} blobs (${built.liveBlobs} live) in ${(built.ms / 1000).toFixed(0)} s`)
    const bin = join(ROOT, 'bin', 'pgkeep.js')
    const pgkeep = (args: string[]): Promise<Measured> => measure(process.execPath, [bin, ...args, '--repo', repoDir])
    const baseline = await measure(process.execPath, [bin, '--help'])
    const info = await pgkeep(['info', '--json'])
    const dry = await pgkeep(['gc', '--dry-run', '--grace', '0', '--json'])
    const bytesBefore = await bytesOnDisk(repoDir)
    const gc = await pgkeep(['gc', '--grace', '0', '--json'])
    const bytesAfter = await bytesOnDisk(repoDir)
    const again = await pgkeep(['gc', '--grace', '0', '--json'])
    const result = JSON.parse(gc.stdout)
    const dryResult = JSON.parse(dry.stdout)
    expect(result.packsDeleted).toBeGreaterThan(0)
    expect(result.packsRepacked).toBeGreaterThan(0)
    expect(bytesAfter).toBeLessThan(bytesBefore)
    const mb = (kb: number | null) => (kb === null ? 'n/a' : `${(kb / 1024).toFixed(0)} MB`)
    const rows = [
      ['pgkeep --help (the process alone)', baseline],
      ['info (loads the whole index)', info],
      ['gc --dry-run', dry],
      ['gc --grace 0', gc],
      ['gc again (nothing to do)', again],
    ] as const
    console.log(
      [
        `| ${BLOBS} blobs, ${result.packsBefore} packs, ${result.indexObjectsBefore} index objects | wall | user CPU | peak RSS |`,
        '| --- | --- | --- | --- |',
        ...rows.map(([name, m]) => `| ${name} | ${(m.ms / 1000).toFixed(1)} s | ${m.userS?.toFixed(1) ?? 'n/a'} s | ${mb(m.maxRssKb)} |`),
        '',
        `repository on disk: ${bytesBefore} bytes before gc, ${bytesAfter} after`,
        `gc: deleted ${result.packsDeleted} packs (${result.bytesDeleted} bytes), repacked ${result.packsRepacked} into ${result.packsWritten}, ` +
          `index objects ${result.indexObjectsBefore} -> ${result.indexObjectsAfter}; live blobs by the mark ${dryResult.blobs.live} of ${dryResult.blobs.indexed} ` +
          `(exactly ${built.liveBlobs}); filters and tables ${(result.memoryBytes / 1e6).toFixed(1)} MB; false-positive rate ${(100 * result.falsePositiveRate).toFixed(2)}%`,
      ].join('\n'),
    )
    await mkdir(join(ROOT, 'bench', 'results'), { recursive: true })
    await appendFile(
      RESULTS,
      JSON.stringify({
        at: new Date().toISOString(),
        blobs: BLOBS,
        liveBlobs: built.liveBlobs,
        markedLive: dryResult.blobs.live,
        packsBefore: result.packsBefore,
        bytesBefore,
        bytesAfter,
        indexObjectsBefore: result.indexObjectsBefore,
        indexObjectsAfter: result.indexObjectsAfter,
        packsDeleted: result.packsDeleted,
        packsRepacked: result.packsRepacked,
        memoryBytes: result.memoryBytes,
        runs: Object.fromEntries(rows.map(([name, m]) => [name, { ms: m.ms, userS: m.userS, maxRssKb: m.maxRssKb }])),
      }) + '\n',
    )
  } finally {
    dir.remove()
  }
})
