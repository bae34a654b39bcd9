// The text `mailproc rules` prints, from the daemon's replies: golden pairs
// for `rules test` (test/cli/golden/rules-test/NAME.json holds a report as
// the daemon sends it, NAME.out exactly what the owner reads), and tables for
// `rules list`, `rules log` and the helpers. To add a case, add both files;
// MAILPROC_UPDATE_GOLDEN=1 writes the .out files from the current code
// (read every changed one before committing it).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  formatBytes, formatDecisionLog, formatRuleList, formatTestReport, printable,
  type DecisionLogView, type RuleListView, type TestReport,
} from '../../src/cli/mailproc/rules.js';

const GOLDEN = fileURLToPath(new URL('../../../test/cli/golden/rules-test/', import.meta.url));
const cases = readdirSync(GOLDEN).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();

describe('rules test: golden reports', () => {
  test('there are golden cases, each with its .out', () => {
    assert.ok(cases.length >= 5, `only ${cases.length} cases in ${GOLDEN}`);
    if (process.env.MAILPROC_UPDATE_GOLDEN === '1') return;
    for (const name of cases) assert.doesNotThrow(() => readFileSync(join(GOLDEN, `${name}.out`)), `${name}.out missing`);
  });

  for (const name of cases) {
    test(`${name}: the report prints exactly the golden text`, () => {
      const report = JSON.parse(readFileSync(join(GOLDEN, `${name}.json`), 'utf8')) as TestReport;
      const got = formatTestReport(report);
      if (process.env.MAILPROC_UPDATE_GOLDEN === '1') writeFileSync(join(GOLDEN, `${name}.out`), got);
      assert.equal(got, readFileSync(join(GOLDEN, `${name}.out`), 'utf8'));
    });
  }

  test('every line of every golden text is printable: no control character reaches the terminal', () => {
    for (const name of cases) {
      const got = formatTestReport(JSON.parse(readFileSync(join(GOLDEN, `${name}.json`), 'utf8')) as TestReport);
      assert.doesNotMatch(got.replaceAll('\n', ''), /[\p{Cc}\u202a-\u202e\u2066-\u2069]/u, name);
    }
  });
});

const LIST: RuleListView = {
  address: 'alice@example.test',
  owner: 'alice',
  rules: [{ n: 1, text: 'folder:Invoices header:Subject=Invoice* stop' }, { n: 2, text: 'folder:Lists header:List-Id=*' }],
  locked: [{ origin: 'db/rules:3', text: 'maildir:/srv/archive/Maildir/ uid=archive locked' }],
  admin: [{ origin: 'db/rules:5', text: 'maildir:/var/mail/alice/Maildir/' }, { origin: 'db/rules:12', text: 'pipe:"/usr/local/bin/archive alice" size<1M' }],
  updatedAt: '2025-01-06T10:00:00.000Z',
};

describe('rules list: the three layers in evaluation order', () => {
  const cases: { name: string; view: RuleListView; want: string }[] = [
    {
      name: 'locked rules first, then the owner\'s numbered from 1, then the administrator\'s others, each with its origin',
      view: LIST,
      want: `alice@example.test (owner alice)

Locked rules of the administrator, evaluated first (they apply whatever yours say):
  db/rules:3  maildir:/srv/archive/Maildir/ uid=archive locked
Your rules, evaluated next:
  1  folder:Invoices header:Subject=Invoice* stop
  2  folder:Lists header:List-Id=*
The administrator's other rules, evaluated after yours:
  db/rules:5   maildir:/var/mail/alice/Maildir/
  db/rules:12  pipe:"/usr/local/bin/archive alice" size<1M
When no rule delivers a copy, the message goes to the default destination.
Your rules were last changed at 2025-01-06T10:00:00.000Z.
`,
    },
    {
      name: 'empty layers say (none), and an address never changed says so',
      view: { address: 'bob@example.test', rules: [], locked: [], admin: [], updatedAt: null },
      want: `bob@example.test

Locked rules of the administrator, evaluated first (they apply whatever yours say):
  (none)
Your rules, evaluated next:
  (none)
The administrator's other rules, evaluated after yours:
  (none)
When no rule delivers a copy, the message goes to the default destination.
Your rules were never changed.
`,
    },
    {
      name: 'ten rules or more keep their texts in one column',
      view: { ...LIST, locked: [], admin: [], rules: Array.from({ length: 10 }, (_, i) => ({ n: i + 1, text: `folder:F${i + 1}` })) },
      want: `alice@example.test (owner alice)

Locked rules of the administrator, evaluated first (they apply whatever yours say):
  (none)
Your rules, evaluated next:
${Array.from({ length: 10 }, (_, i) => `  ${String(i + 1).padEnd(2)}  folder:F${i + 1}`).join('\n')}
The administrator's other rules, evaluated after yours:
  (none)
When no rule delivers a copy, the message goes to the default destination.
Your rules were last changed at 2025-01-06T10:00:00.000Z.
`,
    },
  ];
  for (const c of cases) test(c.name, () => assert.equal(formatRuleList(c.view), c.want));
});

