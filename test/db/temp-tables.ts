// Test helper: a temp directory with table sources and a database directory
// inside it, removed when the test ends, and a way to compile from another
// process as `mailproc db compile` would.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { TableName } from '../../src/classify/rules.js';
import { openTables, type Tables } from '../../src/db/index.js';

export interface TempTables {
  readonly sourceDir: string;
  readonly dbDir: string;
  /** Writes the given sources; tables not named are left as they are. */
  write(files: Partial<Record<TableName, string>>): void;
  /** A reader on dbDir, closed before the directory is removed. */
  open(): Tables;
}

export function makeTempTables(t: TestContext): TempTables {
  const root = mkdtempSync(join(tmpdir(), 'mailprocd-db-'));
  const readers: Tables[] = [];
  t.after(async () => {
    await Promise.all(readers.map((r) => r.close()));
    rmSync(root, { recursive: true, force: true });
  });
  const sourceDir = join(root, 'src');
  const dbDir = join(root, 'db');
  mkdirSync(sourceDir);
  return {
    sourceDir,
    dbDir,
    write(files) {
      for (const [table, text] of Object.entries(files)) {
        writeFileSync(join(sourceDir, table), text);
      }
    },
    open() {
      const reader = openTables(dbDir);
      readers.push(reader);
      return reader;
    },
  };
}

const DB_MODULE = new URL('../../src/db/index.js', import.meta.url).href;
const CHILD = `
const { compileTables } = await import(process.argv[1]);
const report = await compileTables({ sourceDir: process.argv[2], dbDir: process.argv[3] });
if (!report.ok) { console.error(JSON.stringify(report.errors)); process.exit(1); }
`;
const childArgs = (tables: TempTables): string[] => ['--input-type=module', '-e', CHILD, DB_MODULE, tables.sourceDir, tables.dbDir];

/** Compiles in a separate node process; resolves with its exit code. */
export function compileInChild(tables: TempTables): Promise<number | null> {
  return new Promise((resolve, reject) => {
    spawn(process.execPath, childArgs(tables), { stdio: 'inherit' }).on('error', reject).on('exit', resolve);
  });
}

/** The same, blocking this process's event loop until the child is done. */
export function compileInChildSync(tables: TempTables): number | null {
  return spawnSync(process.execPath, childArgs(tables), { stdio: 'inherit' }).status;
}
