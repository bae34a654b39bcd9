// Bounces (src/queue/dsn.ts): the DSN's structure as a reader of RFC 3464 /
// RFC 6522 expects it (parsed here by hand, by boundary), line endings and
// lengths, and who gets a bounce at all. Sending is the relay's
// (test/relay/smtp-relay.test.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildBounce, shouldBounce, type BounceInput } from '../../src/queue/dsn.js';
import { status } from '../../src/mail/status.js';

// ---- a tiny MIME reader: enough for the DSN's one level of multipart ----

interface Entity {
  /** Field name lower-cased → unfolded value (last one wins; the DSN repeats none). */
  readonly headers: Map<string, string>;
  readonly body: string;
}

function parseEntity(text: string): Entity {
  const sep = text.indexOf('\r\n\r\n');
  const head = sep < 0 ? text : text.slice(0, sep);
  const body = sep < 0 ? '' : text.slice(sep + 4);
  return { headers: parseFields(head), body };
}

function parseFields(block: string): Map<string, string> {
  const fields = new Map<string, string>();
  const unfolded = block.replace(/\r\n[ \t]+/g, ' ');
  for (const line of unfolded.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
  }
  return fields;
}

function boundaryOf(contentType: string): string {
  const m = /boundary="([^"]+)"/.exec(contentType) ?? /boundary=([^;\s]+)/.exec(contentType);
  assert.ok(m?.[1], `no boundary in ${contentType}`);
  return m[1];
}

function parts(message: Entity): Entity[] {
  const boundary = boundaryOf(message.headers.get('content-type') ?? '');
  const delimiter = `\r\n--${boundary}`;
  const body = `\r\n${message.body}`;
  const end = body.indexOf(`${delimiter}--`);
  assert.ok(end >= 0, 'closing delimiter present');
  const chunks = body.slice(0, end).split(delimiter);
  chunks.shift(); // the preamble
  return chunks.map((c) => parseEntity(c.replace(/^\r\n/, '')));
}

/** message/delivery-status body → groups of fields (per-message first). */
function dsnGroups(body: string): Map<string, string>[] {
  return body.split(/\r\n\r\n/).filter((g) => g.trim() !== '').map(parseFields);
}

