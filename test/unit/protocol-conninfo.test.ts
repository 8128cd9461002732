// Connection options as libpq reads them: URI and key=value forms, PG* variables, precedence, .pgpass.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ConnectionConfigError } from '../../protocol/errors.js'
import { lookupPgpass, parseConninfo, resolveConnectOptions } from '../../protocol/session/conninfo.js'

describe('parseConninfo', () => {
  it('reads URIs with user, password, hosts, ports, database and parameters', () => {
    expect(parseConninfo('postgresql://bob:p%40ss@db1:5433,db2/appdb?sslmode=require&application_name=x')).toEqual({
      user: 'bob',
      password: 'p@ss',
      host: 'db1,db2',
      port: '5433,',
      dbname: 'appdb',
      sslmode: 'require',
      application_name: 'x',
    })
    expect(parseConninfo('postgres://%2Fvar%2Frun%2Fpostgresql:5432/')).toEqual({ host: '/var/run/postgresql', port: '5432' })
    expect(parseConninfo('postgres://[::1]:6000/?ssl=true')).toEqual({ host: '::1', port: '6000', sslmode: 'require' })
    expect(parseConninfo('postgres://')).toEqual({})
  })

  it("reads key=value pairs with quotes, escapes and spaces around '='", () => {
    expect(parseConninfo(`host=h1 port = 5432 password='it\\'s a pw' user=me\\ x`)).toEqual({
      host: 'h1',
      port: '5432',
      password: "it's a pw",
      user: 'me x',
    })
    expect(() => parseConninfo('host')).toThrow(ConnectionConfigError)
    expect(() => parseConninfo("password='open")).toThrow(/unterminated/)
  })
})

describe('resolveConnectOptions', () => {
  const env = { HOME: '/home/u', USER: 'envuser' }

  it('applies defaults, PG* variables, the string, then overrides, in increasing precedence', () => {
    const d = resolveConnectOptions(undefined, { env })
    expect(d.hosts).toEqual([{ host: '/var/run/postgresql', port: 5432 }])
    expect(d.user).toBe('envuser')
    expect(d.sslmode).toBe('prefer')
    expect(d.passfile).toBe('/home/u/.pgpass')

    const withEnv = resolveConnectOptions(undefined, { env: { ...env, PGHOST: 'envhost', PGPORT: '6000', PGUSER: 'pguser', PGSSLMODE: 'disable' } })
    expect(withEnv.hosts).toEqual([{ host: 'envhost', port: 6000 }])
    expect(withEnv.user).toBe('pguser')
    expect(withEnv.sslmode).toBe('disable')

    const s = resolveConnectOptions('host=strhost user=struser', { env: { ...env, PGHOST: 'envhost', PGPORT: '6000' } })
    expect(s.hosts).toEqual([{ host: 'strhost', port: 6000 }])
    expect(s.user).toBe('struser')

    const o = resolveConnectOptions('host=strhost user=struser', { env, overrides: { host: 'cli', user: 'cliuser', port: '7000' } })
    expect(o.hosts).toEqual([{ host: 'cli', port: 7000 }])
    expect(o.user).toBe('cliuser')
  })

  it('pairs host and port lists', () => {
    expect(resolveConnectOptions('host=a,b port=1,2', { env }).hosts).toEqual([
      { host: 'a', port: 1 },
      { host: 'b', port: 2 },
    ])
    expect(resolveConnectOptions('host=a,b port=9', { env }).hosts).toEqual([
      { host: 'a', port: 9 },
      { host: 'b', port: 9 },
    ])
    expect(() => resolveConnectOptions('host=a,b,c port=1,2', { env })).toThrow(/could not match/)
  })

  it('rejects unknown options, bad ports, bad sslmode with a hint', () => {
    const e = (() => {
      try {
        resolveConnectOptions('hots=x', { env })
      } catch (err) {
        return err as ConnectionConfigError
      }
    })()
    expect(e).toBeInstanceOf(ConnectionConfigError)
    expect(e?.message).toBe('invalid connection option "hots"')
    expect(e?.hint).toBeTruthy()
    expect(() => resolveConnectOptions('port=99999', { env })).toThrow(/invalid port/)
    expect(() => resolveConnectOptions('sslmode=always', { env })).toThrow(/invalid sslmode/)
  })
})

describe('lookupPgpass', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgkeep-pgpass-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'pgpass')
  writeFileSync(
    file,
    ['# comment', 'db1:5432:otherdb:bob:nope', 'db1:5432:replication:bob:right\\:one', '*:*:*:alice:wild', 'localhost:5433:*:carol:sock'].join('\n'),
    { mode: 0o600 },
  )

  it('matches host, port, the replication database and user, with wildcards and escapes', async () => {
    expect(await lookupPgpass(file, { host: 'db1', port: 5432 }, 'bob')).toBe('right:one')
    expect(await lookupPgpass(file, { host: 'db9', port: 1 }, 'alice')).toBe('wild')
    expect(await lookupPgpass(file, { host: '/tmp', port: 5433 }, 'carol')).toBe('sock')
    expect(await lookupPgpass(file, { host: 'db1', port: 5432 }, 'nobody')).toBeUndefined()
  })

  it('ignores a file readable by others, as libpq does', async () => {
    const open = join(dir, 'open')
    writeFileSync(open, '*:*:*:*:pw', { mode: 0o644 })
    expect(await lookupPgpass(open, { host: 'x', port: 1 }, 'u')).toBeUndefined()
  })
})
