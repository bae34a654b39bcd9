#!/usr/bin/env node
// mailproc: the administrator's command.
//   mailproc db compile [--config FILE] [TABLE…]   compile table sources into LMDB (atomic; errors name file:line)
//   mailproc db show [--config FILE] TABLE KEY      print what a key maps to
// Exit codes: 0 done, 1 errors in the input (nothing was changed), 64 usage.
import { parseArgs } from 'node:util';
import { TABLE_NAMES, type TableName } from '../classify/rules.js';
import { loadConfig } from '../config/index.js';
import { compileTables, formatSourceError, openTables } from '../db/index.js';

const USAGE = `usage: mailproc db compile [--config FILE] [TABLE...]
       mailproc db show [--config FILE] TABLE KEY
tables: ${TABLE_NAMES.join(', ')}
`;

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true });
  } catch (err) {
    process.stderr.write(`mailproc: ${(err as Error).message}\n${USAGE}`);
    return 64;
  }
  const [group, cmd, ...rest] = parsed.positionals;
  if (parsed.values.help || group !== 'db' || (cmd !== 'compile' && cmd !== 'show')) {
    process.stderr.write(USAGE);
    return parsed.values.help ? 0 : 64;
  }
  const config = loadConfig(parsed.values.config);
  if (cmd === 'compile') {
    const bad = rest.filter((t) => !TABLE_NAMES.includes(t as TableName));
    if (bad.length > 0) {
      process.stderr.write(`mailproc: unknown table ${bad.join(', ')}\n${USAGE}`);
      return 64;
    }
    const report = await compileTables({
      sourceDir: config.paths.sources, dbDir: config.paths.db,
      ...(rest.length > 0 ? { tables: rest as TableName[] } : {}),
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
  const [table, key] = rest;
  if (!TABLE_NAMES.includes(table as TableName) || key === undefined) {
    process.stderr.write(USAGE);
    return 64;
  }
  const tables = openTables(config.paths.db);
  const hit = tables.lookup(table as TableName, [key.toLowerCase()]);
  await tables.close();
  if (!hit) {
    process.stderr.write(`mailproc: ${key}: not in ${table}\n`);
    return 1;
  }
  process.stdout.write(`${JSON.stringify(hit.value, null, 2)}\n`);
  return 0;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`mailproc: ${(err as Error).message}\n`);
  process.exit(1);
});
