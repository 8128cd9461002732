// TLS with libpq's sslmode values against real servers that serve a self-signed certificate.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConnectionConfigError, ConnectionError, connect, identifySystem } from '../../protocol/index.js'
import { type Cluster, startCluster } from '../harness/cluster.js'
import { MAJORS } from '../harness/pg-binaries.js'
import { removeTlsFiles, tlsFiles } from '../harness/tls.js'

afterAll(removeTlsFiles)

describe.each(MAJORS)('TLS to PG %i', (major) => {
  let pg: Cluster
  let plain: Cluster | undefined
  beforeAll(async () => {
    pg = await startCluster({ major, ssl: true, tablespaces: 0 })
  })
  afterAll(async () => {
    await pg?.destroy()
    await plain?.destroy()
  })

  const session = async (params: Record<string, string>) => {
    const c = await connect(pg.url({ params }), { env: {} })
    try {
      expect((await identifySystem(c)).timeline).toBe(1)
      const [row] = await pg.sql<{ ssl: boolean }>(`select ssl from pg_stat_ssl join pg_stat_replication using (pid) where pid = $1`, [c.backendPid])
      return { tls: c.tls, serverSaysSsl: row?.ssl }
    } finally {
      await c.close()
    }
  }

  it('sslmode=disable stays plain; prefer and require encrypt', async () => {
    expect(await session({ sslmode: 'disable' })).toEqual({ tls: false, serverSaysSsl: false })
    expect(await session({ sslmode: 'prefer' })).toEqual({ tls: true, serverSaysSsl: true })
    expect(await session({ sslmode: 'require' })).toEqual({ tls: true, serverSaysSsl: true })
    expect(await session({ sslmode: 'allow' })).toEqual({ tls: false, serverSaysSsl: false })
  })

  it('verify-ca and verify-full check the certificate against sslrootcert', async () => {
    const { certFile } = await tlsFiles()
    expect((await session({ sslmode: 'verify-ca', sslrootcert: certFile })).tls).toBe(true)
    expect((await session({ sslmode: 'verify-full', sslrootcert: certFile })).tls).toBe(true)

    const missing = await connect(pg.url({ params: { sslmode: 'verify-full', sslrootcert: '/nonexistent/root.crt' } })).catch((e) => e)
    expect(missing).toBeInstanceOf(ConnectionConfigError)
    expect(missing.message).toMatch(/does not exist/)

    // Any other certificate as root: the chain cannot be verified.
    const { execFileSync } = await import('node:child_process')
    const other = `${pg.baseDir}/other.crt`
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=other', '-keyout', `${pg.baseDir}/other.key`, '-out', other],
      { stdio: 'ignore' },
    )
    const untrusted = await connect(pg.url({ params: { sslmode: 'verify-ca', sslrootcert: other } })).catch((e) => e)
    expect(untrusted).toBeInstanceOf(ConnectionError)
    expect(untrusted.message).toMatch(/SSL/)
  })

  it('sslmode=require fails clearly against a server without TLS', async () => {
    plain = await startCluster({ major, tablespaces: 0 })
    const err = await connect(plain.url({ params: { sslmode: 'require' } })).catch((e) => e)
    expect(err).toBeInstanceOf(ConnectionError)
    expect(err.message).toMatch(/does not support SSL/)
  })
})
