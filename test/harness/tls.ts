// A throw-away self-signed certificate for TLS tests, made once per test process with the openssl CLI.

import { execFileSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'

let made: Promise<{ certFile: string; keyFile: string }> | undefined

export function tlsFiles(): Promise<{ certFile: string; keyFile: string }> {
  made ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgkeep-tls-'))
    const certFile = join(dir, 'server.crt')
    const keyFile = join(dir, 'server.key')
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '2',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout',
        keyFile,
        '-out',
        certFile,
      ],
      { stdio: 'ignore' },
    )
    return { certFile, keyFile }
  })()
  return made
}

/** Removes the files, once the tests of this process are done with them (the next tlsFiles() makes new ones). */
export async function removeTlsFiles(): Promise<void> {
  const m = made
  made = undefined
  if (m) await rm(dirname((await m).certFile), { recursive: true, force: true })
}
