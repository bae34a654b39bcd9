// The X-Spam-* block (src/classify/spam/headers.ts): SpamAssassin's field
// names and forms, folded between tests, nothing from a reason that could
// start a header of its own.
import assert from 'node:assert/strict';
import test from 'node:test';
import { spamHeaders, uncheckedHeader } from '../../../src/classify/spam/index.js';

const cases: { name: string; v: Parameters<typeof spamHeaders>[0]; want: string }[] = [
  {
    name: 'spam: flag YES, one star per whole point, Yes with score, required and tests',
    v: { isSpam: true, score: 7.25, required: 5, tests: ['BAYES_99', 'HTML_MESSAGE'] },
    want: 'X-Spam-Flag: YES\nX-Spam-Level: *******\nX-Spam-Status: Yes, score=7.3 required=5.0 tests=BAYES_99,HTML_MESSAGE\n',
  },
  {
    name: 'ham with a negative score: no stars, tests=none when nothing hit',
    v: { isSpam: false, score: -1.2, required: 5, tests: [] },
    want: 'X-Spam-Flag: NO\nX-Spam-Level: \nX-Spam-Status: No, score=-1.2 required=5.0 tests=none\n',
  },
  {
    name: 'GTUBE: at most 50 stars; a long test list folds at 78 columns with a tab',
    v: { isSpam: true, score: 1000, required: 5, tests: ['GTUBE', 'MISSING_DATE', 'MISSING_MID', 'NO_RECEIVED', 'NO_RELAYS', 'TVD_SPACE_RATIO', 'EMPTY_MESSAGE'] },
    want: `X-Spam-Flag: YES\nX-Spam-Level: ${'*'.repeat(50)}\nX-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE,MISSING_DATE,\n\tMISSING_MID,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO,EMPTY_MESSAGE\n`,
  },
  {
    name: 'a test name that is not a rule name is left out',
    v: { isSpam: false, score: 0, required: 5, tests: ['OK_1', 'BAD\nX-Evil: 1'] },
    want: 'X-Spam-Flag: NO\nX-Spam-Level: \nX-Spam-Status: No, score=0.0 required=5.0 tests=OK_1\n',
  },
];

for (const c of cases) {
  test(`spamHeaders: ${c.name}`, () => {
    assert.equal(spamHeaders(c.v), c.want);
    for (const line of c.want.split('\n').slice(0, -1)) assert.ok(line.length <= 78, `line within 78 columns: ${line}`);
  });
}

test('uncheckedHeader keeps the reason on one line of printable ASCII', () => {
  assert.equal(uncheckedHeader('checker timed out'), 'X-Spam-Status: unchecked (checker timed out)\n');
  assert.equal(uncheckedHeader('bad\r\nX-Spam-Flag: NO'), 'X-Spam-Status: unchecked (bad X-Spam-Flag: NO)\n');
});
