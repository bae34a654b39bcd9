// `mailproc db compile [TABLE…]`, `mailproc db show TABLE KEY`,
// `mailproc db sync --from URL [--watch] [--init]` and
// `mailproc db transport-map [--output FILE]`: the administrator's tables.
// sync compiles the tables from a central PostgreSQL instead of db/ (the
// same parser and all-or-nothing write; --watch follows changes).
// compile turns the sources under paths.sources into the LMDB tables the
// daemon reads, all or nothing (every error named by file:line, and then
// nothing is compiled); show prints what one key maps to; transport-map
// writes the nodes table as a Postfix transport_maps source, so an MX routes
// each user to their mailbox host (docs/scale-out.md). Works without a
// running daemon. show and transport-map open the tables read-only and
// create nothing: with no compiled tables they say so and exit 1. Exit 0
// done, 1 errors in the sources, no tables, or the key is not there, 64 usage,
// 69 the central database cannot be reached (sync).
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { join } from 'node:path';
import { TABLE_NAMES, type TableName } from '../../classify/rules.js';
import type { Config } from '../../config/index.js';
import { duration } from '../../config/units.js';
import {
  compileTables, formatSourceError, initCentralTables, openTables, redactUrl, syncCentralTables, watchCentralTables,
  type SyncReport, type TableInfo,
} from '../../db/index.js';
import { USAGE } from './usage.js';

async function compile(config: Config, names: readonly string[]): Promise<number> {
  const bad = names.filter((t) => !TABLE_NAMES.includes(t as TableName));
  if (bad.length > 0) {
    process.stderr.write(`mailproc: unknown table ${bad.join(', ')}\n${USAGE}`);
    return 64;
  }
  const report = await compileTables({
    sourceDir: config.paths.sources, dbDir: config.paths.db, allowRoot: config.delivery.allow_root,
    ...(names.length > 0 ? { tables: names as TableName[] } : {}),
  });
  if (!report.ok) {
    for (const e of report.errors) process.stderr.write(`mailproc: ${formatSourceError(e)}\n`);
    process.stderr.write('mailproc: nothing compiled; the tables in use are unchanged\n');
    return 1;
  }
  printCompiled(config, report.generation, report.tables);
  return 0;
}

function printCompiled(config: Config, generation: number, tables: Partial<Record<string, TableInfo>>): void {
  for (const [t, info] of Object.entries(tables)) {
    if (info !== undefined) process.stdout.write(`${t}: ${info.entries} entries from ${info.source}\n`);
  }
  process.stdout.write(`generation ${generation} in ${config.paths.db}\n`);
}

export interface SyncArgs {
  readonly from: string;
  readonly watch?: boolean;
  readonly init?: boolean;
  readonly interval?: string;
}

/** Prints one sync's outcome as compile does; the exit code it stands for. */
function printSync(config: Config, r: SyncReport): number {
  switch (r.kind) {
    case 'compiled':
      printCompiled(config, r.generation, r.tables);
      return 0;
    case 'unchanged':
      return 0;
    case 'errors':
      for (const e of r.errors) process.stderr.write(`mailproc: ${formatSourceError(e)}\n`);
      process.stderr.write('mailproc: nothing compiled; the tables in use are unchanged\n');
      return 1;
    case 'unavailable':
      process.stderr.write(`mailproc: cannot read the central tables: ${r.reason}; the tables in use are unchanged\n`);
      return 69;
  }
}

async function sync(config: Config, a: SyncArgs): Promise<number> {
  if (!/^postgres(?:ql)?:\/\//.test(a.from)) {
    process.stderr.write(`mailproc: --from wants a postgresql:// URL, not ${JSON.stringify(redactUrl(a.from))}\n`);
    return 64;
  }
  const intervalParsed = duration.safeParse(a.interval ?? '60s');
  if (!intervalParsed.success || intervalParsed.data < 1000) {
    process.stderr.write(`mailproc: --interval wants a duration of at least 1s, like 30s or 5m, not ${JSON.stringify(a.interval)}\n`);
    return 64;
  }
  const o = { url: a.from, dbDir: config.paths.db, allowRoot: config.delivery.allow_root };
  if (a.init === true) {
    try {
      await initCentralTables(a.from);
    } catch (err) {
      process.stderr.write(`mailproc: cannot create the central tables in ${redactUrl(a.from)}: ${(err as Error).message}\n`);
      return 69;
    }
  }
  if (a.watch !== true) return printSync(config, await syncCentralTables(o));

  // Follows the central tables until SIGTERM or SIGINT; each sync's outcome is printed as it happens.
  const watch = watchCentralTables({
    ...o,
    intervalMs: intervalParsed.data,
    onReport: (r) => void printSync(config, r),
    onConnection: (up, detail) => process.stderr.write(`mailproc: ${up ? 'central tables reachable again' : 'lost the central tables'}: ${detail}\n`),
    onReady: () => process.stdout.write(`watching ${redactUrl(a.from)} (LISTEN mailprocd_tables, and every ${intervalParsed.data / 1000} s)\n`),
  });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await watch.close();
  return 0;
}

