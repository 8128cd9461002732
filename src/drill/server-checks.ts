// What a drill checks on the restored copy once it runs, each check timed: every database accepts connections,
// catalog queries work, every table (TOAST included) reads from start to end, amcheck's bt_index_check on every
// B-tree index (when asked for and installed), the user's own SQL with its expected results, and the page checksum
// failures the server counted. Reading every table is what makes the checksum count mean something: the server
// verifies a page's checksum when it reads it.

import type pg from 'pg'
import type { DrillCheckRecord } from '../repo/index.js'
import { formatRow, type UserCheck } from './check-file.js'

/** Opens a connection to one database of the copy as its superuser; rejects when it cannot. */
export type Connect = (database: string) => Promise<pg.Client>

export interface ServerChecksOptions {
  connect: Connect
  amcheck: boolean
  userChecks: readonly UserCheck[]
  /** The copy's major version (PostgreSQL 14 reports checksum failures through its statistics collector). */
  major: number
  signal?: AbortSignal
  /** Called as each check starts, for progress. */
  onCheck?: (name: string) => void
}

/** At most this many problems are listed per check (the count says how many there were). */
const MAX_LISTED = 5
/** A schema of the drill's own for amcheck when a database does not have the extension. */
const AMCHECK_SCHEMA = 'pgkeep_drill_amcheck'