describe('rules log: each message, and which rule placed each copy where', () => {
  const cases: { name: string; view: DecisionLogView; want: string }[] = [
    {
      name: 'an owner\'s rule, a locked copy and the default are each named, with the rule\'s text',
      view: {
        address: 'alice@example.test',
        entries: [
          {
            time: '2025-01-06T10:00:00.000Z', queueId: '3F2A1B0C', recipient: 'alice+x@example.test', sender: 'bob@example.org',
            subject: 'Invoice 12', status: '2.0.0',
            copies: [
              { origin: 'db/rules:3', rule: 'maildir:/srv/archive/Maildir/ uid=archive locked', destination: 'maildir:/srv/archive/Maildir/', user: 'archive' },
              { origin: 'yours:1', rule: 'folder:Invoices header:Subject=Invoice* stop', destination: 'maildir:/var/mail/alice/Maildir/ folder=Invoices', user: 'alice' },
            ],
          },
          {
            time: '2025-01-06T10:05:00.000Z', queueId: '3F2A1B0D', recipient: 'alice@example.test', sender: '', subject: '', status: '2.0.0',
            copies: [{ origin: 'default', destination: 'maildir:/var/mail/alice/Maildir/', user: 'alice' }],
          },
        ],
      },
      want: `2025-01-06T10:00:00.000Z  3F2A1B0C  2.0.0  to alice+x@example.test
  from     bob@example.org
  subject  Invoice 12
  copy     maildir:/srv/archive/Maildir/  as archive
           by rule db/rules:3: maildir:/srv/archive/Maildir/ uid=archive locked
  copy     maildir:/var/mail/alice/Maildir/ folder=Invoices  as alice
           by your rule 1: folder:Invoices header:Subject=Invoice* stop

2025-01-06T10:05:00.000Z  3F2A1B0D  2.0.0  to alice@example.test
  from     <> (the null sender)
  subject  (none)
  copy     maildir:/var/mail/alice/Maildir/  as alice
           by the default: no rule delivered a copy
`,
    },
    {
      name: 'a subject with an escape sequence and a line break is shown escaped, on one line',
      view: {
        address: 'alice@example.test',
        entries: [{
          time: '2025-01-06T10:00:00.000Z', queueId: 'Q1', recipient: 'alice@example.test', sender: 'x@evil.example',
          subject: 'Hi\u001b]0;owned\u0007\r\nX: y', status: '2.0.0',
          copies: [{ origin: 'yours:2', destination: 'maildir:/var/mail/alice/Maildir/', user: 'alice' }],
        }],
      },
      want: `2025-01-06T10:00:00.000Z  Q1  2.0.0  to alice@example.test
  from     x@evil.example
  subject  Hi\\x1b]0;owned\\x07\\x0d\\x0aX: y
  copy     maildir:/var/mail/alice/Maildir/  as alice
           by your rule 2
`,
    },
    {
      name: 'no entries: one line says so',
      view: { address: 'alice@example.test', entries: [] },
      want: 'alice@example.test: no deliveries logged\n',
    },
  ];
  for (const c of cases) test(c.name, () => assert.equal(formatDecisionLog(c.view), c.want));
});

describe('helpers', () => {
  test('printable escapes control characters and bidirectional overrides, and keeps every other character', () => {
    const cases: [string, string][] = [
      ['Invoice 12', 'Invoice 12'],
      ['Café 😀 Ünïcödé', 'Café 😀 Ünïcödé'],
      ['a\tb', 'a\\x09b'],
      ['\u001b[31mred', '\\x1b[31mred'],
      ['line\r\nnext', 'line\\x0d\\x0anext'],
      ['\u0085 NEL', '\\x85 NEL'],
      ['abc\u202edcba', 'abc\\u202edcba'],
      ['\u2066x\u2069', '\\u2066x\\u2069'],
    ];
    for (const [input, want] of cases) assert.equal(printable(input), want, JSON.stringify(input));
  });

  test('formatBytes gives the exact count, and a rounded binary unit from 1k', () => {
    const cases: [number, string][] = [
      [0, '0 bytes'], [1, '1 byte'], [1023, '1023 bytes'], [1024, '1024 bytes (1.0k)'],
      [1536, '1536 bytes (1.5k)'], [10 * 1024 * 1024, '10485760 bytes (10.0M)'], [3 * 1024 ** 3, '3221225472 bytes (3.0G)'],
    ];
    for (const [n, want] of cases) assert.equal(formatBytes(n), want, String(n));
  });
});
