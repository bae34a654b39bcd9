// The LMDB tables (src/db/tables.ts): compile, look up in key order, keep
// the old tables when a source is bad, and let a long-lived reader see a
// compile made by another process without reopening.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { compileTables, formatSourceError, MAX_KEY_BYTES, type Tables } from '../../src/db/index.js';
import { compileInChild, compileInChildSync, makeTempTables, type TempTables } from './temp-tables.js';

const GOOD = {
  rules: 'alice@example.test mbox:/old\n@example.test reject:"5.1.1 no such user"\n',
  uid: 'alice@example.test alice\n',
  gid: 'alice@example.test mail\n',
  lists: 'dev@example.test closed subscribers=alice@example.test\n',
};

async function compileGood(tt: TempTables): Promise<void> {
  tt.write(GOOD);
  const report = await compileTables(tt);
  assert.ok(report.ok, JSON.stringify(report));
}

const mboxPath = (tables: Tables, key: string): string | undefined => {
  const d = tables.lookup('rules', [key])?.value[0]?.destination;
  return d?.kind === 'mbox' ? d.path : undefined;
};

test('a compile writes every table, and lookup returns the first key that hits', async (t) => {
  const tt = makeTempTables(t);
  await compileGood(tt);
  const tables = tt.open();
  assert.deepEqual(tables.lookup('uid', ['nobody@example.test', 'alice@example.test']), { key: 'alice@example.test', value: 'alice' });
  assert.deepEqual(tables.lookup('gid', ['alice@example.test']), { key: 'alice@example.test', value: 'mail' });
  assert.equal(tables.lookup('rules', ['bob@example.test', 'bob', '@example.test'])?.key, '@example.test');
  assert.equal(tables.lookup('rules', ['alice@example.test', '@example.test'])?.key, 'alice@example.test');
  assert.deepEqual(tables.lookup('lists', ['dev@example.test'])?.value, {
    mode: 'closed', manager: '', subscribers: ['alice@example.test'], origin: join(tt.sourceDir, 'lists') + ':1',
  });
  assert.equal(tables.lookup('uid', ['bob@example.test']), undefined);
  const info = tables.info();
  assert.equal(info.generation, 1);
  assert.deepEqual(info.tables.rules && { source: info.tables.rules.source, entries: info.tables.rules.entries }, { source: join(tt.sourceDir, 'rules'), entries: 2 });
});

test('a bad source writes nothing: every error names file:line and the old tables keep answering until it is fixed', async (t) => {
  const tt = makeTempTables(t);
  await compileGood(tt);
  const tables = tt.open();
  tt.write({
    rules: 'alice@example.test mbox:/new\n',
    uid: 'alice@example.test root!\n',
    lists: 'dev@example.test closed\n  subscribers=bob\nops@example.test secret\n',
  });
  const report = await compileTables(tt);
  assert.equal(report.ok, false);
  const lists = join(tt.sourceDir, 'lists');
  assert.deepEqual(!report.ok && report.errors.map(formatSourceError), [
    `${lists}:2: bad subscriber "bob" (want user@domain)`,
    `${lists}:3: list mode must be open, closed or moderated, found "secret"`,
  ]);
  await sleep(5); // let the reader take a fresh snapshot, as the next RCPT would
  assert.equal(mboxPath(tables, 'alice@example.test'), '/old');
  assert.equal(tables.lookup('uid', ['alice@example.test'])?.value, 'alice');
  assert.deepEqual(tables.lookup('lists', ['dev@example.test'])?.value.subscribers, ['alice@example.test']);
  assert.equal(tables.info().generation, 1);

  // Fixed, and compiled in this same process: the open reader sees it and stays usable.
  tt.write({ lists: GOOD.lists });
  assert.ok((await compileTables(tt)).ok);
  await sleep(5);
  assert.equal(mboxPath(tables, 'alice@example.test'), '/new');
  assert.equal(tables.lookup('uid', ['alice@example.test'])?.value, 'root');
});

test('a missing rules source is an error; missing uid, gid and lists sources are empty tables', async (t) => {
  const tt = makeTempTables(t);
  await compileGood(tt);
  for (const table of ['uid', 'gid', 'lists']) rmSync(join(tt.sourceDir, table));
  const report = await compileTables(tt);
  assert.ok(report.ok);
  const tables = tt.open();
  assert.equal(tables.lookup('uid', ['alice@example.test']), undefined);
  assert.equal(tables.lookup('lists', ['dev@example.test']), undefined);
  assert.equal(mboxPath(tables, 'alice@example.test'), '/old');

  rmSync(join(tt.sourceDir, 'rules'));
  const missing = await compileTables(tt);
  assert.deepEqual(!missing.ok && missing.errors.map(formatSourceError), [
    `${join(tt.sourceDir, 'rules')}: missing (the rules table must exist; an empty file is fine)`,
  ]);
});

