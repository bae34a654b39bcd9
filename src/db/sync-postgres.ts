// `mailproc db sync --from postgresql://…`: the tables from a central
// PostgreSQL, compiled into this node's LMDB exactly as `db compile` compiles
// db/ (one parser, all or nothing, one transaction). Every node keeps serving
// from its own compiled tables while the database is down.
//
// The central tables (or views an administrator writes over their own user
// database) are mailprocd_rules, _uid, _gid, _lists, _spam and _nodes, each
// with text columns key and value (value is what follows the key on a line
// of the db/ source); mailprocd_rules also has an id that orders each key's
// rules. mailprocd_rules must exist; a missing other one is an empty table,
// as a missing file is. initCentralTables creates them, with a statement
// trigger that NOTIFYs channel mailprocd_tables on every change.
//
// All six are read in one REPEATABLE READ transaction, so a node never
// compiles half of an administrator's change. watchCentralTables LISTENs on
// mailprocd_tables, syncs on each notification (changes arriving while a
// sync runs are taken by one more run) and every interval, compiles only
// when the rows changed, and reconnects by itself after an outage, logging
// once when it is lost and once when it is back.
//
// Exports: CENTRAL_CHANNEL, centralRelation, redactUrl, initCentralTables,
// syncCentralTables, watchCentralTables, SyncReport, CentralWatch.
//
// Failure contract: a row the source format cannot hold, or that the parser
// refuses, is an error naming relation, row and column, and nothing is
// compiled. A database that cannot be reached, a missing column or a
// permission problem is a SyncReport with kind "unavailable" (nothing is
// compiled). Only an LMDB failure throws.
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { TABLE_NAMES, type TableName } from '../classify/rules.js';
import { parseTableSource, type SourceError } from './source.js';
import { rowErrors, rowsToSource, type CentralRow, type RowsSource } from './sync-rows.js';
import { compileTableTexts, type TableInfo, type TableText } from './tables.js';

export const CENTRAL_CHANNEL = 'mailprocd_tables';
export const centralRelation = (table: TableName): string => `mailprocd_${table}`;

/** The URL without its password, for logs and the tables' info (a password on a command line shows in ps: prefer PGPASSWORD or ~/.pgpass). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return 'postgresql://(unparsable URL)';
  }
}

export type SyncReport =
  | { readonly kind: 'compiled'; readonly generation: number; readonly tables: Partial<Record<TableName, TableInfo>> }
  | { readonly kind: 'unchanged' }
  | { readonly kind: 'errors'; readonly errors: readonly SourceError[] }
  | { readonly kind: 'unavailable'; readonly reason: string };

export interface SyncOptions {
  readonly url: string;
  readonly dbDir: string;
  /** delivery.allow_root, as db compile takes it. */
  readonly allowRoot?: readonly string[];
}

const CONNECT_TIMEOUT_MS = 10_000;
const STATEMENT_TIMEOUT_MS = 60_000;

// pg is loaded on the first sync, not with this folder: a daemon, and a host
// whose tables come from db/, never carry it.
let pgModule: Promise<typeof pg> | undefined;
const loadPg = (): Promise<typeof pg> => (pgModule ??= import('pg').then((m) => m.default));

async function client(url: string): Promise<pg.Client> {
  const { Client } = await loadPg();
  return new Client({ connectionString: url, connectionTimeoutMillis: CONNECT_TIMEOUT_MS, statement_timeout: STATEMENT_TIMEOUT_MS, application_name: 'mailproc db sync' });
}

