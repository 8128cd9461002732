// `pgkeep init` and `pgkeep verify` through the CLI entry: options, passphrase sources, exit statuses, --json, and
// the damaged object named in the output. On fs and on the S3 server (through AWS_* variables, as a user would).

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { chmodSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { PassThrough } from 'node:stream'

import { main } from '../../src/cli/main.js'
import { openRepository } from '../../src/repo/index.js'
import { blobContent, damage, flipByte, listKeys, openSpec, specLocation, startStorageFactory, tempDir, type StorageFactory } from '../harness/repo-fixtures.js'

interface Run {
  code: number
  stdout: string
  stderr: string
}

async function pgkeep(argv: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', (b: Buffer) => (out += b.toString()))
  stderr.on('data', (b: Buffer) => (err += b.toString()))
  const code = await main(argv, { env, stdout, stderr, signal: new AbortController().signal })
  return { code, stdout: out, stderr: err }
}

describe.each(['fs', 's3'] as const)('init and verify commands on %s', (driver) => {
  let factory: StorageFactory
  const files = tempDir('cli')
  beforeAll(async () => {
    factory = await startStorageFactory(driver)
  })
  afterAll(async () => {
    await factory?.stop()
    files.remove()
  })

  const location = specLocation

  it('init refuses a passphrase on the command line and --encrypt without a passphrase', async () => {
    const { url, env } = location(factory.spec())
    const onCli = await pgkeep(['init', '--repo', url, '--encrypt', '--passphrase', 'hunter2'], env)
    expect(onCli.code).toBe(2)
    expect(onCli.stderr).toContain('cannot be given on the command line')
    expect(onCli.stderr).toMatch(/HINT: .*PGKEEP_PASSPHRASE.*--passphrase-file/)
    expect(onCli.stderr).not.toContain('hunter2')
    const none = await pgkeep(['init', '--repo', url, '--encrypt'], env)
    expect(none.code).toBe(2)
    expect(none.stderr).toMatch(/--encrypt needs a passphrase\nHINT: set PGKEEP_PASSPHRASE or use --passphrase-file/)
  })

  it('init creates the repository as asked, and refuses a second time', async () => {
    const spec = factory.spec()
    const { url, env } = location(spec)
    const file = path.join(files.dir, `pass-${driver}`)
    writeFileSync(file, 'from a file\n', { mode: 0o600 })
    const made = await pgkeep(['init', '--repo', url, '--encrypt', '--passphrase-file', file, '--compress', 'zstd:7', '--pack-size', '4'], env)
    // Both stores enforce conditional writes (a directory through link(2), the test S3 server as AWS S3 does), so
    // nothing is said; stores that do not are tested in storage-conditional-write.test.ts.
    expect(made.stderr).toBe('')
    expect(made.code).toBe(0)
    expect(made.stdout).toContain('encrypted (AES-256-GCM), zstd level 7, packs of 4 MiB')
    const repo = await openRepository(await openSpec(spec), { passphrase: 'from a file' })
    expect(repo.config).toMatchObject({
      packTargetBytes: 4 * 1048576,
      compression: { algorithm: 'zstd', level: 7 },
      conditionalWrite: 'enforced',
    })
    // A passphrase file other users may read still works, with a warning and a safe hint.
    chmodSync(file, 0o644)
    const loose = await pgkeep(['verify', '--repo', url, '--passphrase-file', file], env)
    expect(loose.code, loose.stderr).toBe(0)
    expect(loose.stderr).toContain(`warning: passphrase file '${file}' can be read or written by other users (mode 0644)`)
    expect(loose.stderr).toContain(`HINT: chmod 600 '${file}'`)
    const again = await pgkeep(['init', '--repo', url], env)
    expect(again.code).toBe(21)
    expect(again.stderr).toContain('already holds a pgkeep repository')
    expect(again.stderr).toContain('HINT:')
  })

  it('verify: exit 0 on a sound repository, non-zero naming the damaged object, --json', async () => {
    const spec = factory.spec()
    const { url, env: baseEnv } = location(spec)
    const env = { ...baseEnv, PGKEEP_PASSPHRASE: 'env secret' }
    expect((await pgkeep(['init', '--repo', url, '--encrypt', '--compress', 'none'], env)).code).toBe(0)
    const storage = await openSpec(spec)
    const repo = await openRepository(storage, { passphrase: 'env secret' })
    for (let i = 0; i < 5; i++) await repo.putBlob('data', blobContent(11, i))
    await repo.close()

    const sound = await pgkeep(['verify', '--repo', url, '--read-data'], env)
    expect(sound.stderr).toBe('')
    expect(sound.code).toBe(0)
    expect(sound.stdout).toContain('no problems found')
    const json = await pgkeep(['verify', '--repo', url, '--json', '--read-data=50'], env)
    expect(json.code).toBe(0)
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, problems: [], stats: { packs: 1, packsRead: 1 } })
    // Without the passphrase: the passphrase error, not a verify result.
    const noPass = await pgkeep(['verify', '--repo', url], baseEnv)
    expect(noPass.code).toBe(23)
    expect(noPass.stderr).toContain('HINT: check PGKEEP_PASSPHRASE or --passphrase-file')

    const [pack] = await listKeys(storage, 'packs/')
    await damage(storage, pack!, flipByte(100))
    const structure = await pgkeep(['verify', '--repo', url], env)
    expect(structure.code).toBe(0) // a data byte: only reading data finds it
    const damaged = await pgkeep(['verify', '--repo', url, '--read-data'], env)
    expect(damaged.code).toBe(30)
    expect(damaged.stdout).toContain(`  ${pack}: `)
    expect(damaged.stderr).toMatch(/pgkeep: error: repository .* has \d+ problems?\nHINT: /)
    const damagedJson = await pgkeep(['verify', '--repo', url, '--read-data', '--json'], env)
    expect(damagedJson.code).toBe(30)
    const parsed = JSON.parse(damagedJson.stdout) as { ok: boolean; problems: { object: string }[] }
    expect(parsed.ok).toBe(false)
    expect(parsed.problems.map((p) => p.object)).toContain(pack)
    await storage.close()
  })

  it('verify names a location that is not a repository', async () => {
    const { url, env } = location(factory.spec())
    const r = await pgkeep(['verify', '--repo', url], env)
    expect(r.code).toBe(22)
    expect(r.stderr).toContain('is not a pgkeep repository')
    expect(r.stderr).toContain("HINT: create one with 'pgkeep init")
  })
})
