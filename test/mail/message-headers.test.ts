// Header values as rules see them (src/mail/message.ts with
// src/mail/header-text.ts): RFC 2047 encoded words decoded in any charset,
// B and Q, adjacent words joined, raw UTF-8 read as UTF-8 and other 8-bit
// bytes as latin1, folded values unfolded first; the message bytes stay as
// they came. Also the readers that are not rules: the Delivered-To loop check
// and the hop count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeHeaderText, needsDecoding } from '../../src/mail/header-text.js';
import { hasDeliveredTo, hopCount, parseHeaders, parseMessage } from '../../src/mail/message.js';

const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');
const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');
/** A message whose Subject field is these bytes (after "Subject:"), then a body. */
const withSubject = (value: Buffer): Buffer => Buffer.concat([latin1('From: a@b.test\nSubject:'), value, latin1('\nTo: c@d.test\n\nbody =?UTF-8?B?SW52b2ljZQ==?= caf\xe9\n')]);

const subjects: { name: string; value: Buffer; want: string }[] = [
  { name: 'a B-encoded UTF-8 word is decoded', value: latin1(' =?UTF-8?B?SW52b2ljZSAxMjM=?='), want: 'Invoice 123' },
  { name: 'a Q-encoded UTF-8 word is decoded', value: latin1(' =?UTF-8?Q?Caf=C3=A9?='), want: 'Café' },
  { name: 'a Q-encoded latin1 word is decoded', value: latin1(' =?ISO-8859-1?Q?Caf=E9?='), want: 'Café' },
  { name: 'a B-encoded latin1 word is decoded', value: latin1(' =?iso-8859-1?b?Q2Fm6Q==?='), want: 'Café' },
  { name: 'ISO-8859-15 is not latin1: 0xA4 is the euro sign', value: latin1(' =?ISO-8859-15?Q?100_=A4?='), want: '100 €' },
  { name: 'windows-1252 0x80 is the euro sign', value: latin1(' =?windows-1252?Q?100_=80?='), want: '100 €' },
  { name: 'a KOI8-R word is decoded', value: latin1(' =?koi8-r?B?8NLJ18XU?='), want: 'Привет' },
  { name: 'charset and encoding names are case-insensitive', value: latin1(' =?utf-8?q?Caf=c3=a9?='), want: 'Café' },
  { name: 'an underscore in a Q word is a space', value: latin1(' =?UTF-8?Q?Invoice_123?='), want: 'Invoice 123' },
  { name: 'an RFC 2231 language tag in the charset is ignored', value: latin1(' =?UTF-8*en?Q?Invoice?='), want: 'Invoice' },
  { name: 'the space between two adjacent encoded words is dropped', value: latin1(' =?UTF-8?Q?Caf?= =?UTF-8?Q?=C3=A9?='), want: 'Café' },
  { name: 'two adjacent encoded words in different charsets are joined', value: latin1(' =?ISO-8859-1?Q?Caf=E9?= =?UTF-8?Q?_cr=C3=A8me?='), want: 'Café crème' },
  { name: 'a UTF-8 character split across two B words is put back together', value: latin1(' =?UTF-8?B?Q2Fmww==?= =?UTF-8?B?qQ==?='), want: 'Café' },
  { name: 'a folded pair of encoded words is unfolded and joined', value: latin1(' =?UTF-8?B?SW52b2lj?=\n =?UTF-8?B?ZSAxMjM=?='), want: 'Invoice 123' },
  { name: 'a tab-folded pair of encoded words is unfolded and joined', value: latin1(' =?UTF-8?Q?Invoice?=\n\t=?UTF-8?Q?_123?='), want: 'Invoice 123' },
  { name: 'spaces between plain text and an encoded word are kept', value: latin1(' Re: =?UTF-8?Q?Caf=C3=A9?= au lait'), want: 'Re: Café au lait' },
  { name: 'spaces an encoded word begins or ends with are trimmed like raw ones', value: latin1(' =?UTF-8?Q?__Invoice_123_?='), want: 'Invoice 123' },
  { name: 'a folded plain value is unfolded with one space', value: latin1(' Invoice\n  123'), want: 'Invoice 123' },
  { name: 'raw UTF-8 bytes are read as UTF-8', value: utf8(' Café crème'), want: 'Café crème' },
  { name: 'raw UTF-8 outside latin1 is read as UTF-8', value: utf8(' Счёт 123 €'), want: 'Счёт 123 €' },
  { name: 'bytes that are not valid UTF-8 are read as latin1', value: latin1(' Caf\xe9 cr\xe8me'), want: 'Café crème' },
  { name: 'raw UTF-8 and an encoded word in one value are both decoded', value: Buffer.concat([utf8(' Café '), latin1('=?UTF-8?Q?cr=C3=A8me?=')]), want: 'Café crème' },
  { name: 'a CRLF message is decoded as an LF one', value: latin1(' =?UTF-8?B?SW52b2lj?=\r\n =?UTF-8?B?ZSAxMjM=?=\r'), want: 'Invoice 123' },
  { name: 'an unknown encoding letter is left as it is', value: latin1(' =?UTF-8?X?Invoice?='), want: '=?UTF-8?X?Invoice?=' },
  { name: 'a lone "=?" is left as it is', value: latin1(' 1 =? 2'), want: '1 =? 2' },
  { name: 'an encoded word without its end is left as it is', value: latin1(' =?UTF-8?Q?Invoice'), want: '=?UTF-8?Q?Invoice' },
  { name: 'a plain ASCII value is unchanged', value: latin1(' Invoice 123'), want: 'Invoice 123' },
];

