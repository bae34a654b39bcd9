// Vacation replies (src/classify/vacation.ts): which messages get no reply
// and why (RFC 3834 §2, RFC 5230 §4.5/§4.6), address lists read as RFC 5322
// writes them, and the reply itself — its fields, its encoding, and that
// nothing a sender writes can add a header line to it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dedupeKey } from '../../src/classify/duplicate.js';
import { buildVacationReply, parseAddressList, REPLY_MARK_HEADER, vacationAddresses, vacationKey, vacationRefusal, type VacationCheck, type VacationReply } from '../../src/classify/vacation.js';
import { parseRecipient } from '../../src/mail/address.js';
import { parseMessage } from '../../src/mail/message.js';

// ---- address lists ----

const lists: { name: string; value: string; want: string[] }[] = [
  { name: 'a bare address', value: 'bob@example.test', want: ['bob@example.test'] },
  { name: 'a display name and angle brackets', value: 'Bob Smith <bob@example.test>', want: ['bob@example.test'] },
  { name: 'a quoted display name holding a comma and an @', value: '"Smith, Bob (bob@evil.test)" <bob@example.test>, carol@example.test', want: ['bob@example.test', 'carol@example.test'] },
  { name: 'comments, nested, anywhere', value: 'bob(the (real) one)@(host)example.test (Bob), <carol@example.test> (C)', want: ['bob@example.test', 'carol@example.test'] },
  { name: 'a group and an empty group', value: 'Team: a@example.test, "B" <b@example.test>;, undisclosed-recipients:;', want: ['a@example.test', 'b@example.test'] },
  { name: 'a quoted local part', value: '"bob smith"@example.test, <"x\\"y"@example.test>', want: ['"bob smith"@example.test', '"x\\"y"@example.test'] },
  { name: 'an obsolete route', value: '<@relay.test,@other.test:bob@example.test>', want: ['bob@example.test'] },
  { name: 'a domain literal', value: 'bob@[192.0.2.1]', want: ['bob@[192.0.2.1]'] },
  { name: 'folded white space', value: 'Bob\r\n <bob@example.test>,\r\n\tcarol@example.test', want: ['bob@example.test', 'carol@example.test'] },
  { name: 'a display name alone is no address', value: 'Bob Smith, , <>', want: [] },
  { name: 'an unterminated comment or quote ends the value', value: 'bob@example.test, "oops <x@y>', want: ['bob@example.test'] },
];

for (const c of lists) {
  test(`an address list is read: ${c.name}`, () => {
    assert.deepEqual(parseAddressList(c.value), c.want);
  });
}

// ---- when not to reply ----

const NOW = new Date(2026, 6, 15, 12, 0, 0); // local time: until= is a local date
const base: VacationCheck = {
  sender: 'alice@example.org',
  headers: new Map([['to', ['Bob <bob@example.test>']], ['subject', ['Lunch?']]]),
  ownerAddresses: ['bob@example.test'],
  now: NOW,
};
const withHeaders = (extra: [string, string[]][]): VacationCheck => ({ ...base, headers: new Map([...base.headers, ...extra]) });