async function show(config: Config, args: readonly string[]): Promise<number> {
  const [table, key] = args;
  if (!TABLE_NAMES.includes(table as TableName) || key === undefined) {
    process.stderr.write(USAGE);
    return 64;
  }
  // Read-only, and only what is there: run from the wrong place, a reader must not leave an empty database behind.
  if (noTables(config)) return 1;
  const tables = openTables(config.paths.db, { readOnly: true });
  const hit = tables.lookup(table as TableName, [key.toLowerCase()]);
  await tables.close();
  if (!hit) {
    process.stderr.write(`mailproc: ${key}: not in ${table}\n`);
    return 1;
  }
  process.stdout.write(`${JSON.stringify(hit.value, null, 2)}\n`);
  return 0;
}

function noTables(config: Config): boolean {
  if (existsSync(join(config.paths.db, 'data.mdb'))) return false;
  process.stderr.write(`mailproc: no compiled tables in ${config.paths.db} (configuration: ${config.file ?? 'the embedded default'}); compile them with mailproc db compile, or give --config\n`);
  return true;
}

/**
 * The nodes table as transport(5) lines. "@domain" becomes "domain" (the
 * form transport(5) matches a whole domain by); user@domain and
 * user+ext@domain stay, and Postfix tries them in that order with
 * recipient_delimiter set, as our lookup does.
 */
export function transportMapLines(entries: readonly { key: string; value: string }[]): string[] {
  const lines = entries.map(({ key, value }) => ({ key: key.startsWith('@') ? key.slice(1) : key, value }));
  const domainOf = (k: string): string => k.slice(k.indexOf('@') + 1);
  lines.sort((a, b) => domainOf(a.key).localeCompare(domainOf(b.key)) || Number(a.key.includes('@')) - Number(b.key.includes('@')) || a.key.localeCompare(b.key));
  return lines.map(({ key, value }) => `${key}\t${value}`);
}

async function transportMap(config: Config, output: string | undefined): Promise<number> {
  if (noTables(config)) return 1;
  const tables = openTables(config.paths.db, { readOnly: true });
  const entries = tables.entries('nodes');
  const info = tables.info().tables.nodes;
  await tables.close();
  if (entries.length === 0) process.stderr.write(`mailproc: the nodes table is empty${info === undefined ? ' (never compiled)' : ''}: every address stays on Postfix's default transport\n`);
  const text = [
    '# Postfix transport_maps source: which mailbox host each address lives on.',
    `# Written by mailproc db transport-map from the nodes table${info !== undefined ? ` (${info.source}, compiled ${info.compiledAt})` : ''}.`,
    '# Do not edit: change the nodes source, run mailproc db compile, then this again, then postmap.',
    ...transportMapLines(entries),
    '',
  ].join('\n');
  if (output === undefined) {
    process.stdout.write(text);
    return 0;
  }
  // Whole or not at all: postmap must never read half a file.
  const tmp = join(dirname(output), `.${output.split('/').pop() ?? 'transport'}.${process.pid}.tmp`);
  try {
    const fd = openSync(tmp, 'wx', 0o644);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, output);
  } catch (err) {
    rmSync(tmp, { force: true });
    process.stderr.write(`mailproc: cannot write ${output}: ${(err as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`${entries.length} addresses and domains written to ${output}; now run: postmap ${output}\n`);
  return 0;
}

/** `mailproc db sync`: its options come parsed (the dispatcher checked them). */
export function runDbSync(config: Config, a: SyncArgs): Promise<number> {
  return sync(config, a);
}

/** verb: compile, show or transport-map (the dispatcher checked); args: the words after it. */
export function runDb(config: Config, verb: 'compile' | 'show' | 'transport-map', args: readonly string[]): Promise<number> {
  if (verb === 'transport-map') return transportMap(config, args[0]);
  return verb === 'compile' ? compile(config, args) : show(config, args);
}
