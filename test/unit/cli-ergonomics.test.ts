// What a user notices of the CLI (no server needed): `pgkeep help CMD`, group help (`pgkeep wal`), "did you mean"
// for a mistyped command, errors as one JSON object on stdout under --json, and the progress line: numbered phases,
// tablespace n/m, no rate or ETA before they mean something, no raw floats and no absurd ETA. The progress line
// runs on a clock the test steps, so what it prints does not depend on the machine's speed.

import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { pathToFileURL } from 'node:url'
import { describe, expect, it } from 'vitest'
import { commands } from '../../src/cli/commands/index.js'
import { closestWord, editDistance } from '../../src/cli/did-you-mean.js'
import { describePhase, ProgressLine } from '../../src/cli/progress.js'
import type { ProgressEvent } from '../../src/events.js'
import { runMain } from '../harness/cli.js'

describe('help', () => {
  it('pgkeep help CMD and CMD --help print the same usage, exit 0', async () => {
    const help = await runMain(['help', 'metrics'])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/^usage: pgkeep metrics --repo URL/)
    expect((await runMain(['metrics', '--help'])).stdout).toBe(help.stdout)
    expect((await runMain(['help', 'wal', 'stream'])).stdout).toMatch(/^usage: pgkeep wal stream .*--metrics-listen ADDR/)
  })

  it('a group alone lists its commands (exit 2), with --help exit 0', async () => {
    const bare = await runMain(['wal'])
    expect(bare.code).toBe(2)
    expect(bare.stdout).toMatch(/^usage: pgkeep wal <command> \[options\]\n\ncommands:\n/)
    for (const c of ['wal stream', 'wal push', 'wal get']) expect(bare.stdout).toContain(`  ${c}`)
    const help = await runMain(['wal', '--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toBe(bare.stdout)
    expect((await runMain(['help', 'wal'])).stdout).toBe(bare.stdout)
  })

  it('every listed command loads, and its usage names the words that select it', async () => {
    expect(commands.length).toBeGreaterThan(20)
    for (const c of commands) {
      const words = c.path.join(' ')
      expect((await c.load()).usage, words).toMatch(new RegExp(`^usage: pgkeep (\\[[^\\]]+\\] )?${words}( |\n)`))
    }
  })

  it('the built CLI loads only the module of the command it runs (an archive_command pays for nothing else)', () => {
    // Every module the process resolves is reported by a resolve hook (module.register) on stderr.
    const dir = mkdtempSync(join(tmpdir(), 'pgkeep-modules-'))
    try {
      writeFileSync(
        join(dir, 'hook.mjs'),
        "export async function resolve(s, c, next) { const r = await next(s, c); process._rawDebug('resolved ' + r.url); return r }\n",
      )
      writeFileSync(
        join(dir, 'register.mjs'),
        `import { register } from 'node:module'\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hook.mjs')).href)})\n`,
      )
      const bin = join(import.meta.dirname, '..', '..', 'bin', 'pgkeep.js')
      const run = (args: string[]) => {
        const r = spawnSync(process.execPath, ['--import', join(dir, 'register.mjs'), bin, ...args], { encoding: 'utf8' })
        expect(r.status, r.stderr).toBe(0)
        return r.stderr
      }
      const commandModules = (log: string) => [...log.matchAll(/\/dist\/src\/cli\/commands\/([\w-]+)\.js$/gm)].map((m) => m[1]).sort()
      // Without a built dist/ (npm test builds it first) the child fails and so does this test.
      expect(commandModules(run(['wal', 'push', '--help']))).toEqual(['index', 'wal-push'])
      expect(commandModules(run(['--help']))).toEqual(['index'])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('pgkeep with no command lists every command and exits 2', async () => {
    const r = await runMain([])
    expect(r.code).toBe(2)
    for (const c of ['check', 'metrics', 'config show', 'wal stream', 'backup', 'restore']) expect(r.stdout).toMatch(new RegExp(`^  ${c} +\\S`, 'm'))
  })
})

describe('a mistyped command', () => {
  it('names the command meant, exit 2', async () => {
    const r = await runMain(['metircs', '--repo', '/nowhere'])
    expect(r.code).toBe(2)
    expect(r.stderr).toBe("pgkeep: error: unknown command 'metircs'\nHINT: did you mean 'pgkeep metrics'? run 'pgkeep help' for the list of commands\n")
    expect((await runMain(['wal', 'stram'])).stderr).toMatch(/unknown command 'wal stram'\nHINT: did you mean 'pgkeep wal stream'\?/)
    expect((await runMain(['help', 'chek'])).stderr).toMatch(/no help for 'chek'.*\nHINT: did you mean 'pgkeep help check'\?/)
    // Nothing near: no guess.
    expect((await runMain(['frobnicate'])).stderr).toBe("pgkeep: error: unknown command 'frobnicate'\nHINT: run 'pgkeep help' for the list of commands\n")
  })

  it('closestWord takes near words and prefixes, and guesses nothing for far ones', () => {
    expect(editDistance('metircs', 'metrics')).toBe(1)
    expect(editDistance('', 'abc')).toBe(3)
    expect(closestWord('restor', ['restore', 'backup'])).toBe('restore')
    expect(closestWord('ver', ['verify', 'info'])).toBe('verify')
    expect(closestWord('Backup', ['backup'])).toBe('backup')
    expect(closestWord('xyz', ['backup', 'restore'])).toBeUndefined()
  })
})

describe('--json errors', () => {
  it('are one object with code, message and hint on stdout, the exit status unchanged, stderr empty', async () => {
    for (const [args, code, status] of [
      [['metrics', '--json'], 'USAGE', 2],
      [['metrics', '--repo', '/nonexistent/pgkeep', '--json'], 'REPO_FORMAT', 22],
      [['check', '--repo', '/nowhere', '--max-wal-age', 'soon', '--json'], 'USAGE', 2],
      [['nosuch', '--json'], 'USAGE', 2],
      [['info', '--json', '--config', '/nonexistent.toml'], 'CONFIG', 3],
    ] as const) {
      const r = await runMain([...args])
      expect(r.code, args.join(' ')).toBe(status)
      expect(r.stderr, args.join(' ')).toBe('')
      const lines = r.stdout.trim().split('\n')
      expect(lines).toHaveLength(1)
      const { error } = JSON.parse(lines[0]!)
      expect(error, args.join(' ')).toMatchObject({ code, message: expect.any(String), hint: expect.any(String) })
      expect(error.message).toMatch(/^[a-z'-]/)
    }
  })
})

describe('the progress line', () => {
  const lines = () => {
    const out = new PassThrough() as PassThrough & { isTTY?: boolean }
    let text = ''
    out.on('data', (d) => (text += d))
    return { out, text: () => text.split('\n').filter(Boolean) }
  }
  const ev = (o: Partial<ProgressEvent>): ProgressEvent => ({ type: 'progress', operation: 'backup', phase: 'files', bytesDone: 0, bytesTotal: null, ...o })

  it('numbers the phases of backup and restore in words', () => {
    expect(describePhase('backup', 'checkpoint')).toBe('[2/5] waiting for the checkpoint')
    expect(describePhase('backup', 'wal')).toBe('[4/5] waiting for WAL')
    expect(describePhase('restore', 'files')).toBe('[1/3] writing files')
    expect(describePhase('restore', 'cleanup')).toBe('removing what the backup does not have')
    expect(describePhase('verify', 'blobs')).toBe('blobs')
  })

  it('shows no rate or ETA in the first frames, then a windowed rate and a sane ETA, never raw floats', () => {
    let now = 1_000_000
    const { out, text } = lines()
    const line = new ProgressLine(out, true, () => now)
    const total = 10_000_000_000
    line.update(ev({ phase: 'checkpoint' }))
    now += 6000
    line.update(ev({ bytesDone: 1_234_567, bytesTotal: total, detail: { tablespace: '1/2' } }))
    now += 1000
    // A slow start: 1 MB in the first seconds, so an ETA now would be days away.
    line.update(ev({ bytesDone: 1_300_001, bytesTotal: total, detail: { tablespace: '1/2' } }))
    for (let i = 1; i <= 6; i++) {
      now += 5000
      line.update(ev({ bytesDone: 1_300_001 + i * 500_000_000, bytesTotal: total, itemsDone: i * 10, itemsTotal: 1000, detail: { tablespace: '2/2' } }))
    }
    const printed = text()
    expect(printed[0]).toBe('backup [2/5] waiting for the checkpoint')
    expect(printed[1]).toBe('backup [3/5] copying files  1.23 MB of 10.0 GB (0%)  tablespace 1/2')
    // On a pipe a frame every 5 s: the slow start's frame is skipped, and the first frame with a rate comes after it.
    expect(printed.slice(0, 2).join('\n')).not.toMatch(/ETA|\/s/)
    const last = printed.at(-1)!
    expect(last).toMatch(/^backup \[3\/5\] copying files {2}3.00 GB of 10.0 GB \(30%\) {2}60\/1000 items {2}tablespace 2\/2 {2}100 MB\/s {2}ETA 1m10s$/)
    for (const l of printed) expect(l).not.toMatch(/\d\.\d{4,}/)
  })

  it('leaves out an ETA beyond a week and prints nothing when disabled', () => {
    let now = 0
    const { out, text } = lines()
    const line = new ProgressLine(out, true, () => now)
    // 3% in the first 5 s, then almost nothing: at 67 B/s the rest would take centuries.
    line.update(ev({ bytesDone: 0, bytesTotal: 1e12 }))
    for (const [t, done] of [
      [5_000, 3e10],
      [30_000, 3e10 + 1000],
      [35_000, 3e10 + 2000],
    ]) {
      now = t!
      line.update(ev({ bytesDone: done!, bytesTotal: 1e12 }))
    }
    expect(text().at(-1)).toBe('backup [3/5] copying files  30.0 GB of 1.00 TB (3%)  67 B/s')
    const off = lines()
    new ProgressLine(off.out, false, () => now).update(ev({ bytesDone: 5 }))
    expect(off.text()).toEqual([])
  })
})
