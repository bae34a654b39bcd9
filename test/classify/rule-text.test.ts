// Rules written back as table text (src/classify/rule-text.ts): what
// `mailproc rules list/test/log` show parses back to the same rule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatRule } from '../../src/classify/rule-text.js';
import { parseTableSource } from '../../src/db/index.js';

const lines = [
  'maildir:/m folder=dev header:List-Id=*dev.example.test* stop',
  'maildir:"/m/Old Mail" folder="Old Mail"',
  'mbox:${home}/mbox !sender=*@example.org size>=10240',
  "pipe:\"/usr/bin/filter 'two words' -v\"",
  'forward:carol@elsewhere.example spam',
  'discard !spam score<-1.5',
  'reject:"5.7.1 Not here" extension~/^x\\d+$/i',
  'reject:4.2.1',
  'list:dev@example.test',
  'maildir:/archive uid=vmail gid=mail maxsize=1048576 concurrency=4 locked',
  'maildir:/m "header:Subject=two words"',
  'vacation text="Away.\\nBack Monday." !header:List-Id=* stop',
  String.raw`vacation "text=Path C:\\dir\\n and \d"`,
  'vacation text=x "subject=Out \\"now\\"" days=14 from=a@x.test until=2026-08-31 addresses=a@x.test,b@x.test',
  'vacation text_file=/etc/vacation/${user}.txt days=7 locked',
];

for (const line of lines) {
  test(`a rule written back as text parses to the same rule: ${line}`, () => {
    const first = parseTableSource('rules', `k ${line}\n`, 'db/rules');
    assert.deepEqual(first.errors, []);
    const rule = first.entries.get('k')?.[0];
    assert.ok(rule);
    const again = parseTableSource('rules', `k ${formatRule(rule)}\n`, 'db/rules');
    assert.deepEqual(again.errors, [], formatRule(rule));
    assert.deepEqual(again.entries.get('k')?.[0], rule);
  });
}
