// Central rows as a table source (src/db/sync-rows.ts): what the line format
// would misread is refused by row and column; the parser's errors come back
// as the rows'.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatSourceError, parseTableSource } from '../../src/db/index.js';
import { rowErrors, rowsToSource, type CentralRow } from '../../src/db/sync-rows.js';

const REL = 'pg#mailprocd_uid';
const row = (key: string, value: string): CentralRow => ({ label: `key=${JSON.stringify(key)}`, key, value });

const refused: { name: string; row: CentralRow; want: string }[] = [
  { name: 'an empty key', row: row('', 'alice'), want: 'pg#mailprocd_uid: row key="", column key: empty key' },
  { name: 'a key with a space', row: row('a b@x', 'alice'), want: 'pg#mailprocd_uid: row key="a b@x", column key: key "a b@x" holds white space or a control character' },
  { name: 'a key that would be a comment', row: row('#a@x', 'alice'), want: 'pg#mailprocd_uid: row key="#a@x", column key: key "#a@x" starts with "#", which a source reads as a comment' },
  { name: 'a value with a line break (another entry\'s words)', row: row('a@x', 'alice\n root'), want: 'pg#mailprocd_uid: row key="a@x", column value: value holds a line break or NUL: one row is one entry on one line' },
  { name: 'a value with a NUL', row: row('a@x', 'ali\0ce'), want: 'pg#mailprocd_uid: row key="a@x", column value: value holds a line break or NUL: one row is one entry on one line' },
];

for (const c of refused) {
  void test(`a central row is refused before parsing: ${c.name}`, () => {
    const s = rowsToSource(REL, [row('ok@x', 'alice'), c.row]);
    assert.deepEqual(s.errors.map(formatSourceError), [c.want]);
    assert.equal(s.text, 'ok@x alice\n', 'only the good row became a line');
  });
}

test('the parser\'s errors name the row and the column: the key\'s characters are "key", the rest "value"; a duplicate names the first row', () => {
  const rows = [row('a@x', 'alice'), row('bad@@x', 'bob'), row('c@x', 'carol extra'), { label: 'id=9', key: 'a@x', value: 'dave' }];
  const s = rowsToSource(REL, rows);
  const parsed = parseTableSource('uid', s.text, REL);
  assert.deepEqual(rowErrors(REL, s, parsed.errors).map(formatSourceError), [
    'pg#mailprocd_uid: row key="bad@@x", column key: bad key "bad@@x" (want user@domain, user+ext@domain, user or @domain)',
    'pg#mailprocd_uid: row key="c@x", column value: want exactly one user name or number after the key',
    'pg#mailprocd_uid: row id=9, column key: duplicate key "a@x" (first given in row key="a@x")',
  ]);
});
