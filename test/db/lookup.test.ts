// Recipient resolution (src/db/lookup.ts) against compiled tables: the
// lookup order user+ext@domain → user@domain → user+ext → user → @domain in
// every table, what makes an address known, and the example sources in db/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { parseRecipient } from '../../src/mail/address.js';
import { compileTables, formatSourceError, isKnown, resolveRecipient, type Resolution } from '../../src/db/index.js';
import { makeTempTables } from './temp-tables.js';

const SOURCES = {
  rules: [
    'alice+work@example.test  mbox:/exact',
    'alice@example.test       mbox:/user-at-domain',
    'bob+lists                mbox:/local-with-ext',
    'bob                      mbox:/local',
    '@catchall.test           mbox:/domain',
  ].join('\n'),
  uid: 'carol@example.test carol\n@example.test vmail\n',
  gid: 'dave@example.test staff\n',
  lists: 'dev@example.test open\n',
};

/** The key that hit in each table, "-" for none. */
function hitKeys(r: Resolution): string {
  return [r.rules?.key, r.uid?.key, r.gid?.key, r.list?.key].map((k) => k ?? '-').join(' ');
}

const cases: { address: string; want: string; known: boolean }[] = [
  { address: 'alice+work@example.test', want: 'alice+work@example.test @example.test - -', known: true },
  { address: 'Alice+Home@Example.TEST', want: 'alice@example.test @example.test - -', known: true },
  { address: 'bob+lists@other.test', want: 'bob+lists - - -', known: true },
  { address: 'bob+misc@other.test', want: 'bob - - -', known: true },
  { address: 'bob@other.test', want: 'bob - - -', known: true },
  { address: 'anyone+x@catchall.test', want: '@catchall.test - - -', known: true },
  { address: 'carol@example.test', want: '- carol@example.test - -', known: true },
  { address: 'dev+bounces@example.test', want: '- @example.test - dev@example.test', known: true },
  // A gid alone names no user to deliver as, so it does not make an address known.
  { address: 'dave@other.test', want: '- - - -', known: false },
  { address: 'dave@example.test', want: '- @example.test dave@example.test -', known: true },
  { address: 'nobody@nowhere.test', want: '- - - -', known: false },
];

test('each table is searched in the lookup order and the first key that hits wins', async (t) => {
  const tt = makeTempTables(t);
  tt.write(SOURCES);
  const report = await compileTables(tt);
  assert.ok(report.ok, JSON.stringify(report));
  const tables = tt.open();
  for (const c of cases) {
    const r = resolveRecipient(tables, parseRecipient(c.address, '+'));
    assert.equal(hitKeys(r), c.want, c.address);
    assert.equal(isKnown(r), c.known, c.address);
  }
});

test('the example sources in db/ compile and say what the embedded default expects', async (t) => {
  const tt = makeTempTables(t);
  const sourceDir = fileURLToPath(new URL('../../../db/', import.meta.url));
  const report = await compileTables({ sourceDir, dbDir: tt.dbDir });
  assert.deepEqual(report.ok ? [] : report.errors.map(formatSourceError), []);
  const tables = tt.open();
  const resolve = (a: string): Resolution => resolveRecipient(tables, parseRecipient(a, '+'));

  for (const who of ['alice', 'bob', 'carol']) {
    const r = resolve(`${who}@example.test`);
    assert.ok(isKnown(r), who);
    assert.equal(r.uid, undefined, `${who} has no uid: the configured default applies`);
  }
  const kinds = (a: string): string[] => resolve(a).rules?.value.map((rule) => rule.destination.kind) ?? [];
  assert.deepEqual(kinds('alice@example.test'), ['maildir', 'maildir', 'maildir']);
  const [junkRule, devRule] = resolve('alice@example.test').rules?.value ?? [];
  // First: a score of 5 or more goes to Junk, when SpamAssassin is installed.
  assert.deepEqual([junkRule?.destination, junkRule?.conditions, junkRule?.stop], [
    { kind: 'maildir', path: './var/mail/${user}/Maildir/', folder: 'Junk' },
    [{ kind: 'score', op: '>=', value: 5 }],
    true,
  ]);
  assert.deepEqual([devRule?.destination, devRule?.conditions, devRule?.stop], [
    { kind: 'maildir', path: './var/mail/${user}/Maildir/', folder: 'dev' },
    [{ kind: 'header', name: 'List-Id', pattern: { kind: 'glob', glob: '*dev.example.test*' }, negate: false }],
    true,
  ]);
  assert.equal(resolve('bob+lists@example.test').rules?.key, 'bob@example.test');
  assert.deepEqual(kinds('carol@example.test'), ['mbox']);
  assert.deepEqual(resolve('dev@example.test').list?.value.subscribers, ['alice@example.test', 'bob@example.test']);
  assert.equal(isKnown(resolve('mallory@example.test')), false);
});