/** Creates the central tables and their change triggers where missing (PostgreSQL 14 or later). */
export async function initCentralTables(url: string): Promise<void> {
  const c = await client(url);
  await c.connect();
  try {
    await c.query('BEGIN');
    await c.query(`CREATE OR REPLACE FUNCTION mailprocd_tables_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('${CENTRAL_CHANNEL}', TG_TABLE_NAME); RETURN NULL; END $$`);
    for (const t of TABLE_NAMES) {
      const rel = centralRelation(t);
      await c.query(t === 'rules'
        ? `CREATE TABLE IF NOT EXISTS ${rel} (id bigserial PRIMARY KEY, key text NOT NULL, value text NOT NULL)`
        : `CREATE TABLE IF NOT EXISTS ${rel} (key text PRIMARY KEY, value text NOT NULL)`);
      await c.query(`CREATE OR REPLACE TRIGGER ${rel}_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${rel} FOR EACH STATEMENT EXECUTE FUNCTION mailprocd_tables_changed()`);
    }
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    await c.end().catch(() => undefined);
  }
}

interface CentralRead {
  readonly texts: TableText[];
  readonly sources: Map<string, { relation: string; rows: RowsSource }>;
  readonly errors: SourceError[];
  readonly fingerprint: string;
}

async function readCentral(c: pg.Client, url: string): Promise<CentralRead> {
  const where = redactUrl(url);
  const texts: TableText[] = [];
  const sources = new Map<string, { relation: string; rows: RowsSource }>();
  const errors: SourceError[] = [];
  const hash = createHash('sha256');
  // One snapshot for all six: a change that spans tables is seen whole or not at all.
  await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    for (const t of TABLE_NAMES) {
      const relation = centralRelation(t);
      const file = `${where}#${relation}`;
      const exists = await c.query<{ r: string | null }>('SELECT to_regclass($1)::text AS r', [relation]);
      if (exists.rows[0]?.r === null || exists.rows[0]?.r === undefined) {
        if (t === 'rules') errors.push({ file, line: 0, message: 'missing (the rules table must exist; an empty one is fine; mailproc db sync --init creates them)' });
        texts.push({ table: t, file, text: '' });
        hash.update(`${t}\0\0`);
        continue;
      }
      const r = t === 'rules'
        ? await c.query<{ id: string; key: string; value: string }>(`SELECT id::text AS id, key::text AS key, value::text AS value FROM ${relation} ORDER BY id`)
        : await c.query<{ key: string; value: string }>(`SELECT key::text AS key, value::text AS value FROM ${relation} ORDER BY key`);
      const rows: CentralRow[] = r.rows.map((row) => ({
        label: 'id' in row ? `id=${row.id}` : `key=${JSON.stringify(row.key)}`,
        key: row.key ?? '',
        value: row.value ?? '',
      }));
      const rowsSource = rowsToSource(file, rows);
      errors.push(...rowsSource.errors);
      sources.set(file, { relation, rows: rowsSource });
      texts.push({ table: t, file, text: rowsSource.text, originOf: (line) => `${relation} row ${rowsSource.lineRows[line - 1]?.label ?? '?'}` });
      hash.update(`${t}\0${rowsSource.text}\0`);
    }
  } finally {
    await c.query('COMMIT').catch(() => undefined);
  }
  return { texts, sources, errors, fingerprint: hash.digest('hex') };
}

async function compileRead(read: CentralRead, o: SyncOptions): Promise<SyncReport> {
  const asRows = (errors: readonly SourceError[]): SourceError[] => errors.flatMap((e) => {
    const s = read.sources.get(e.file);
    return s === undefined ? [e] : rowErrors(e.file, s.rows, [e]);
  });
  if (read.errors.length > 0) {
    // Rows refused before parsing: the other rows are still parsed, so one run reports every error (and nothing is written).
    const parsed = read.texts.flatMap((t) => parseTableSource(t.table, t.text, t.file, { allowRoot: o.allowRoot ?? [] }).errors);
    return { kind: 'errors', errors: [...read.errors, ...asRows(parsed)] };
  }
  const report = await compileTableTexts({ dbDir: o.dbDir, sources: read.texts, ...(o.allowRoot !== undefined ? { allowRoot: o.allowRoot } : {}) });
  if (report.ok) return { kind: 'compiled', generation: report.generation, tables: report.tables };
  return { kind: 'errors', errors: asRows(report.errors) };
}

const reasonOf = (err: unknown): string => {
  const e = err as Error & { code?: string };
  return e.code !== undefined && !e.message.includes(e.code) ? `${e.message} (${e.code})` : e.message;
};