const refusals: { name: string; check: VacationCheck; want: string | undefined }[] = [
  { name: 'a personal message to the owner gets a reply', check: base, want: undefined },
  { name: 'the owner in Cc is enough', check: { ...base, headers: new Map([['to', ['x@example.org']], ['cc', ['"Bob" <Bob@Example.TEST>']]]) }, want: undefined },
  { name: 'the owner in Resent-To is enough', check: { ...base, headers: new Map([['to', ['x@example.org']], ['resent-to', ['bob@example.test']]]) }, want: undefined },
  { name: 'one of addresses= is enough', check: { ...base, ownerAddresses: ['bob@example.test', 'b.smith@example.test'], headers: new Map([['to', ['B. Smith <b.smith@example.test>']]]) }, want: undefined },
  { name: 'a quoted local part names the owner', check: { ...base, headers: new Map([['to', ['"bob"@example.test']]]) }, want: undefined },
  { name: 'the last day of until= still gets a reply', check: { ...base, until: '2026-07-15' }, want: undefined },
  { name: 'Auto-Submitted: no is a person', check: withHeaders([['auto-submitted', ['no']]]), want: undefined },
  { name: 'Precedence: first-class is a person', check: withHeaders([['precedence', ['first-class']]]), want: undefined },
  { name: 'a sender merely containing "bounce" is a person', check: { ...base, sender: 'bouncer@example.org' }, want: undefined },
  { name: 'X-Auto-Response-Suppress without OOF or All', check: withHeaders([['x-auto-response-suppress', ['DR, RN']]]), want: undefined },
  { name: 'the day after until=', check: { ...base, until: '2026-07-14' }, want: 'the vacation ended on 2026-07-14' },
  { name: 'the null sender', check: { ...base, sender: '' }, want: 'null sender (a bounce or notification)' },
  { name: 'MAILER-DAEMON', check: { ...base, sender: 'MAILER-DAEMON@mx.example.org' }, want: 'sender MAILER-DAEMON@mx.example.org is a mail program' },
  { name: 'LISTSERV', check: { ...base, sender: 'listserv@lists.example.org' }, want: 'sender listserv@lists.example.org is a mail program' },
  { name: 'a -request address', check: { ...base, sender: 'dev-request@lists.example.org' }, want: 'sender dev-request@lists.example.org is a list\'s administrative address' },
  { name: 'an owner- address', check: { ...base, sender: 'owner-dev@lists.example.org' }, want: 'sender owner-dev@lists.example.org is a list\'s administrative address' },
  { name: 'an -owner address with a VERP extension', check: { ...base, sender: 'dev-owner+x=y@lists.example.org' }, want: 'sender dev-owner+x=y@lists.example.org is a list\'s administrative address' },
  { name: 'noreply', check: { ...base, sender: 'noreply@example.org' }, want: 'sender noreply@example.org is a no-reply or bounce address' },
  { name: 'No-Reply in capitals', check: { ...base, sender: 'No-Reply@example.org' }, want: 'sender No-Reply@example.org is a no-reply or bounce address' },
  { name: 'do-not-reply', check: { ...base, sender: 'do-not-reply@example.org' }, want: 'sender do-not-reply@example.org is a no-reply or bounce address' },
  { name: 'donotreply', check: { ...base, sender: 'donotreply@example.org' }, want: 'sender donotreply@example.org is a no-reply or bounce address' },
  { name: 'a service\'s -noreply', check: { ...base, sender: 'notifications-noreply@example.org' }, want: 'sender notifications-noreply@example.org is a no-reply or bounce address' },
  { name: 'a VERP bounces+ address', check: { ...base, sender: 'bounces+1234-abcd=example.test@mail.example.org' }, want: 'sender bounces+1234-abcd=example.test@mail.example.org is a no-reply or bounce address' },
  { name: 'a Mailman -bounces address', check: { ...base, sender: 'dev-bounces@lists.example.org' }, want: 'sender dev-bounces@lists.example.org is a no-reply or bounce address' },
  { name: 'List-Id', check: withHeaders([['list-id', ['Dev <dev.lists.example.org>']]]), want: 'list mail (list-id field)' },
  { name: 'List-Unsubscribe', check: withHeaders([['list-unsubscribe', ['<mailto:u@example.org>']]]), want: 'list mail (list-unsubscribe field)' },
  { name: 'List-Post', check: withHeaders([['list-post', ['<mailto:dev@example.org>']]]), want: 'list mail (list-post field)' },
  { name: 'Precedence: bulk', check: withHeaders([['precedence', [' Bulk ']]]), want: 'Precedence: bulk' },
  { name: 'Precedence: list', check: withHeaders([['precedence', ['list']]]), want: 'Precedence: list' },
  { name: 'Precedence: junk', check: withHeaders([['precedence', ['junk']]]), want: 'Precedence: junk' },
  { name: 'Auto-Submitted: auto-replied', check: withHeaders([['auto-submitted', ['auto-replied']]]), want: 'Auto-Submitted: auto-replied' },
  { name: 'Auto-Submitted: auto-generated with a parameter', check: withHeaders([['auto-submitted', ['Auto-Generated; owner-email="x@y"']]]), want: 'Auto-Submitted: auto-generated' },
  { name: 'X-Auto-Response-Suppress: OOF', check: withHeaders([['x-auto-response-suppress', ['DR, OOF']]]), want: 'X-Auto-Response-Suppress: DR, OOF' },
  { name: 'X-Auto-Response-Suppress: All', check: withHeaders([['x-auto-response-suppress', ['All']]]), want: 'X-Auto-Response-Suppress: All' },
  { name: 'a delivery report', check: withHeaders([['content-type', ['multipart/report; report-type=delivery-status; boundary="x"']]]), want: 'a delivery or read report (multipart/report)' },
  { name: 'one of our own replies', check: withHeaders([[REPLY_MARK_HEADER, ['auto-replied']]]), want: 'our own automatic reply (x-mailprocd-vacation field)' },
  { name: 'spam', check: { ...base, isSpam: true }, want: 'the message is spam' },
  { name: 'Bcc: the owner in no addressing field', check: { ...base, headers: new Map([['to', ['someone@example.org']]]) }, want: 'not addressed to bob@example.test in To or Cc' },
  { name: 'no To or Cc at all', check: { ...base, headers: new Map() }, want: 'not addressed to bob@example.test in To or Cc' },
  { name: 'the owner only in a display name', check: { ...base, headers: new Map([['to', ['"bob@example.test" <list@example.org>']]]) }, want: 'not addressed to bob@example.test in To or Cc' },
  { name: 'the owner only in a comment', check: { ...base, headers: new Map([['to', ['list@example.org (bob@example.test)']]]) }, want: 'not addressed to bob@example.test in To or Cc' },
  { name: 'the owner with another extension', check: { ...base, headers: new Map([['to', ['bob+x@example.test']]]) }, want: 'not addressed to bob@example.test in To or Cc' },
  { name: 'the owner only in Reply-To or From', check: { ...base, headers: new Map([['to', ['x@example.org']], ['reply-to', ['bob@example.test']], ['from', ['bob@example.test']]]) }, want: 'not addressed to bob@example.test in To or Cc' },
];

