// The compiled tables: one LMDB environment (a directory such as ./var/db)
// holding the named sub-databases rules, uid, gid, lists, spam, and meta (compile
// generation and, per table, its source, time and entry count).
//
// compileTables parses every requested source first and writes only if all
// of them are clean, replacing those tables in ONE write transaction: readers
// see the old tables or the new ones, never half a table or a mix. A bad
// source returns its errors and leaves the environment untouched. Only an
// LMDB failure (disk full, permissions) throws.
//
// openTables is the hot-path reader; a key longer than LMDB can store (a
// 5000-character recipient) is a miss, not an exception. lmdb-js keeps one read transaction per
// environment and resets it on the next timer turn of the event loop (and
// after its own commits), so a long-lived daemon sees a commit made by
// another process (`mailproc db compile`) from the next turn on, with no
// restart and no polling; and lookups made within one synchronous run (all of
// resolveRecipient's) read one snapshot. See NOTES.md.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { TABLE_NAMES, type TableName, type TableValues } from '../classify/rules.js';
import { fitsKey } from '../state/index.js';
import { parseTableSource, type ParseOptions, type SourceError } from './source.js';

export interface TableHit<T extends TableName> {
  /** The lookup key that hit, e.g. "@example.test" for a catch-all. */
  readonly key: string;
  readonly value: TableValues[T];
}

export interface TableReader {
  /** The first of `keys` (most specific first) present in `table`. */
  lookup<T extends TableName>(table: T, keys: readonly string[]): TableHit<T> | undefined;
}

export interface TableInfo {
  /** The source file it was compiled from. */
  readonly source: string;
  /** ISO 8601. */
  readonly compiledAt: string;
  readonly entries: number;
}

export interface TablesInfo {
  /** Goes up by one with every successful compile; 0 = never compiled. */
  readonly generation: number;
  readonly tables: Partial<Record<TableName, TableInfo>>;
}

export interface Tables extends TableReader {
  info(): TablesInfo;
  /** The compile generation alone (one small read): goes up with every compile. */
  generation(): number;
  /** Every key and value of a table, in key order (for listings, not for the hot path). */
  entries<T extends TableName>(table: T): { key: string; value: TableValues[T] }[];
  close(): Promise<void>;
}

export interface CompileOptions {
  /** Holds one source file per table, named after it: rules, uid, gid, lists, spam. */
  readonly sourceDir: string;
  readonly dbDir: string;
  /** Tables to replace; the others are left as they are. Default: all four. */
  readonly tables?: readonly TableName[];
  /** delivery.allow_root: keys whose entries may name root without the "root!" marker. */
  readonly allowRoot?: readonly string[];
}

export type CompileReport =
  | { readonly ok: true; readonly generation: number; readonly tables: Partial<Record<TableName, TableInfo>> }
  | { readonly ok: false; readonly errors: readonly SourceError[] };

interface Environment {
  readonly root: RootDatabase;
  readonly tables: Record<TableName, Database<unknown, string>>;
  readonly meta: Database<unknown, string>;
}

const GENERATION_KEY = 'generation';
const infoKey = (table: TableName): string => `table:${table}`;

function openEnvironment(dbDir: string, readOnly = false): Environment {
  // Room for the other tables ../shared/DESIGN.md expects beside these (queue state, greylist, rates).
  const root = open({ path: dbDir, maxDbs: 16, ...(readOnly ? { readOnly: true } : {}) });
  const openTable = (name: string): Database<unknown, string> => root.openDB<unknown, string>(name, {});
  const tables = Object.fromEntries(TABLE_NAMES.map((t) => [t, openTable(t)])) as Record<TableName, Database<unknown, string>>;
  return { root, tables, meta: openTable('meta') };
}

interface ParsedSource {
  readonly table: TableName;
  readonly file: string;
  readonly entries: Map<string, unknown>;
  readonly errors: readonly SourceError[];
}

/**
 * A missing uid, gid, lists or spam source is an empty table (most sites need no
 * entries there). A missing rules source is an error: it almost always means
 * a wrong source directory, and compiling it would make every address unknown.
 */