const mediaType = (e: Entity): string => (e.headers.get('content-type') ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
const lines = (raw: Buffer): string[] => raw.toString('latin1').split('\r\n');

// ---- fixtures ----

const ORIGINAL_LF = Buffer.from(
  'Return-Path: <alice@remote.test>\n' +
  'From: Alice <alice@remote.test>\n' +
  'To: bob@example.test, carol@example.test\n' +
  'Subject: quarterly numbers\n' +
  'Message-ID: <q3@remote.test>\n' +
  '\n' +
  'The secret body line.\n' +
  'Second body line.\n',
);
const ORIGINAL_CRLF = Buffer.from(ORIGINAL_LF.toString('latin1').replace(/\n/g, '\r\n'), 'latin1');
const NOW = new Date('2026-11-21T09:30:25.123Z');
const ARRIVAL = new Date('2026-11-16T09:00:00Z');

function input(over: Partial<BounceInput> = {}): BounceInput {
  return {
    reportingMta: 'mx.example.test',
    queueId: '18C0FFEE123ABCDEF',
    sender: 'alice@remote.test',
    arrival: ARRIVAL,
    recipients: [
      { address: 'bob@example.test', status: status('5.1.1', '<bob@example.test>: Recipient address rejected: User unknown') },
      { address: 'carol@example.test', status: status('5.4.7', 'delivery time expired: connect to relay.test: Connection refused'), remoteMta: 'relay.test' },
      { address: 'dave@example.test', status: status('5.7.1', '550 5.7.1 <dave@example.test>: Relay access denied', 550), remoteMta: 'mx.other.test' },
    ],
    original: ORIGINAL_LF,
    now: NOW,
    ...over,
  };
}

// ---- buildBounce ----

test('a bounce is a multipart/report of delivery-status with three parts: text, delivery-status, original headers', () => {
  const dsn = buildBounce(input());
  const msg = parseEntity(dsn.raw.toString('latin1'));
  const ct = msg.headers.get('content-type') ?? '';
  assert.match(ct, /^multipart\/report;/i);
  assert.match(ct, /report-type=delivery-status/i);
  const ps = parts(msg);
  assert.deepEqual(ps.map(mediaType), ['text/plain', 'message/delivery-status', 'text/rfc822-headers']);
});

test('the bounce comes from MAILER-DAEMON (Mail Delivery System) to the envelope sender, auto-replied, with Date, Message-ID and the Postfix subject', () => {
  const dsn = buildBounce(input());
  assert.equal(dsn.from, 'MAILER-DAEMON@mx.example.test');
  assert.equal(dsn.to, 'alice@remote.test');
  const h = parseEntity(dsn.raw.toString('latin1')).headers;
  assert.equal(h.get('from'), 'Mail Delivery System <MAILER-DAEMON@mx.example.test>');
  assert.equal(h.get('to'), '<alice@remote.test>');
  assert.equal(h.get('subject'), 'Undelivered Mail Returned to Sender');
  assert.equal(h.get('auto-submitted'), 'auto-replied');
  assert.equal(h.get('mime-version'), '1.0');
  assert.equal(h.get('date'), 'Sat, 21 Nov 2026 09:30:25 +0000');
  assert.match(h.get('message-id') ?? '', /^<[^<>@\s]+@mx\.example\.test>$/);
});

test('the delivery-status part has the per-message fields, then one group per recipient with its own Status and Action failed', () => {
  const dsn = buildBounce(input());
  const [, report] = parts(parseEntity(dsn.raw.toString('latin1')));
  const groups = dsnGroups(report?.body ?? '');
  assert.equal(groups.length, 4);
  const [perMessage, bob, carol, dave] = groups as [Map<string, string>, Map<string, string>, Map<string, string>, Map<string, string>];
  assert.equal(perMessage.get('reporting-mta'), 'dns; mx.example.test');
  assert.equal(perMessage.get('arrival-date'), 'Mon, 16 Nov 2026 09:00:00 +0000');
  assert.equal(perMessage.get('x-mailprocd-queue-id'), '18C0FFEE123ABCDEF');
  assert.equal(perMessage.has('final-recipient'), false);

  assert.equal(bob.get('final-recipient'), 'rfc822; bob@example.test');
  assert.equal(bob.get('action'), 'failed');
  assert.equal(bob.get('status'), '5.1.1');
  assert.equal(bob.get('diagnostic-code'), 'X-mailprocd; <bob@example.test>: Recipient address rejected: User unknown');
  assert.equal(bob.get('last-attempt-date'), 'Sat, 21 Nov 2026 09:30:25 +0000');
  assert.equal(bob.has('remote-mta'), false);

  assert.equal(carol.get('final-recipient'), 'rfc822; carol@example.test');
  assert.equal(carol.get('action'), 'failed');
  assert.equal(carol.get('status'), '5.4.7');
  assert.equal(carol.get('remote-mta'), 'dns; relay.test');
  assert.equal(carol.get('diagnostic-code'), 'X-mailprocd; delivery time expired: connect to relay.test: Connection refused');

  assert.equal(dave.get('action'), 'failed');
  assert.equal(dave.get('status'), '5.7.1');
  assert.equal(dave.get('remote-mta'), 'dns; mx.other.test');
  assert.equal(dave.get('diagnostic-code'), 'smtp; 550 5.7.1 <dave@example.test>: Relay access denied');
});

test('the third part holds the original headers and, by default, not the body', () => {
  const dsn = buildBounce(input());
  const [, , returned] = parts(parseEntity(dsn.raw.toString('latin1')));
  const body = returned?.body ?? '';
  assert.match(body, /^Subject: quarterly numbers\r$/m);
  assert.match(body, /^Message-ID: <q3@remote\.test>\r$/m);
  assert.match(body, /^From: Alice <alice@remote\.test>\r$/m);
  assert.doesNotMatch(dsn.raw.toString('latin1'), /secret body line/);
});

test('with returnFullMessage the third part is message/rfc822 with the body', () => {
  const dsn = buildBounce(input({ returnFullMessage: true }));
  const [, , returned] = parts(parseEntity(dsn.raw.toString('latin1')));
  assert.equal(returned && mediaType(returned), 'message/rfc822');
  assert.match(returned?.body ?? '', /Message-ID: <q3@remote\.test>\r\n\r\nThe secret body line\.\r\nSecond body line\.\r\n$/);
});

test('the human part says what happened, like Postfix, and names every recipient with its diagnostic', () => {
  const dsn = buildBounce(input({ postmaster: 'postmaster@example.test' }));
  const [human] = parts(parseEntity(dsn.raw.toString('latin1')));
  const text = (human?.body ?? '').replace(/\r\n/g, '\n');
  assert.match(text, /^This is the mail system at host mx\.example\.test\./);
  assert.match(text.replace(/\n/g, ' '), /I'm sorry to have to inform you that your message could not be delivered to one or more recipients/);
  assert.match(text, /postmaster@example\.test/);
  const unwrapped = text.replace(/\n {4}/g, ' ');
  assert.match(unwrapped, /^<bob@example\.test>: <bob@example\.test>: Recipient address rejected: User unknown \(5\.1\.1\)$/m);
  assert.match(unwrapped, /^<carol@example\.test>: delivery time expired: connect to relay\.test: Connection refused \(5\.4\.7\)$/m);
  assert.match(unwrapped, /^<dave@example\.test>: host mx\.other\.test said: 550 5\.7\.1 <dave@example\.test>: Relay access denied \(5\.7\.1\)$/m);
});

test('every line of the bounce ends in CRLF, whether the original came with LF or CRLF, and both give the same bytes', () => {
  const fromLf = buildBounce(input({ original: ORIGINAL_LF })).raw;
  const fromCrlf = buildBounce(input({ original: ORIGINAL_CRLF })).raw;
  assert.deepEqual(fromLf, fromCrlf);
  const s = fromLf.toString('latin1');
  assert.equal(/[^\r]\n/.test(s), false, 'no bare LF');
  assert.equal(/\r[^\n]/.test(s), false, 'no bare CR');
  assert.ok(s.endsWith('--\r\n'));
});

test('the same input gives the same bytes (a rebuilt bounce keeps its Message-ID)', () => {
  assert.deepEqual(buildBounce(input()).raw, buildBounce(input()).raw);
});

test('a long diagnostic is folded and capped so that no line exceeds 998 octets, and still reads as one Diagnostic-Code', () => {
  const words = Array.from({ length: 600 }, (_, i) => `word${i}`).join(' ');
  const blob = 'x'.repeat(3000);
  const dsn = buildBounce(input({
    recipients: [{ address: 'bob@example.test', status: status('5.0.0', `550 5.0.0 ${words} ${blob}`), remoteMta: 'relay.test' }],
  }));
  for (const l of lines(dsn.raw)) assert.ok(Buffer.byteLength(l, 'latin1') <= 998, `line of ${l.length} octets`);
  const [, report] = parts(parseEntity(dsn.raw.toString('latin1')));
  const rcpt = dsnGroups(report?.body ?? '')[1];
  const diag = rcpt?.get('diagnostic-code') ?? '';
  assert.match(diag, /^smtp; 550 5\.0\.0 word0 word1 word2 /);
  assert.match(diag, /\[truncated\]$/);
  assert.ok(diag.length < 2200, `capped, got ${diag.length}`);
});

test('an over-long line in the original headers is broken (CRLF SPACE) to at most 998 octets', () => {
  const original = Buffer.from(`Subject: ${'y'.repeat(2500)}\nFrom: a@remote.test\n\nbody\n`);
  const dsn = buildBounce(input({ original }));
  for (const l of lines(dsn.raw)) assert.ok(Buffer.byteLength(l, 'latin1') <= 998, `line of ${l.length} octets`);
  const [, , returned] = parts(parseEntity(dsn.raw.toString('latin1')));
  assert.equal((returned?.body ?? '').replace(/\r\n /g, '').match(/y+/)?.[0].length, 2500, 'no octet lost');
});

test('a 4.x.x status makes a delay warning: Action delayed, a different subject', () => {
  const dsn = buildBounce(input({ recipients: [{ address: 'bob@example.test', status: status('4.2.2', 'mailbox full') }] }));
  const msg = parseEntity(dsn.raw.toString('latin1'));
  assert.equal(msg.headers.get('subject'), 'Delayed Mail (still being retried)');
  const rcpt = dsnGroups(parts(msg)[1]?.body ?? '')[1];
  assert.equal(rcpt?.get('action'), 'delayed');
  assert.equal(rcpt?.get('status'), '4.2.2');
});

test('the boundary never occurs in the returned headers', () => {
  const first = buildBounce(input());
  const b = boundaryOf(parseEntity(first.raw.toString('latin1')).headers.get('content-type') ?? '');
  const hostile = Buffer.from(`X-Trap: --${b}\nSubject: trap\n\nbody\n`);
  const dsn = buildBounce(input({ original: hostile }));
  const msg = parseEntity(dsn.raw.toString('latin1'));
  assert.notEqual(boundaryOf(msg.headers.get('content-type') ?? ''), b);
  const ps = parts(msg);
  assert.equal(ps.length, 3);
  assert.match(ps[2]?.body ?? '', /X-Trap: --/);
});

test('a non-ASCII recipient is reported as utf-8 xtext, and the delivery-status part stays 7-bit', () => {
  const dsn = buildBounce(input({ recipients: [{ address: 'jöran+x@example.test', status: status('5.1.1', 'unknown user jöran') }] }));
  const msg = parseEntity(dsn.raw.toString('utf8'));
  const report = parts(msg)[1]?.body ?? '';
  assert.match(report, /^Final-Recipient: utf-8; j\\x\{F6\}ran\\x\{2B\}x@example\.test\r$/m);
  assert.equal([...report].every((c) => c.charCodeAt(0) < 0x80), true);
});

test('a header injection through the recipient address or host name is neutralised', () => {
  const dsn = buildBounce(input({
    reportingMta: 'mx.example.test\r\nBcc: victim@evil.test',
    recipients: [{ address: 'bob@example.test\r\nAction: delivered', status: status('5.1.1', 'no') }],
  }));
  const s = dsn.raw.toString('latin1');
  assert.doesNotMatch(s, /^Bcc:/m);
  assert.doesNotMatch(s, /^Action: delivered/m);
});

test('buildBounce refuses, as a bug, to address the null sender or to report on no recipients', () => {
  assert.throws(() => buildBounce(input({ sender: '' })), /bug:/);
  assert.throws(() => buildBounce(input({ recipients: [] })), /bug:/);
});

// ---- shouldBounce ----

const senders: { sender: string; want: boolean; why: string }[] = [
  { sender: '', want: false, why: 'the null sender: the message is a bounce itself' },
  { sender: '<>', want: false, why: 'the null sender in brackets' },
  { sender: 'MAILER-DAEMON@remote.test', want: false, why: 'a mailer daemon never gets a bounce' },
  { sender: 'mailer-daemon@mx.example.test', want: false, why: 'our own mailer daemon, any case' },
  { sender: 'MAILER-DAEMON', want: false, why: 'a bare mailer daemon' },
  { sender: '"MAILER-DAEMON"@remote.test', want: false, why: 'a quoted mailer daemon' },
  { sender: 'double-bounce@remote.test', want: false, why: "Postfix's postmaster-notice sender" },
  { sender: 'alice@remote.test', want: true, why: 'an ordinary sender' },
  { sender: '<alice@remote.test>', want: true, why: 'an ordinary sender in brackets' },
  { sender: 'postmaster@remote.test', want: true, why: 'postmaster is a person and gets bounces (RFC 5321 §4.5.1)' },
  { sender: 'list-bounces+bob=example.test@lists.test', want: true, why: 'a VERP list address wants its bounces' },
  { sender: 'daemon@remote.test', want: true, why: 'only the exact local part counts' },
];

for (const c of senders) {
  test(`shouldBounce(${JSON.stringify(c.sender)}) is ${c.want}: ${c.why}`, () => {
    assert.equal(shouldBounce(c.sender), c.want);
  });
}