for (const c of subjects) {
  test(`parseHeaders: ${c.name}`, () => {
    const h = parseHeaders(parseMessage(withSubject(c.value)).body);
    assert.deepEqual(h.get('subject'), [c.want]);
    assert.deepEqual(h.get('from'), ['a@b.test'], 'the fields around it are intact');
    assert.deepEqual(h.get('to'), ['c@d.test'], 'the fields around it are intact');
  });
}

for (const [name, value] of [
  ['bad base64', ' =?UTF-8?B?!!!?='],
  ['an unknown charset', ' =?x-no-such-charset?Q?Invoice?='],
  ['invalid UTF-8 inside a Q word', ' =?UTF-8?Q?=FF=FE?='],
  ['a stray NUL byte beside a word', ' =?UTF-8?Q?a?=\0=?UTF-8?Q?b?='],
] as const) {
  test(`parseHeaders does not throw on ${name} and keeps the other fields`, () => {
    const h = parseHeaders(withSubject(latin1(value)));
    assert.equal(h.get('subject')?.length, 1);
    assert.deepEqual(h.get('to'), ['c@d.test']);
  });
}

test('parseMessage leaves the message bytes as they came: only the matching copy is decoded', () => {
  const raw = Buffer.concat([latin1('Subject: =?UTF-8?B?SW52b2ljZSAxMjM=?=\r\nX-Raw: '), utf8('Café'), latin1('\r\nX-Latin: caf\xe9\r\n\r\nbody\r\n')]);
  const m = parseMessage(raw);
  assert.deepEqual(m.body, Buffer.from(raw.toString('latin1').replaceAll('\r\n', '\n'), 'latin1'));
  assert.equal(m.receivedSize, raw.length);
  assert.deepEqual([...m.headers], [['subject', ['Invoice 123']], ['x-raw', ['Café']], ['x-latin', ['café']]]);
});

test('repeated fields are decoded each on its own, in order', () => {
  const h = parseHeaders(latin1('Comments: =?UTF-8?Q?one_=E2=82=AC?=\nComments: two\ncomments: =?ISO-8859-1?Q?thr=E9e?=\n\n'));
  assert.deepEqual(h.get('comments'), ['one €', 'two', 'thrée']);
});

test('the body is not read for headers, encoded words in it included', () => {
  const h = parseHeaders(latin1('A: 1\n\nSubject: =?UTF-8?B?SW52b2ljZQ==?=\n'));
  assert.deepEqual([...h.keys()], ['a']);
});

const deliveredTo: { name: string; message: Buffer; address: string; want: boolean }[] = [
  { name: 'a raw UTF-8 Delivered-To is compared with the UTF-8 address', message: Buffer.concat([latin1('Delivered-To: '), utf8('jürgen@example.test'), latin1('\n\n')]), address: 'jürgen@example.test', want: true },
  { name: 'a raw UTF-8 Delivered-To for another address is no loop', message: Buffer.concat([latin1('Delivered-To: '), utf8('jürgen@example.test'), latin1('\n\n')]), address: 'jurgen@example.test', want: false },
  { name: 'a plain ASCII Delivered-To still counts', message: latin1('Delivered-To: <bob@example.test>\n\n'), address: 'bob@example.test', want: true },
  { name: 'a Delivered-To beside encoded fields still counts', message: latin1('Subject: =?UTF-8?B?SW52b2ljZQ==?=\nDelivered-To: bob@example.test\n\n'), address: 'bob@example.test', want: true },
];

for (const c of deliveredTo) {
  test(`hasDeliveredTo: ${c.name}`, () => {
    assert.equal(hasDeliveredTo(parseHeaders(c.message), c.address), c.want);
  });
}

test('hopCount counts Received fields whatever their values hold', () => {
  const msg = Buffer.concat([latin1('Received: from =?UTF-8?Q?a?= by b\nReceived: from '), utf8('bücher.test'), latin1('\n\tby c\nReceived: from x\xff\n\n')]);
  assert.equal(hopCount(parseHeaders(msg)), 3);
});

const decode: { name: string; input: string; want: string }[] = [
  { name: 'plain ASCII comes back as it is', input: 'Invoice 123', want: 'Invoice 123' },
  { name: 'latin1-read UTF-8 becomes UTF-8', input: 'Caf\u00c3\u00a9', want: 'Café' },
  { name: 'latin1-read invalid UTF-8 stays latin1', input: 'Caf\u00e9', want: 'Café' },
  { name: 'an encoded word is decoded', input: '=?UTF-8?B?SW52b2ljZSAxMjM=?=', want: 'Invoice 123' },
];

for (const c of decode) {
  test(`decodeHeaderText: ${c.name}`, () => {
    assert.equal(decodeHeaderText(c.input), c.want);
  });
}

test('needsDecoding is false only without "=?" and without 8-bit bytes', () => {
  assert.deepEqual(['Invoice 123', 'a = ? b', 'a=?b', 'caf\u00e9', '\u0080', '\u007f'].map(needsDecoding), [false, false, true, true, true, false]);
});