/** One sync: read every central table, compile them all or nothing. */
export async function syncCentralTables(o: SyncOptions): Promise<SyncReport> {
  let c: pg.Client | undefined;
  let read: CentralRead;
  try {
    c = await client(o.url);
    await c.connect();
    read = await readCentral(c, o.url);
  } catch (err) {
    return { kind: 'unavailable', reason: `${redactUrl(o.url)}: ${reasonOf(err)}` };
  } finally {
    await c?.end().catch(() => undefined);
  }
  return compileRead(read, o);
}

export interface CentralWatch {
  /** Stops listening and waits for a sync in progress. */
  close(): Promise<void>;
}

export interface WatchOptions extends SyncOptions {
  /** A sync at least this often, notifications or not (a view over other tables sends none). */
  readonly intervalMs: number;
  /** Every sync's outcome (unchanged ones too). */
  readonly onReport: (report: SyncReport) => void;
  /** Once per outage, and once when the database answers again. */
  readonly onConnection: (up: boolean, detail: string) => void;
  /** The first LISTEN is in place and the first sync done. */
  readonly onReady?: () => void;
}

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30_000;

/** Keeps this node's tables following the central ones until close(). */
export function watchCentralTables(o: WatchOptions): CentralWatch {
  let closed = false;
  let current: pg.Client | undefined;
  let lastFingerprint: string | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let down = false;
  let readySent = false;
  let retryMs = RETRY_MIN_MS;
  let retryTimer: NodeJS.Timeout | undefined;

  const sync = (): Promise<void> => {
    if (running !== undefined) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        const c = current;
        if (c === undefined || closed) return;
        let read: CentralRead;
        try {
          read = await readCentral(c, o.url);
        } catch (err) {
          lost(err);
          return;
        }
        if (read.errors.length === 0 && read.fingerprint === lastFingerprint) {
          o.onReport({ kind: 'unchanged' });
          continue;
        }
        const report = await compileRead(read, o);
        if (report.kind === 'compiled') lastFingerprint = read.fingerprint;
        o.onReport(report);
      } while (again && !closed);
    })().finally(() => {
      running = undefined;
    });
    return running;
  };

  const lost = (err: unknown): void => {
    const c = current;
    current = undefined;
    void c?.end().catch(() => undefined);
    if (closed) return;
    if (!down) {
      down = true;
      o.onConnection(false, `${redactUrl(o.url)}: ${reasonOf(err)}; serving the tables compiled last`);
    }
    retryTimer = setTimeout(() => void connect(), retryMs);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  };

  const connect = async (): Promise<void> => {
    retryTimer = undefined;
    if (closed) return;
    let c: pg.Client;
    try {
      c = await client(o.url);
    } catch (err) {
      lost(err);
      return;
    }
    c.on('error', (err) => {
      if (current === c) lost(err);
    });
    c.on('end', () => {
      if (current === c) lost(new Error('connection closed'));
    });
    c.on('notification', (n) => {
      if (n.channel === CENTRAL_CHANNEL) void sync();
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${CENTRAL_CHANNEL}`);
    } catch (err) {
      current = c;
      lost(err);
      return;
    }
    if (closed) {
      await c.end().catch(() => undefined);
      return;
    }
    current = c;
    retryMs = RETRY_MIN_MS;
    if (down) {
      down = false;
      o.onConnection(true, `${redactUrl(o.url)}: connected again`);
    }
    // What changed while we were away is read now.
    await sync();
    if (!readySent && current !== undefined) {
      readySent = true;
      o.onReady?.();
    }
  };

  const timer = setInterval(() => {
    if (current !== undefined) void sync();
  }, o.intervalMs);
  void connect();

  return {
    async close() {
      closed = true;
      clearInterval(timer);
      if (retryTimer !== undefined) clearTimeout(retryTimer);
      await running;
      const c = current;
      current = undefined;
      await c?.end().catch(() => undefined);
    },
  };
}