async function readSource(table: TableName, sourceDir: string, options: ParseOptions): Promise<ParsedSource> {
  const file = join(sourceDir, table);
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' || table === 'rules') {
      const message = code === 'ENOENT' ? 'missing (the rules table must exist; an empty file is fine)' : `cannot read: ${(e as Error).message}`;
      return { table, file, entries: new Map(), errors: [{ file, line: 0, message }] };
    }
  }
  return { table, file, ...parseTableSource(table, text, file, options) };
}

export async function compileTables(opts: CompileOptions): Promise<CompileReport> {
  const options: ParseOptions = { allowRoot: opts.allowRoot ?? [] };
  const sources = await Promise.all((opts.tables ?? TABLE_NAMES).map((t) => readSource(t, opts.sourceDir, options)));
  return compileParsed(opts.dbDir, sources);
}

/** One table's source text from somewhere other than a file (`mailproc db sync`); file names it in errors and in the table's info. */
export interface TableText {
  readonly table: TableName;
  readonly file: string;
  readonly text: string;
  /** What each entry's origin says (default "FILE:LINE"). */
  readonly originOf?: (line: number) => string;
}

/** compileTables for sources already in memory: the same parser, the same all-or-nothing write. */
export async function compileTableTexts(opts: { readonly dbDir: string; readonly sources: readonly TableText[]; readonly allowRoot?: readonly string[] }): Promise<CompileReport> {
  const options: ParseOptions = { allowRoot: opts.allowRoot ?? [] };
  return compileParsed(opts.dbDir, opts.sources.map((s) => ({
    table: s.table, file: s.file, ...parseTableSource(s.table, s.text, s.file, { ...options, ...(s.originOf !== undefined ? { originOf: s.originOf } : {}) }),
  })));
}

async function compileParsed(dbDir: string, sources: readonly ParsedSource[]): Promise<CompileReport> {
  const errors = sources.flatMap((s) => s.errors);
  if (errors.length > 0) return { ok: false, errors };

  const env = openEnvironment(dbDir);
  try {
    const compiledAt = new Date().toISOString();
    const tables: Partial<Record<TableName, TableInfo>> = {};
    const generation = env.root.transactionSync(() => {
      for (const s of sources) {
        const db = env.tables[s.table];
        db.clearSync();
        for (const [key, value] of s.entries) db.putSync(key, value);
        const info: TableInfo = { source: s.file, compiledAt, entries: s.entries.size };
        env.meta.putSync(infoKey(s.table), info);
        tables[s.table] = info;
      }
      const next = readGeneration(env) + 1;
      env.meta.putSync(GENERATION_KEY, next);
      return next;
    });
    return { ok: true, generation, tables };
  } finally {
    // close() waits for the commit to be flushed, so a CLI may exit right after.
    await env.root.close();
  }
}

function readGeneration(env: Environment): number {
  const g = env.meta.get(GENERATION_KEY);
  return typeof g === 'number' ? g : 0;
}

/** Opens (creating if need be) the environment for lookups; an uncompiled table simply has no entries. */
/** readOnly: for readers that must change nothing (`mailproc db show`); the tables must have been compiled. */
export function openTables(dbDir: string, options: { readonly readOnly?: boolean } = {}): Tables {
  const env = openEnvironment(dbDir, options.readOnly === true);
  return {
    lookup<T extends TableName>(table: T, keys: readonly string[]): TableHit<T> | undefined {
      const db = env.tables[table];
      for (const key of keys) {
        // No such key can be stored (the compiler refuses it), and lmdb-js throws on one.
        if (!fitsKey(key)) continue;
        // Values were written by compileTables from typed records, so they are trusted here.
        const value = db.get(key) as TableValues[T] | undefined;
        if (value !== undefined) return { key, value };
      }
      return undefined;
    },
    generation: () => readGeneration(env),
    entries<T extends TableName>(table: T): { key: string; value: TableValues[T] }[] {
      const out: { key: string; value: TableValues[T] }[] = [];
      for (const { key, value } of env.tables[table].getRange()) out.push({ key, value: value as TableValues[T] });
      return out;
    },
    info(): TablesInfo {
      const tables: Partial<Record<TableName, TableInfo>> = {};
      for (const t of TABLE_NAMES) {
        const info = env.meta.get(infoKey(t)) as TableInfo | undefined;
        if (info !== undefined) tables[t] = info;
      }
      return { generation: readGeneration(env), tables };
    },
    close: () => env.root.close(),
  };
}