for (const c of refusals) {
  test(`vacationRefusal: ${c.name}`, () => {
    assert.equal(vacationRefusal(c.check), c.want);
  });
}

test('the addresses that make a message explicitly the recipient\'s: as given, without extension, and addresses=', () => {
  const r = parseRecipient('Bob+Travel@Example.Test', '+');
  assert.deepEqual(vacationAddresses(r, { kind: 'vacation', text: 'x', days: 7, addresses: ['b.smith@example.test', 'bob@example.test'] }), ['bob+travel@example.test', 'bob@example.test', 'b.smith@example.test']);
});

test('a vacation key pairs owner and sender without regard to case', () => {
  assert.equal(vacationKey('Bob@Example.Test', 'Alice@Example.ORG'), vacationKey('bob@example.test', 'alice@example.org'));
  assert.notEqual(vacationKey('bob@example.test', 'alice@example.org'), vacationKey('bob@example.test', 'carol@example.org'));
  // The separator cannot be forged by an address: no address holds a control character.
  assert.notEqual(vacationKey('a@x', 'b@y'), vacationKey('a@x\x1fb', '@y'));
});

test('a dedupe key is the owner and the message\'s first well-formed Message-ID; none without one', () => {
  assert.equal(dedupeKey('Bob@Example.Test', ' <AbC.1@mail.example.org> (comment)'), 'bob@example.test\x1f<AbC.1@mail.example.org>');
  assert.equal(dedupeKey('bob@example.test', undefined), undefined);
  assert.equal(dedupeKey('bob@example.test', 'no angle brackets'), undefined);
  assert.notEqual(dedupeKey('bob@example.test', '<a@x>'), dedupeKey('bob@example.test', '<A@x>'));
});

// ---- the reply ----

const REPLY: VacationReply = {
  to: 'alice@example.org',
  from: 'bob@example.test',
  headers: new Map([['subject', ['Lunch?']], ['message-id', ['<m1@example.org>']], ['references', ['<r0@example.org> <r1@example.org>']]]),
  text: 'I am away until Monday.\nBack on the 20th.',
  hostname: 'mx.example.test',
  date: new Date(Date.UTC(2026, 6, 15, 9, 5, 3)),
  messageId: 'Q1A2B3.1',
};