/** Runs every check in order; never throws for what it finds (that is a failed check), only for an abort. */
export async function runServerChecks(o: ServerChecksOptions): Promise<DrillCheckRecord[]> {
  const results: DrillCheckRecord[] = []
  const clients = new Map<string, pg.Client>()
  const timed = async (name: string, body: () => Promise<{ status: DrillCheckRecord['status']; detail: string }>) => {
    o.signal?.throwIfAborted()
    o.onCheck?.(name)
    const started = Date.now()
    let r: { status: DrillCheckRecord['status']; detail: string }
    try {
      r = await body()
    } catch (err) {
      o.signal?.throwIfAborted()
      r = { status: 'failed', detail: oneLine((err as Error).message) }
    }
    results.push({ name, ...r, durationMs: Date.now() - started })
    return r.status
  }
  try {
    let databases: string[] = []
    let closed: string[] = []
    const connections = await timed('connections', async () => {
      const first = await o.connect('postgres').catch(() => o.connect('template1'))
      const rows = (await first.query<{ datname: string; datallowconn: boolean }>('select datname, datallowconn from pg_database order by datname')).rows
      await first.end().catch(() => {})
      databases = rows.filter((r) => r.datallowconn).map((r) => r.datname)
      closed = rows.filter((r) => !r.datallowconn).map((r) => r.datname)
      const failed: string[] = []
      for (const db of databases) {
        try {
          const c = await o.connect(db)
          await c.query('select 1')
          clients.set(db, c)
        } catch (err) {
          failed.push(`${db}: ${oneLine((err as Error).message)}`)
        }
      }
      const skipped = closed.length ? ` (${closed.join(', ')} ${closed.length === 1 ? 'does' : 'do'} not allow connections)` : ''
      if (failed.length) return { status: 'failed', detail: `${failed.length} of ${databases.length} databases refuse connections: ${list(failed)}` }
      return { status: 'passed', detail: `${databases.length} databases accept connections${skipped}` }
    })
    if (connections !== 'passed') {
      for (const name of ['catalog', 'tables', 'amcheck', 'user-checks', 'checksums']) results.push(skipped(name, 'the connections check failed'))
      return results
    }
    const each = async <T>(fn: (db: string, c: pg.Client) => Promise<T>): Promise<{ db: string; value?: T; error?: string }[]> => {
      const out: { db: string; value?: T; error?: string }[] = []
      for (const [db, c] of clients) {
        o.signal?.throwIfAborted()
        try {
          out.push({ db, value: await fn(db, c) })
        } catch (err) {
          o.signal?.throwIfAborted()
          out.push({ db, error: oneLine((err as Error).message) })
        }
      }
      return out
    }

    await timed('catalog', async () => {
      const r = await each(async (_db, c) => {
        const { rows } = await c.query<{ relations: string; attributes: string; functions: string; types: string }>(
          `select (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace) as relations,
                  (select count(*) from pg_attribute a join pg_class c on c.oid = a.attrelid) as attributes,
                  (select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace) as functions,
                  (select count(*) from pg_type t join pg_namespace n on n.oid = t.typnamespace) as types`,
        )
        // Every relation's definition reads back as SQL (pg_get_* walk the catalogs behind each one).
        await c.query(`select count(pg_get_indexdef(indexrelid)) from pg_index`)
        await c.query(`select count(pg_get_viewdef(c.oid)) from pg_class c where c.relkind in ('v', 'm')`)
        return Number(rows[0]!.relations)
      })
      const failed = r.filter((x) => x.error !== undefined)
      if (failed.length) return { status: 'failed', detail: `catalog queries failed in ${list(failed.map((x) => `${x.db}: ${x.error}`))}` }
      return { status: 'passed', detail: `catalogs of ${r.length} databases read (${sum(r.map((x) => x.value!))} relations)` }
    })

    await timed('tables', async () => {
      let tables = 0
      let bytes = 0
      const problems: string[] = []
      const r = await each(async (db, c) => {
        // Sequential scans only, so every heap page is read (and its checksum verified), not an index instead.
        await c.query('set enable_indexscan = off; set enable_indexonlyscan = off; set enable_bitmapscan = off')
        const { rows } = await c.query<{ name: string; size: string }>(
          `select format('%I.%I', n.nspname, c.relname) as name, pg_relation_size(c.oid)::text as size from pg_class c
           join pg_namespace n on n.oid = c.relnamespace
           where c.relkind in ('r', 'm', 't') and c.relpersistence = 'p' order by c.oid`,
        )
        for (const t of rows) {
          o.signal?.throwIfAborted()
          try {
            await c.query(`select count(*) from only ${t.name}`)
            tables++
            bytes += Number(t.size)
          } catch (err) {
            problems.push(`${db}.${t.name}: ${oneLine((err as Error).message)}`)
          }
        }
      })
      for (const x of r) if (x.error !== undefined) problems.push(`${x.db}: ${x.error}`)
      if (problems.length) return { status: 'failed', detail: `${problems.length} tables could not be read: ${list(problems)}` }
      return { status: 'passed', detail: `${tables} tables read in full (${formatMiB(bytes)})` }
    })

    if (!o.amcheck) results.push(skipped('amcheck', 'not asked for (--amcheck)'))
    else {
      await timed('amcheck', async () => {
        let indexes = 0
        const problems: string[] = []
        let unavailable = false
        const r = await each(async (db, c) => {
          const { rows: avail } = await c.query(`select 1 from pg_available_extensions where name = 'amcheck'`)
          if (avail.length === 0) {
            unavailable = true
            return
          }
          const { rows: have } = await c.query<{ schema: string }>(
            `select n.nspname as schema from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'amcheck'`,
          )
          let schema = have[0]?.schema
          const ours = schema === undefined
          if (ours) {
            // Installed into the copy only, in a schema of its own, and dropped again (the copy is thrown away too).
            await c.query(`create schema ${AMCHECK_SCHEMA}; create extension amcheck schema ${AMCHECK_SCHEMA}`)
            schema = AMCHECK_SCHEMA
          }
          try {
            const { rows } = await c.query<{ oid: number; name: string }>(
              `select c.oid, c.oid::regclass::text as name from pg_index i join pg_class c on c.oid = i.indexrelid
               join pg_am a on a.oid = c.relam where a.amname = 'btree' and c.relpersistence <> 't' and i.indisvalid and i.indisready
               order by c.oid`,
            )
            for (const idx of rows) {
              o.signal?.throwIfAborted()
              try {
                await c.query(`select ${quoteIdent(schema!)}.bt_index_check($1::regclass)`, [idx.oid])
                indexes++
              } catch (err) {
                problems.push(`${db}.${idx.name}: ${oneLine((err as Error).message)}`)
              }
            }
          } finally {
            if (ours) await c.query(`drop schema ${AMCHECK_SCHEMA} cascade`).catch(() => {})
          }
        })
        for (const x of r) if (x.error !== undefined) problems.push(`${x.db}: ${x.error}`)
        if (problems.length) return { status: 'failed', detail: `${problems.length} B-tree indexes failed bt_index_check: ${list(problems)}` }
        if (unavailable && indexes === 0) return { status: 'skipped', detail: 'amcheck is not installed with these PostgreSQL binaries' }
        return { status: 'passed', detail: `${indexes} B-tree indexes passed bt_index_check${unavailable ? ' (amcheck missing for some databases)' : ''}` }
      })
    }

    if (o.userChecks.length === 0) results.push(skipped('user-checks', 'none given (--check FILE)'))
    else await timed('user-checks', () => runUserChecks(o.userChecks, clients, o.connect))

    await timed('checksums', async () => {
      const c = clients.values().next().value!
      const { rows: setting } = await c.query<{ data_checksums: string }>('show data_checksums')
      if (setting[0]?.data_checksums !== 'on') return { status: 'skipped', detail: 'data checksums are off in this cluster' }
      // PostgreSQL 14 counts them in its statistics collector, which hears of a failure a moment later.
      if (o.major < 15) await new Promise((r) => setTimeout(r, 700))
      const fresh = await o.connect(clients.keys().next().value!)
      try {
        const { rows } = await fresh.query<{ datname: string | null; failures: string }>(
          `select datname, checksum_failures::text as failures from pg_stat_database where coalesce(checksum_failures, 0) > 0 order by datname`,
        )
        if (rows.length) {
          const total = rows.reduce((n, r) => n + Number(r.failures), 0)
          return {
            status: 'failed',
            detail: `the server counted ${total} page checksum failures: ${list(rows.map((r) => `${r.datname ?? '(shared catalogs)'}: ${r.failures}`))}`,
          }
        }
        return { status: 'passed', detail: 'no page checksum failures' }
      } finally {
        await fresh.end().catch(() => {})
      }
    })
    return results
  } finally {
    for (const c of clients.values()) await c.end().catch(() => {})
  }
}

