// A fresh filesystem repository for a test, in a temporary directory removed by the returned cleanup.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { initRepository, openRepository, type Repository } from '../../src/repo/index.js'
import { openFsStorage } from '../../src/storage/fs.js'

export interface TestRepo {
  dir: string
  repo: Repository
  /** A second instance on the same storage (backup streams WAL through one). */
  second: () => Promise<Repository>
  close: () => Promise<void>
}

export async function freshFsRepo(o: { passphrase?: string } = {}): Promise<TestRepo> {
  const dir = await mkdtemp(join(tmpdir(), 'pgkeep-repo-'))
  const repo = await initRepository(await openFsStorage(dir), o.passphrase ? { encrypt: { passphrase: o.passphrase } } : {})
  const others: Repository[] = []
  return {
    dir,
    repo,
    second: async () => {
      const r = await openRepository(await openFsStorage(dir), { passphrase: o.passphrase })
      others.push(r)
      return r
    },
    close: async () => {
      for (const r of [repo, ...others]) await r.close().catch(() => {})
      await rm(dir, { recursive: true, force: true })
    },
  }
}
