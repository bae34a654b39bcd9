// The message as the rest of the code sees it (src/mail/message.ts): CRLF to
// LF without touching any other byte, where the header block ends, header
// parsing (folding, case, repeats, junk lines, 8-bit bytes), and the two loop
// checks, Delivered-To and the Received hop count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hasDeliveredTo, headerEnd, hopCount, normaliseLineEndings, parseHeaders, parseMessage } from '../../src/mail/message.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

const lineEndings: { name: string; input: Buffer; want: Buffer }[] = [
  { name: 'CRLF becomes LF', input: b('a\r\nb\r\n'), want: b('a\nb\n') },
  { name: 'a bare CR is kept', input: b('a\rb\r\n'), want: b('a\rb\n') },
  { name: 'a bare LF is kept', input: b('a\nb\r\nc'), want: b('a\nb\nc') },
  { name: 'LF CR is not a line ending pair and is kept', input: b('a\n\rb\r\n'), want: b('a\n\rb\n') },
  { name: 'a CR before a CRLF is kept as a bare CR', input: b('a\r\r\nb'), want: b('a\r\nb') },
  { name: 'a CRLF that is the last two bytes becomes LF', input: b('body\r\n'), want: b('body\n') },
  { name: 'a CRLF that is the first two bytes becomes LF', input: b('\r\nbody'), want: b('\nbody') },
  { name: 'a lone CR at the very end is kept', input: b('a\r\nb\r'), want: b('a\nb\r') },
  { name: 'consecutive CRLFs each become one LF', input: b('\r\n\r\n\r\n'), want: b('\n\n\n') },
  { name: '8-bit and NUL bytes around a CRLF survive', input: Buffer.from([0xff, 0x00, 0x0d, 0x0a, 0x80, 0xe9]), want: Buffer.from([0xff, 0x00, 0x0a, 0x80, 0xe9]) },
];

for (const c of lineEndings) {
  test(`normaliseLineEndings: ${c.name}`, () => {
    assert.deepEqual(normaliseLineEndings(c.input), c.want);
  });
}

for (const [name, input] of [['only LF', b('a\nb\n')], ['only bare CR', b('a\rb\r')], ['empty', Buffer.alloc(0)], ['a CR at the end with no LF', b('a\r')]] as const) {
  test(`normaliseLineEndings returns the same buffer object when there is no CRLF (${name})`, () => {
    assert.equal(normaliseLineEndings(input), input);
  });
}

test('normaliseLineEndings does not change its input', () => {
  const input = b('a\r\nb\r\n');
  normaliseLineEndings(input);
  assert.deepEqual(input, b('a\r\nb\r\n'));
});

test('a CRLF split across two separately normalised chunks is left as it was', () => {
  // Normalisation is per buffer, so the whole message must be normalised at
  // once; split chunks lose no byte but keep the pair.
  const got = Buffer.concat([normaliseLineEndings(b('a\r')), normaliseLineEndings(b('\nb'))]);
  assert.deepEqual(got, b('a\r\nb'));
});

const ends: { name: string; body: string; want: number }[] = [
  { name: 'the header block ends at the empty line', body: 'A: 1\n\nbody', want: 5 },
  { name: 'the header block of several fields ends at the empty line', body: 'A: 1\nB: 2\n\nbody\n\nmore', want: 10 },
  { name: 'a message starting with an empty line has no header block', body: '\nA: 1\n', want: 0 },
  { name: 'a message without an empty line is all header', body: 'A: 1\nB: 2\n', want: 10 },
  { name: 'a message without an empty line or final LF is all header', body: 'A: 1', want: 4 },
  { name: 'an empty message has an empty header block', body: '', want: 0 },
];

for (const c of ends) {
  test(`headerEnd: ${c.name}`, () => {
    assert.equal(headerEnd(b(c.body)), c.want);
  });
}