/** Runs the user's checks, each in a read-only transaction, comparing the rows as PostgreSQL prints them. */
async function runUserChecks(
  checks: readonly UserCheck[],
  clients: Map<string, pg.Client>,
  connect: Connect,
): Promise<{ status: DrillCheckRecord['status']; detail: string }> {
  const failed: string[] = []
  for (const check of checks) {
    const c = clients.get(check.database) ?? (await connect(check.database).catch((err: Error) => err))
    if (c instanceof Error) {
      failed.push(`'${check.name}': cannot connect to database '${check.database}': ${oneLine(c.message)}`)
      continue
    }
    if (!clients.has(check.database)) clients.set(check.database, c)
    try {
      await c.query('begin read only')
      // Text as the server sends it, one statement only (the extended protocol refuses several).
      const config = { text: check.sql, rowMode: 'array' as const, queryMode: 'extended', types: { getTypeParser: () => (v: string) => v } }
      const res = await c.query<unknown[]>(config as pg.QueryArrayConfig)
      const rows = res.rows.map((r) => r.map((v) => (v === null ? null : String(v))))
      const problem = compare(check, rows)
      if (problem) failed.push(`'${check.name}': ${problem}`)
    } catch (err) {
      failed.push(`'${check.name}': ${oneLine((err as Error).message)}`)
    } finally {
      await c.query('rollback').catch(() => {})
    }
  }
  if (failed.length) return { status: 'failed', detail: `${failed.length} of ${checks.length} user checks failed: ${list(failed)}` }
  return { status: 'passed', detail: `${checks.length} user checks gave the expected results` }
}

function compare(check: UserCheck, rows: (string | null)[][]): string | undefined {
  if ('rowCount' in check.expect) {
    return rows.length === check.expect.rowCount ? undefined : `expected ${check.expect.rowCount} rows, got ${rows.length}`
  }
  const want = check.expect.rows
  for (let i = 0; i < Math.max(want.length, rows.length); i++) {
    const w = want[i]
    const g = rows[i]
    if (w === undefined) return `expected ${want.length} rows, got ${rows.length} (row ${i + 1}: ${formatRow(g!)})`
    if (g === undefined) return `expected ${want.length} rows, got ${rows.length} (missing row ${i + 1}: ${formatRow(w)})`
    if (formatRow(w) !== formatRow(g)) return `row ${i + 1}: expected '${formatRow(w)}', got '${formatRow(g)}'`
  }
  return undefined
}

function skipped(name: string, why: string): DrillCheckRecord {
  return { name, status: 'skipped', detail: why, durationMs: null }
}

function list(items: readonly string[]): string {
  return items.slice(0, MAX_LISTED).join('; ') + (items.length > MAX_LISTED ? `; and ${items.length - MAX_LISTED} more` : '')
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim()
}

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0)
}

function formatMiB(bytes: number): string {
  return bytes < 1 << 20 ? `${(bytes / 1024).toFixed(0)} kB` : `${(bytes / (1 << 20)).toFixed(1)} MB`
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}
