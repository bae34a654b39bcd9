// The policy wire format parser (src/policy/protocol.ts), pure: tables of
// bytes in → items out, the same items however the bytes are split, and the
// size limit counted in bytes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatReply, RequestReader, type ReadItem } from '../../src/policy/protocol.js';

type Want = { request: Record<string, string> } | { malformed: RegExp } | { oversized: number };

function simplify(items: readonly ReadItem[]): unknown[] {
  return items.map((i) => {
    if (i.kind === 'request') {
      // get() finds each attribute in the request text; it must agree with the whole split.
      for (const [name, value] of i.request.attrs) {
        assert.equal(i.request.get(name), value, `get(${name})`);
        assert.equal(i.request.get(name.slice(0, -1)), i.request.attrs.get(name.slice(0, -1)) ?? '', `get(${name.slice(0, -1)}): a prefix of a name is not the name`);
        assert.equal(i.request.get(`x${name}`), i.request.attrs.get(`x${name}`) ?? '', `get(x${name}): nor is a name ending in it`);
      }
      assert.equal(i.request.get('no_such_attribute'), '');
      return { request: Object.fromEntries(i.request.attrs) };
    }
    if (i.kind === 'malformed') return { malformed: i.reason };
    return { oversized: i.limit };
  });
}

function check(got: unknown[], want: Want[], label: string): void {
  assert.equal(got.length, want.length, `${label}: ${JSON.stringify(got)}`);
  want.forEach((w, i) => {
    const g = got[i] as Record<string, unknown>;
    if ('malformed' in w) assert.match(String(g.malformed), w.malformed, label);
    else assert.deepEqual(g, w, label);
  });
}

const R = 'request=smtpd_access_policy\n';

const CASES: { name: string; input: string; want: Want[]; limit?: number }[] = [
  { name: 'one request', input: `${R}sender=a@x\n\n`, want: [{ request: { request: 'smtpd_access_policy', sender: 'a@x' } }] },
  { name: 'an empty value is kept', input: `${R}sender=\n\n`, want: [{ request: { request: 'smtpd_access_policy', sender: '' } }] },
  { name: 'only the first "=" splits', input: `${R}ccert_subject=CN=a=b\n\n`, want: [{ request: { request: 'smtpd_access_policy', ccert_subject: 'CN=a=b' } }] },
  { name: 'CRLF line ends', input: `${R.replace('\n', '\r\n')}sender=a@x\r\n\r\n`, want: [{ request: { request: 'smtpd_access_policy', sender: 'a@x' } }] },
  { name: 'a repeated first attribute: the last wins', input: `sender=a@x\n${R}sender=b@x\n\n`, want: [{ request: { request: 'smtpd_access_policy', sender: 'b@x' } }] },
  { name: 'a value with "\\r" inside and CRLF at the end', input: `${R}sender=a\rb@x\r\n\n`, want: [{ request: { request: 'smtpd_access_policy', sender: 'a\rb@x' } }] },
  { name: 'a repeated attribute: the last wins', input: `${R}sender=a@x\nsender=b@x\n\n`, want: [{ request: { request: 'smtpd_access_policy', sender: 'b@x' } }] },
  { name: 'UTF-8 values', input: `${R}sender=jörg@exämple.test\n\n`, want: [{ request: { request: 'smtpd_access_policy', sender: 'jörg@exämple.test' } }] },
  { name: 'two requests', input: `${R}a=1\n\n${R}a=2\n\n`, want: [{ request: { request: 'smtpd_access_policy', a: '1' } }, { request: { request: 'smtpd_access_policy', a: '2' } }] },
  { name: 'no blank line yet: nothing', input: `${R}a=1\n`, want: [] },
  { name: 'a line without "="', input: `${R}garbage here\n\n`, want: [{ malformed: /line 2 has no "=": "garbage here"/ }] },
  { name: 'an empty name', input: `${R}=x\n\n`, want: [{ malformed: /line 2 has an empty attribute name/ }] },
  { name: 'a blank line alone', input: '\n', want: [{ malformed: /empty request/ }] },
  { name: 'no request attribute', input: 'sender=a@x\n\n', want: [{ malformed: /no "request" attribute/ }] },
  { name: 'another request type', input: 'request=junk\n\n', want: [{ malformed: /unknown request type "junk"/ }] },
  { name: 'malformed, then a good one', input: `x\n\n${R}\n`, want: [{ malformed: /no "="/ }, { request: { request: 'smtpd_access_policy' } }] },
  { name: 'exactly at the limit', input: `${R}a=${'x'.repeat(35)}\n\n`, limit: 28 + 38 + 1, want: [{ request: { request: 'smtpd_access_policy', a: 'x'.repeat(35) } }] },
  { name: 'one byte over the limit', input: `${R}a=${'x'.repeat(35)}\n\n`, limit: 28 + 38, want: [{ oversized: 66 }] },
  { name: 'over the limit without a newline', input: 'x'.repeat(100), limit: 64, want: [{ oversized: 64 }] },
  { name: 'the limit is in bytes, not characters', input: `${R}a=${'ä'.repeat(20)}\n\n`, limit: 28 + 2 + 20 + 1, want: [{ oversized: 51 }] },
];

for (const c of CASES) {
  test(`reader: ${c.name}`, () => {
    const bytes = Buffer.from(c.input);
    check(simplify(new RequestReader(c.limit ?? 4096).push(bytes)), c.want, 'whole');
    // The same items whichever way the bytes are cut: one at a time, and in two at every point.
    const byteWise = new RequestReader(c.limit ?? 4096);
    const items: ReadItem[] = [];
    for (let i = 0; i < bytes.length; i++) items.push(...byteWise.push(bytes.subarray(i, i + 1)));
    check(simplify(items), c.want, 'byte by byte');
    for (let cut = 1; cut < bytes.length; cut++) {
      const r = new RequestReader(c.limit ?? 4096);
      check(simplify([...r.push(bytes.subarray(0, cut)), ...r.push(bytes.subarray(cut))]), c.want, `cut at ${cut}`);
    }
  });
}

test('the reader says whether it is in the middle of a request', () => {
  const r = new RequestReader(4096);
  assert.equal(r.inRequest, false);
  r.push(Buffer.from('request=smtpd_'));
  assert.equal(r.inRequest, true);
  r.push(Buffer.from('access_policy\n'));
  assert.equal(r.inRequest, true);
  assert.equal(r.push(Buffer.from('\n')).length, 1);
  assert.equal(r.inRequest, false);
});

test('after an oversized request the reader reads nothing more', () => {
  const r = new RequestReader(64);
  assert.deepEqual(simplify(r.push(Buffer.from('x'.repeat(65)))), [{ oversized: 64 }]);
  assert.deepEqual(r.push(Buffer.from(`${R}\n`)), []);
});

test('a reply is "action=" the action and a blank line', () => {
  assert.equal(formatReply('DUNNO'), 'action=DUNNO\n\n');
  assert.equal(formatReply('REJECT 5.7.1 Only subscribers may post'), 'action=REJECT 5.7.1 Only subscribers may post\n\n');
});