const headerCases: { name: string; body: Buffer; want: [string, string[]][] }[] = [
  { name: 'a simple header is parsed and its value trimmed', body: b('Subject:   hello world  \n\nbody'), want: [['subject', ['hello world']]] },
  { name: 'header names are lower-cased', body: b('X-Mixed-CASE: v\n\n'), want: [['x-mixed-case', ['v']]] },
  { name: 'folded headers are unfolded with one space per fold', body: b('Subject: a\n  b\n\tc\n\nbody'), want: [['subject', ['a b c']]] },
  { name: 'repeated headers keep every value in order', body: b('Received: one\nX: y\nReceived: two\nreceived: three\n\n'), want: [['received', ['one', 'two', 'three']], ['x', ['y']]] },
  { name: 'a line without a colon is ignored', body: b('A: 1\nnonsense line\nB: 2\n\n'), want: [['a', ['1']], ['b', ['2']]] },
  { name: 'a name with a space before the colon is not a header', body: b('Bad Name: x\nGood: y\n\n'), want: [['good', ['y']]] },
  { name: 'an mbox From_ line is not a header', body: b('From bob@x.test Mon Jan  1 00:00:00 2024\nA: 1\n\n'), want: [['a', ['1']]] },
  { name: 'a line starting with a colon is not a header', body: b(': x\nA: 1\n\n'), want: [['a', ['1']]] },
  { name: 'an empty value is kept as an empty string', body: b('X-Empty:\n\n'), want: [['x-empty', ['']]] },
  { name: 'a colon in the value stays in the value', body: b('Date: Mon, 1 Jan 2024 00:00:00 +0000\n\n'), want: [['date', ['Mon, 1 Jan 2024 00:00:00 +0000']]] },
  { name: 'a header-only message without a final newline is parsed', body: b('A: 1\nB: 2'), want: [['a', ['1']], ['b', ['2']]] },
  { name: 'a header-only message with a final newline is parsed', body: b('A: 1\nB: 2\n'), want: [['a', ['1']], ['b', ['2']]] },
  { name: 'a message starting with an empty line has no headers', body: b('\nSubject: not a header\n'), want: [] },
  { name: 'lines in the body are not headers', body: b('A: 1\n\nB: 2\n'), want: [['a', ['1']]] },
  { name: 'a continuation line before any header is ignored', body: b(' stray\nA: 1\n\n'), want: [['a', ['1']]] },
  { name: 'a continuation after a line without a colon does not join the earlier header', body: b('A: 1\njunk\n more\nB: 2\n\n'), want: [['a', ['1']], ['b', ['2']]] },
  { name: '8-bit bytes survive as latin1', body: Buffer.from([...b('Subject: caf'), 0xe9, ...b('\n\n')]), want: [['subject', ['caf\u00e9']]] },
  { name: 'raw UTF-8 bytes are read as UTF-8 (decoding: message-headers.test.ts)', body: Buffer.concat([b('Subject: '), Buffer.from('\u00e9t\u00e9', 'utf8'), b('\n\n')]), want: [['subject', ['\u00e9t\u00e9']]] },
  { name: 'a CR left at the end of a line is not part of the value', body: b('A: 1\r\nB: 2\r\n\r\n'), want: [['a', ['1']], ['b', ['2']]] },
  { name: 'an empty message has no headers', body: Buffer.alloc(0), want: [] },
];

for (const c of headerCases) {
  test(`parseHeaders: ${c.name}`, () => {
    assert.deepEqual([...parseHeaders(c.body)].sort(([x], [y]) => x.localeCompare(y)), c.want);
  });
}

test('parseMessage normalises the body, counts the size as received and parses the headers', () => {
  const raw = b('Subject: hi\r\n there\r\n\r\nbody\r\n');
  const m = parseMessage(raw);
  assert.deepEqual(m.body, b('Subject: hi\n there\n\nbody\n'));
  assert.equal(m.receivedSize, raw.length);
  assert.deepEqual([...m.headers], [['subject', ['hi there']]]);
});

const deliveredTo: { name: string; message: string; address: string; want: boolean }[] = [
  { name: 'a Delivered-To naming the address is a loop', message: 'Delivered-To: bob@example.test\n\n', address: 'bob@example.test', want: true },
  { name: 'angle brackets around the address do not matter', message: 'Delivered-To: <bob@example.test>\n\n', address: 'bob@example.test', want: true },
  { name: 'the comparison is case-insensitive in the field', message: 'Delivered-To: <Bob@Example.TEST>\n\n', address: 'bob@example.test', want: true },
  { name: 'the comparison is case-insensitive in the address asked for', message: 'Delivered-To: bob@example.test\n\n', address: 'BOB@Example.Test', want: true },
  { name: 'the header name is case-insensitive', message: 'DELIVERED-TO: bob@example.test\n\n', address: 'bob@example.test', want: true },
  { name: 'any one of several Delivered-To fields counts', message: 'Delivered-To: alice@example.test\nDelivered-To: bob@example.test\n\n', address: 'bob@example.test', want: true },
  { name: 'another address is not a loop', message: 'Delivered-To: alice@example.test\n\n', address: 'bob@example.test', want: false },
  { name: 'an address that merely contains ours is not a loop', message: 'Delivered-To: bob@example.test.evil\n\n', address: 'bob@example.test', want: false },
  { name: 'an address with an extension is a different address', message: 'Delivered-To: bob+x@example.test\n\n', address: 'bob@example.test', want: false },
  { name: 'no Delivered-To field is not a loop', message: 'To: bob@example.test\n\n', address: 'bob@example.test', want: false },
  { name: 'a Delivered-To line in the body is not a loop', message: 'To: bob\n\nDelivered-To: bob@example.test\n', address: 'bob@example.test', want: false },
];

for (const c of deliveredTo) {
  test(`hasDeliveredTo: ${c.name}`, () => {
    assert.equal(hasDeliveredTo(parseHeaders(b(c.message)), c.address), c.want);
  });
}

const hops: { name: string; message: string; want: number }[] = [
  { name: 'a message without Received fields has no hops', message: 'Subject: x\n\nReceived: in body\n', want: 0 },
  { name: 'each Received field is one hop', message: 'Received: a\nReceived: b\nSubject: x\nReceived: c\n\n', want: 3 },
  { name: 'a folded Received field counts once', message: 'Received: from a\n\tby b\n\tfor c\n\n', want: 1 },
];

for (const c of hops) {
  test(`hopCount: ${c.name}`, () => {
    assert.equal(hopCount(parseHeaders(b(c.message))), c.want);
  });
}
