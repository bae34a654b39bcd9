// `mailproc db compile [TABLE…]` and `mailproc db show TABLE KEY`: the
// administrator's tables. compile turns the sources under paths.sources into
// the LMDB tables the daemon reads, all or nothing (every error named by
// file:line, and then nothing is compiled); show prints what one key maps to.
// Works without a running daemon. show opens the tables read-only and
// creates nothing: with no compiled tables it says so and exits 1. Exit 0
// done, 1 errors in the sources, no tables, or the key is not there, 64 usage.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { TABLE_NAMES, type TableName } from '../../classify/rules.js';
import type { Config } from '../../config/index.js';
import { compileTables, formatSourceError, openTables } from '../../db/index.js';
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
  for (const [t, info] of Object.entries(report.tables)) {
    process.stdout.write(`${t}: ${info.entries} entries from ${info.source}\n`);
  }
  process.stdout.write(`generation ${report.generation} in ${config.paths.db}\n`);
  return 0;
}

async function show(config: Config, args: readonly string[]): Promise<number> {
  const [table, key] = args;
  if (!TABLE_NAMES.includes(table as TableName) || key === undefined) {
    process.stderr.write(USAGE);
    return 64;
  }
  // Read-only, and only what is there: run from the wrong place, a reader must not leave an empty database behind.
  if (!existsSync(join(config.paths.db, 'data.mdb'))) {
    process.stderr.write(`mailproc: no compiled tables in ${config.paths.db} (configuration: ${config.file ?? 'the embedded default'}); compile them with mailproc db compile, or give --config\n`);
    return 1;
  }
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

/** verb: compile or show (the dispatcher checked); args: the words after it. */
export function runDb(config: Config, verb: 'compile' | 'show', args: readonly string[]): Promise<number> {
  return verb === 'compile' ? compile(config, args) : show(config, args);
}