test('compiling some tables leaves the others as they were', async (t) => {
  const tt = makeTempTables(t);
  await compileGood(tt);
  tt.write({ rules: 'alice@example.test mbox:/new\n', uid: 'alice@example.test 1001\n' });
  const report = await compileTables({ ...tt, tables: ['uid'] });
  assert.deepEqual(report.ok && Object.keys(report.tables), ['uid']);
  const tables = tt.open();
  assert.equal(tables.lookup('uid', ['alice@example.test'])?.value, '1001');
  assert.equal(mboxPath(tables, 'alice@example.test'), '/old');
});

test('a long-lived reader sees a compile made by another process without reopening', async (t) => {
  const tt = makeTempTables(t);
  await compileGood(tt);
  const tables = tt.open();
  assert.equal(mboxPath(tables, 'alice@example.test'), '/old');

  tt.write({ rules: 'alice@example.test mbox:/new\n', uid: '' });
  assert.equal(await compileInChild(tt), 0);
  assert.equal(mboxPath(tables, 'alice@example.test'), '/new');
  assert.equal(tables.lookup('uid', ['alice@example.test']), undefined);
  assert.equal(tables.lookup('rules', ['@example.test']), undefined);
  assert.equal(tables.info().generation, 2);
});

test('lookups in one synchronous run read one snapshot; the next turn reads the new tables', async (t) => {
  const tt = makeTempTables(t);
  await compileGood(tt);
  const tables = tt.open();
  tt.write({ rules: 'alice@example.test mbox:/new\n', uid: 'alice@example.test bob\n' });

  const before = mboxPath(tables, 'alice@example.test');
  assert.equal(compileInChildSync(tt), 0);
  // Same turn of the event loop: still the snapshot the first lookup took, never a mix.
  assert.deepEqual([before, tables.lookup('uid', ['alice@example.test'])?.value], ['/old', 'alice']);
  await sleep(5);
  assert.deepEqual([mboxPath(tables, 'alice@example.test'), tables.lookup('uid', ['alice@example.test'])?.value], ['/new', 'bob']);
});

test('a key of the most bytes LMDB stores compiles and is found; a longer lookup key is a miss, not an exception', async (t) => {
  const tt = makeTempTables(t);
  const longest = `${'é'.repeat((MAX_KEY_BYTES - 2) / 2)}@x`;
  assert.equal(Buffer.byteLength(longest), MAX_KEY_BYTES);
  tt.write({ rules: '', uid: `${longest} alice\n` });
  const report = await compileTables(tt);
  assert.ok(report.ok, JSON.stringify(report));
  const tables = tt.open();
  assert.equal(tables.lookup('uid', [longest])?.value, 'alice');
  // A recipient of thousands of characters (smtp-server takes long lines): each key is a miss.
  const huge = `${'a'.repeat(5000)}@x`;
  assert.equal(tables.lookup('uid', [huge, `${'é'.repeat(990)}@x`, '@x']), undefined);
  // One byte more than LMDB takes is refused by the compiler, so no table can hold it.
  tt.write({ uid: `${longest}x alice\n` });
  const refused = await compileTables(tt);
  assert.deepEqual(!refused.ok && refused.errors.map((e) => e.message), [`key is ${MAX_KEY_BYTES + 1} bytes long, more than the ${MAX_KEY_BYTES} LMDB can store`]);
});

test('uid root compiles only for a key in allowRoot (delivery.allow_root) or written root!; a refusal writes nothing', async (t) => {
  const tt = makeTempTables(t);
  await compileGood(tt);
  tt.write({ uid: 'alice@example.test alice\npostmaster@example.test root\n' });
  const refused = await compileTables(tt);
  assert.deepEqual(!refused.ok && refused.errors.map(formatSourceError), [
    `${join(tt.sourceDir, 'uid')}:2:25: uid "root" is the superuser: deliveries as root need "postmaster@example.test" in delivery.allow_root; write "root!" if this entry means it (db/README.md, "Root")`,
  ]);
  const tables = tt.open();
  assert.equal(tables.lookup('uid', ['postmaster@example.test']), undefined);
  const allowed = await compileTables({ ...tt, allowRoot: ['Postmaster@Example.Test'] });
  assert.ok(allowed.ok, JSON.stringify(allowed));
  await sleep(5);
  assert.equal(tables.lookup('uid', ['postmaster@example.test'])?.value, 'root');
});