const text = (b: Buffer): string => b.toString('utf8');

function decodeQp(body: string): string {
  const bytes = Buffer.from(body.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_w, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
  return bytes.toString('utf8');
}

test('a reply has every field RFC 3834 and RFC 5230 ask for, CRLF line endings and a quoted-printable body', () => {
  assert.equal(text(buildVacationReply(REPLY)), [
    'From: <bob@example.test>',
    'To: <alice@example.org>',
    'Subject: Auto: Lunch?',
    'Date: Wed, 15 Jul 2026 09:05:03 +0000',
    'Message-ID: <Q1A2B3.1@mx.example.test>',
    'In-Reply-To: <m1@example.org>',
    'References: <r0@example.org>',
    ' <r1@example.org>',
    ' <m1@example.org>',
    'Auto-Submitted: auto-replied',
    'Precedence: bulk',
    'X-Auto-Response-Suppress: All',
    'X-Mailprocd-Vacation: auto-replied',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: quoted-printable',
    '',
    'I am away until Monday.',
    'Back on the 20th.',
    '',
  ].join('\r\n'));
});

test('a reply is recognised as our own by vacationRefusal, so two servers cannot answer each other', () => {
  const reply = parseMessage(buildVacationReply(REPLY));
  assert.match(vacationRefusal({ ...base, headers: new Map([...reply.headers, ['to', ['bob@example.test']]]) }) ?? '', /our own automatic reply|Auto-Submitted/);
});

const subjects: { name: string; reply: Partial<VacationReply>; want: string }[] = [
  { name: 'subject= replaces "Auto: "', reply: { subject: 'Out of office' }, want: 'Out of office' },
  { name: 'no original subject', reply: { headers: new Map() }, want: 'Auto: (no subject)' },
  { name: 'a non-ASCII subject is encoded and reads back the same', reply: { headers: new Map([['subject', ['Réunion à 14h — café ☕']]]) }, want: 'Auto: Réunion à 14h — café ☕' },
  { name: 'a subject that looks like an encoded word is encoded, so it reads back as written', reply: { headers: new Map([['subject', ['=?UTF-8?B?SGk=?=']]]) }, want: 'Auto: =?UTF-8?B?SGk=?=' },
  { name: 'a long subject is folded and reads back the same', reply: { headers: new Map([['subject', [Array.from({ length: 40 }, (_v, i) => `word${i}`).join(' ')]]]) }, want: `Auto: ${Array.from({ length: 40 }, (_v, i) => `word${i}`).join(' ')}` },
  { name: 'a long non-ASCII subject is split into whole characters', reply: { headers: new Map([['subject', ['é'.repeat(300)]]]) }, want: `Auto: ${'é'.repeat(300)}` },
  { name: 'a subject with a 2000-character word', reply: { headers: new Map([['subject', ['x'.repeat(2000)]]]) }, want: `Auto: ${'x'.repeat(2000)}` },
];

for (const c of subjects) {
  test(`a reply's subject: ${c.name}`, () => {
    const raw = text(buildVacationReply({ ...REPLY, ...c.reply }));
    const head = raw.slice(0, raw.indexOf('\r\n\r\n'));
    for (const line of head.split('\r\n')) assert.ok(line.length <= 78 || /^\S+: <[^>]*>$/.test(line), `line over 78: ${line}`);
    assert.deepEqual(parseMessage(Buffer.from(raw)).headers.get('subject'), [c.want]);
  });
}

const injections: { name: string; reply: Partial<VacationReply> }[] = [
  { name: 'CR LF in the subject (an encoded word can decode to one)', reply: { headers: new Map([['subject', ['Hi\r\nBcc: victim@example.net\r\n\r\nbody']]]) } },
  { name: 'a bare LF and a bare CR in the subject', reply: { headers: new Map([['subject', ['Hi\nBcc: victim@example.net\rX-Evil: 1']]]) } },
  { name: 'CR LF in a non-ASCII subject', reply: { headers: new Map([['subject', ['Grüße\r\nBcc: victim@example.net']]]) } },
  { name: 'CR LF in the Message-ID', reply: { headers: new Map([['message-id', ['<a@b>\r\nBcc: victim@example.net']], ['references', ['<c@d>\nBcc: victim@example.net']]]) } },
  { name: 'a Message-ID with no angle brackets but a line break', reply: { headers: new Map([['message-id', ['a@b\r\nBcc: victim@example.net']]]) } },
  { name: 'a line break in the subject= the owner wrote, and in the addresses', reply: { subject: 'Away\r\nBcc: victim@example.net', to: 'alice@example.org>\r\nBcc: victim@example.net', from: 'bob@example.test\n' } },
];

for (const c of injections) {
  test(`nothing a sender writes adds a header line: ${c.name}`, () => {
    const raw = text(buildVacationReply({ ...REPLY, ...c.reply }));
    assert.doesNotMatch(raw.replace(/\r\n/g, ''), /[\r\n]/, 'a bare CR or LF');
    const names = [...parseMessage(Buffer.from(raw)).headers.keys()];
    assert.deepEqual(names, ['from', 'to', 'subject', 'date', 'message-id', ...names.filter((n) => n === 'in-reply-to' || n === 'references'), 'auto-submitted', 'precedence', 'x-auto-response-suppress', 'x-mailprocd-vacation', 'mime-version', 'content-type', 'content-transfer-encoding']);
    const head = raw.slice(0, raw.indexOf('\r\n\r\n'));
    assert.doesNotMatch(head, /^Bcc:/im);
  });
}

test('In-Reply-To and References: the parent\'s In-Reply-To stands in for missing References, and a long thread keeps its root and latest', () => {
  const parent = parseMessage(buildVacationReply({ ...REPLY, headers: new Map([['message-id', ['<m@x>']], ['in-reply-to', ['<p@x>']]]) })).headers;
  assert.deepEqual(parent.get('references'), ['<p@x> <m@x>']);
  const long = Array.from({ length: 30 }, (_v, i) => `<r${i}@x>`).join(' ');
  const thread = parseMessage(buildVacationReply({ ...REPLY, headers: new Map([['message-id', ['<m@x>']], ['references', [long]]]) })).headers;
  const refs = (thread.get('references')?.[0] ?? '').split(' ');
  assert.equal(refs.length, 20);
  assert.deepEqual([refs[0], refs[1], refs[18], refs[19]], ['<r0@x>', '<r12@x>', '<r29@x>', '<m@x>']);
  const none = parseMessage(buildVacationReply({ ...REPLY, headers: new Map() })).headers;
  assert.equal(none.has('in-reply-to'), false);
  assert.equal(none.has('references'), false);
});

test('a message id that names its own host is used whole', () => {
  assert.deepEqual(parseMessage(buildVacationReply({ ...REPLY, messageId: 'v.1@relay.example.test' })).headers.get('message-id'), ['<v.1@relay.example.test>']);
});

const bodies: { name: string; text: string }[] = [
  { name: 'UTF-8 text', text: 'Je suis absent — retour le 20.\nGrüße, Bob ☕' },
  { name: 'a line longer than 76 characters', text: `${'long '.repeat(60)}end` },
  { name: 'a long line of multibyte characters', text: 'é'.repeat(200) },
  { name: 'trailing spaces and tabs, and = signs', text: 'a = b  \nc\t\n=\n' },
  { name: 'CRLF and CR line breaks in the text', text: 'one\r\ntwo\rthree' },
  { name: 'a dot alone on a line and a "From " line', text: 'x\n.\nFrom here\n' },
];

for (const c of bodies) {
  test(`a reply's body is quoted-printable that decodes to the text: ${c.name}`, () => {
    const raw = text(buildVacationReply({ ...REPLY, text: c.text }));
    const body = raw.slice(raw.indexOf('\r\n\r\n') + 4);
    for (const line of body.split('\r\n')) {
      assert.ok(line.length <= 76, `line over 76: ${line}`);
      assert.match(line, /^[\x21-\x7e]*(?:[ \t]+[\x21-\x7e]+)*$/, `raw byte or trailing white space: ${JSON.stringify(line)}`);
    }
    const want = c.text.replace(/\r\n?/g, '\n').replace(/\n$/, '');
    assert.equal(decodeQp(body).replace(/\r\n/g, '\n').replace(/\n$/, ''), want);
  });
}
