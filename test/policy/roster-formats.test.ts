// The roster parsers (src/policy/roster-formats.ts), pure: Mailman 3 REST
// pages and subscriber files in, addresses or an error out.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseMailmanPage, parseSubscriberFile } from '../../src/policy/roster-formats.js';

const PAGES: { name: string; body: unknown; want: unknown }[] = [
  {
    name: 'entries with emails, lower-cased',
    body: { start: 0, total_size: 2, entries: [{ email: 'A@X.test', role: 'member' }, { email: 'b@x.test' }] },
    want: { ok: true, emails: ['a@x.test', 'b@x.test'], skipped: [], total: 2 },
  },
  { name: 'an empty roster has no entries key', body: { start: 0, total_size: 0, http_etag: '"e"' }, want: { ok: true, emails: [], skipped: [], total: 0 } },
  {
    name: 'an entry without a usable email is skipped and named',
    body: { total_size: 3, entries: [{ email: 'ok@x.test' }, { email: 'no at sign' }, { role: 'member' }] },
    want: { ok: true, emails: ['ok@x.test'], skipped: ['"no at sign"', '{"role":"member"}'], total: 3 },
  },
  {
    name: 'an address over 254 bytes is skipped',
    body: { total_size: 2, entries: [{ email: 'ok@x.test' }, { email: `${'l'.repeat(4076)}@x.test` }] },
    want: { ok: true, emails: ['ok@x.test'], skipped: [`"${'l'.repeat(99)}`], total: 2 },
  },
  { name: 'not an object', body: [1, 2], want: { ok: false, error: 'expected a JSON object' } },
  { name: 'no total_size', body: { entries: [] }, want: { ok: false, error: 'no total_size' } },
  { name: 'entries not an array', body: { total_size: 1, entries: { email: 'a@x' } }, want: { ok: false, error: '"entries" is not an array' } },
];

for (const c of PAGES) {
  test(`Mailman page: ${c.name}`, () => assert.deepEqual(parseMailmanPage(c.body), c.want));
}

const FILES: { name: string; text: string; want: unknown }[] = [
  { name: 'one address a line', text: 'a@x.test\nb@x.test\n', want: { emails: ['a@x.test', 'b@x.test'], skipped: [] } },
  { name: 'comments, blank lines, white space and CRLF', text: '# list\r\n\r\n  A@X.test \r\n   # indented comment\n', want: { emails: ['a@x.test'], skipped: [] } },
  { name: 'a line that is no address', text: 'a@x.test\nsomething else\n', want: { emails: ['a@x.test'], skipped: ['something else'] } },
  { name: 'an empty file', text: '', want: { emails: [], skipped: [] } },
  {
    name: 'an address over 254 bytes (RFC 5321\'s path limit; one too long for a key would fail the whole sync) is skipped',
    text: `${'a'.repeat(241)}@example.test\n${'b'.repeat(242)}@example.test\n${'é'.repeat(121)}@example.test\n${'c'.repeat(5000)}@example.test\n`,
    want: { emails: [`${'a'.repeat(241)}@example.test`], skipped: [`${'b'.repeat(100)}`, `${'é'.repeat(100)}`, `${'c'.repeat(100)}`] },
  },
];

for (const c of FILES) {
  test(`subscriber file: ${c.name}`, () => assert.deepEqual(parseSubscriberFile(c.text), c.want));
}
