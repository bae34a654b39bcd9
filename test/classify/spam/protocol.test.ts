// The SPAMC/SPAMD wire format (src/classify/spam/protocol.ts), pure:
// - golden exchanges recorded from the real spamd 4.0.1
//   (test/fixtures/spamd/NAME.request / NAME.reply, scripts/record-spamd-fixtures.mjs):
//   formatRequest builds exactly the recorded request, and the recorded reply
//   reads to the wanted result whole, one byte at a time, and split in two at
//   every offset;
// - hand-made malformed replies, each refused with the right kind and message;
// - requests that cannot be sent, refused with RangeError.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import {
  formatRequest,
  HEADER_LIMIT,
  ReplyReader,
  SpamdError,
  type RequestOptions,
  type SpamdCommand,
  type SpamdErrorKind,
} from '../../../src/classify/spam/protocol.js';

const FIXTURES = fileURLToPath(new URL('../../../../test/fixtures/spamd/', import.meta.url));
const fixture = (name: string): Buffer => readFileSync(join(FIXTURES, name));
const message = (name: string): Buffer => fixture(join('messages', `${name}.eml`));

/** Reads `bytes` fed in `pieces` (offsets where a new piece starts), then end(). */
function read(command: SpamdCommand, bytes: Buffer, cuts: readonly number[] = [], maxBytes?: number): unknown {
  const reader = new ReplyReader(command, maxBytes);
  let from = 0;
  for (const to of [...cuts, bytes.length]) {
    const r = reader.push(bytes.subarray(from, to));
    if (r !== undefined) return r;
    from = to;
  }
  return reader.end();
}

/** The body of a recorded reply: what follows the first empty line. */
function bodyOf(reply: Buffer): Buffer {
  return reply.subarray(reply.indexOf('\r\n\r\n') + 4);
}

/** The part of a message after its header block. */
function messageBody(m: Buffer): Buffer {
  return m.subarray(m.indexOf('\n\n') + 2);
}

const GTUBE_SPAM = { isSpam: true, score: 1000, required: 5 };
const HAM = { isSpam: false, score: 0, required: 5 };

interface Golden {
  readonly name: string;
  readonly command: SpamdCommand;
  /** How the project builds the recorded request (absent: hand-made wrong on purpose). */
  readonly request?: { readonly message?: string } & RequestOptions;
  /** Fields the result must have exactly. */
  readonly want?: Record<string, unknown>;
  /** For PROCESS/HEADERS/REPORT: the field that must hold the reply's body. */
  readonly body?: 'message' | 'headers' | 'report';
  /** Text the body must contain. */
  readonly contains?: readonly string[];
  /** For a refusal: kind, sysexits code, message. */
  readonly error?: { readonly exitCode: number; readonly message: RegExp };
}

const goldens: readonly Golden[] = [
  { name: 'ping', command: 'PING', request: {}, want: { version: '1.5' } },
  { name: 'skip', command: 'SKIP', request: {}, want: { skipped: true } },
  { name: 'check-gtube', command: 'CHECK', request: { message: 'gtube' }, want: GTUBE_SPAM },
  { name: 'check-ham', command: 'CHECK', request: { message: 'ham' }, want: HAM },
  { name: 'check-ham-with-user', command: 'CHECK', request: { message: 'ham', user: 'nobody' }, want: HAM },
  { name: 'symbols-gtube', command: 'SYMBOLS', request: { message: 'gtube' }, want: { ...GTUBE_SPAM, tests: ['GTUBE', 'NO_RECEIVED', 'NO_RELAYS'] } },
  { name: 'symbols-ham', command: 'SYMBOLS', request: { message: 'ham' }, want: { ...HAM, tests: ['NO_RECEIVED', 'NO_RELAYS'] } },
  { name: 'report-gtube', command: 'REPORT', request: { message: 'gtube' }, want: GTUBE_SPAM, body: 'report', contains: ['has identified this incoming email as possible spam', '1000 GTUBE'] },
  // The report quotes the ham's "café" in UTF-8: read as text, not as latin1.
  { name: 'report-ham', command: 'REPORT', request: { message: 'ham' }, want: HAM, body: 'report', contains: ['has NOT identified this incoming email as spam', 'The café'] },
  { name: 'report-ifspam-gtube', command: 'REPORT_IFSPAM', request: { message: 'gtube' }, want: GTUBE_SPAM, body: 'report', contains: ['1000 GTUBE'] },
  { name: 'report-ifspam-ham', command: 'REPORT_IFSPAM', request: { message: 'ham' }, want: { ...HAM, report: '' } },
  { name: 'process-gtube', command: 'PROCESS', request: { message: 'gtube' }, want: GTUBE_SPAM, body: 'message', contains: ['X-Spam-Flag: YES', 'Content-Type: message/rfc822'] },
  { name: 'process-ham', command: 'PROCESS', request: { message: 'ham' }, want: HAM, body: 'message', contains: ['X-Spam-Status: No, score=-0.0 required=5.0'] },
  { name: 'process-8bit', command: 'PROCESS', request: { message: '8bit' }, want: { isSpam: false, score: 1, required: 5 }, body: 'message', contains: ['X-Spam-Status: No, score=1.0'] },
  { name: 'headers-gtube', command: 'HEADERS', request: { message: 'gtube' }, want: GTUBE_SPAM, body: 'headers', contains: ['X-Spam-Flag: YES'] },
  { name: 'headers-ham', command: 'HEADERS', request: { message: 'ham' }, want: HAM, body: 'headers', contains: ['X-Spam-Checker-Version: SpamAssassin 4.0.1'] },
  { name: 'tell-learn-spam', command: 'TELL', request: { message: 'gtube', tell: { messageClass: 'spam', set: ['local'] } }, want: { didSet: ['local'], didRemove: [] } },
  { name: 'tell-learn-spam-again', command: 'TELL', request: { message: 'gtube', tell: { messageClass: 'spam', set: ['local'] } }, want: { didSet: [], didRemove: [] } },
  { name: 'tell-forget', command: 'TELL', request: { message: 'gtube', tell: { remove: ['local'] } }, want: { didSet: [], didRemove: ['local'] } },
  { name: 'tell-learn-ham-with-user', command: 'TELL', request: { message: 'ham', user: 'nobody', tell: { messageClass: 'ham', set: ['local'] } }, want: { didSet: ['local'], didRemove: [] } },
  { name: 'error-unknown-command', command: 'CHECK', error: { exitCode: 76, message: /^spamd refused CHECK: 76 EX_PROTOCOL: Bad header line: FROB SPAMC\/1\.5$/ } },
  { name: 'error-header-without-colon', command: 'CHECK', error: { exitCode: 76, message: /76 EX_PROTOCOL: Bad header line: \(header not in 'Name: value' format\)$/ } },
  { name: 'error-user-control-chars', command: 'CHECK', error: { exitCode: 76, message: /\(User header contains control chars\)$/ } },
  { name: 'error-compress-gzip', command: 'CHECK', error: { exitCode: 76, message: /\(compression type not supported: gzip\)$/ } },
  { name: 'error-length-mismatch', command: 'CHECK', error: { exitCode: 76, message: /\(Content-Length mismatch: Expected 378 bytes, got 368 bytes\)$/ } },
  { name: 'error-tell-set-and-remove', command: 'TELL', error: { exitCode: 76, message: /Unable to set local and remove local in the same operation\.$/ } },
  { name: 'error-tell-not-allowed', command: 'TELL', error: { exitCode: 69, message: /^spamd refused TELL: 69 EX_UNAVAILABLE: Service Unavailable: TELL commands are not enabled, set the --allow-tell switch\.$/ } },
];

/** The result's fields that a row checks, in the row's terms. */
function check(g: Golden, got: unknown, reply: Buffer): void {
  const r = got as Record<string, unknown>;
  for (const [k, v] of Object.entries(g.want ?? {})) assert.deepEqual(r[k], v, `${k}`);
  if (g.body !== undefined) {
    const body = bodyOf(reply);
    const field = r[g.body];
    if (g.body === 'report') assert.equal(field, body.toString('utf8'));
    else assert.ok(Buffer.isBuffer(field) && field.equals(body), `${g.body} is the reply's body`);
    const text = g.body === 'report' ? String(field) : (field as Buffer).toString('utf8');
    for (const c of g.contains ?? []) assert.ok(text.includes(c), `body contains ${JSON.stringify(c)}`);
  }
}

test('every recorded exchange has a row, and every row its two files', () => {
  const names = new Set(goldens.map((g) => g.name));
  for (const g of goldens) {
    assert.doesNotThrow(() => fixture(`${g.name}.request`), `${g.name}.request`);
    assert.doesNotThrow(() => fixture(`${g.name}.reply`), `${g.name}.reply`);
  }
  assert.ok(names.size >= 27);
});

for (const g of goldens) {
  const reply = fixture(`${g.name}.reply`);
  if (g.request !== undefined) {
    const req = g.request;
    test(`${g.name}: formatRequest builds the request spamc sends, byte for byte`, () => {
      const { message: m, ...options } = req;
      const got = Buffer.concat(formatRequest(g.command, m === undefined ? undefined : message(m), options));
      assert.equal(got.toString('latin1'), fixture(`${g.name}.request`).toString('latin1'));
    });
  }
  if (g.error === undefined) {
    test(`${g.name}: spamd's reply reads to the wanted result, whole, byte by byte and split anywhere`, () => {
      const whole = read(g.command, reply);
      check(g, whole, reply);
      assert.deepEqual(read(g.command, reply, Array.from({ length: reply.length }, (_, i) => i + 1)), whole, 'one byte at a time');
      for (let cut = 0; cut <= reply.length; cut++) assert.deepEqual(read(g.command, reply, [cut]), whole, `split at ${cut}`);
    });
  } else {
    const e = g.error;
    test(`${g.name}: spamd's refusal is a 'server' error with its code ${e.exitCode} and text`, () => {
      for (const cuts of [[], Array.from({ length: reply.length }, (_, i) => i + 1)]) {
        assert.throws(() => read(g.command, reply, cuts), (err: unknown) => {
          assert.ok(err instanceof SpamdError);
          assert.equal(err.kind, 'server');
          assert.equal(err.exitCode, e.exitCode);
          assert.match(err.message, e.message);
          return true;
        });
      }
    });
  }
}

test('PROCESS of an 8-bit message: the body comes back byte for byte (latin1 0xE9, UTF-8, 0xFF, a lone CR)', () => {
  const got = read('PROCESS', fixture('process-8bit.reply')) as { message: Buffer };
  const sent = message('8bit');
  assert.ok(sent.includes(Buffer.from([0x20, 0x63, 0x61, 0x66, 0xe9, 0x2c])), 'the fixture has latin1 "café,"');
  assert.ok(messageBody(got.message).equals(messageBody(sent)));
});

test('HEADERS returns the header block up to and including the empty line', () => {
  const got = read('HEADERS', fixture('headers-ham.reply')) as { headers: Buffer };
  assert.ok(got.headers.subarray(-2).equals(Buffer.from('\n\n')));
  assert.equal(got.headers.indexOf('\n\n'), got.headers.length - 2);
});

// ------------------------------------------------------------ malformed replies

interface Bad {
  readonly why: string;
  readonly command: SpamdCommand;
  readonly reply: string | Buffer;
  readonly kind: SpamdErrorKind;
  readonly message: RegExp;
  readonly maxBytes?: number;
}

const OK = 'SPAMD/1.1 0 EX_OK\r\n';
const SPAM = 'Spam: True ; 1000.0 / 5.0\r\n';
const symbolsReply = (body: string): string => `${OK}Content-length: ${Buffer.byteLength(body, 'latin1')}\r\n${SPAM}\r\n${body}`;

const bad: readonly Bad[] = [
  { why: 'an empty reply (spamd closed without a word)', command: 'CHECK', reply: '', kind: 'protocol', message: /^spamd closed the connection without a reply to CHECK$/ },
  { why: 'a reply cut inside the status line', command: 'CHECK', reply: 'SPAMD/1.1 0 EX', kind: 'protocol', message: /^reply to CHECK truncated in the status line after 14 bytes: "SPAMD\/1.1 0 EX"$/ },
  { why: 'a reply cut inside the headers', command: 'CHECK', reply: `${OK}${SPAM}`, kind: 'protocol', message: /^reply to CHECK truncated in the headers after 46 bytes: "SPAMD\/1.1 0 EX_OK\\x0d\\x0aSpam: True/ },
  { why: 'a reply cut inside the body', command: 'SYMBOLS', reply: symbolsReply('GTUBE,NO_RECEIVED,NO_RELAYS').slice(0, -5), kind: 'protocol', message: /^reply to SYMBOLS truncated: Content-length 27, only 22 bytes of body$/ },
  { why: 'a PING answered by nothing but a partial line', command: 'PING', reply: 'SPAMD/1.5 0 PO', kind: 'protocol', message: /truncated in the status line/ },
  { why: 'not SPAMD at all (an HTTP server)', command: 'CHECK', reply: 'HTTP/1.1 400 Bad Request\r\n\r\n', kind: 'protocol', message: /^not a SPAMD reply: "H(TTP\/1.1 400 Bad Request\\x0d)?"$/ },
  { why: 'the status line without a code', command: 'CHECK', reply: 'SPAMD/1.1 EX_OK\r\n\r\n', kind: 'protocol', message: /^malformed status line: "SPAMD\/1.1 EX_OK"$/ },
  { why: 'a version that is not a number', command: 'CHECK', reply: 'SPAMD/1.x 0 EX_OK\r\n\r\n', kind: 'protocol', message: /^malformed status line/ },
  { why: 'a version 2 we do not speak', command: 'CHECK', reply: `SPAMD/2.0 0 EX_OK\r\n${SPAM}\r\n`, kind: 'protocol', message: /^unsupported protocol version SPAMD\/2.0 \(this client speaks SPAMD\/1.x\)/ },
  { why: 'control bytes in the status line', command: 'CHECK', reply: 'SPAMD/1.1 0 EX_OK\x1b[31m\r\n\r\n', kind: 'protocol', message: /^status line with control or 8-bit bytes: "SPAMD\/1.1 0 EX_OK\\x1b\[31m"$/ },
  { why: 'a non-zero code (EX_USAGE)', command: 'CHECK', reply: 'SPAMD/1.0 64 EX_USAGE\r\n', kind: 'server', message: /^spamd refused CHECK: 64 EX_USAGE: EX_USAGE$/ },
  { why: "spamd's own timeout (EX_TIMEOUT, 79, not in sysexits.h)", command: 'PROCESS', reply: 'SPAMD/1.0 79 Timeout: (300 second timeout while trying to PROCESS)\r\n', kind: 'server', message: /^spamd refused PROCESS: 79 EX_TIMEOUT: Timeout: \(300 second/ },
  { why: 'a code no table knows', command: 'CHECK', reply: 'SPAMD/1.0 3 odd\r\n', kind: 'server', message: /^spamd refused CHECK: 3 unknown code: odd$/ },
  { why: 'a score that is not a number', command: 'CHECK', reply: `${OK}Spam: True ; lots / 5.0\r\n\r\n`, kind: 'protocol', message: /^Spam header is not "True\|False ; SCORE \/ REQUIRED": "Spam: True ; lots \/ 5.0"$/ },
  { why: 'a threshold that is not a number', command: 'CHECK', reply: `${OK}Spam: False ; 1.0 / NaN\r\n\r\n`, kind: 'protocol', message: /^Spam header is not/ },
  { why: 'a verdict that is neither true nor false', command: 'CHECK', reply: `${OK}Spam: Maybe ; 1.0 / 5.0\r\n\r\n`, kind: 'protocol', message: /^Spam header is not/ },
  { why: 'a score absurdly long', command: 'CHECK', reply: `${OK}Spam: True ; 1${'0'.repeat(30)} / 5.0\r\n\r\n`, kind: 'protocol', message: /^Spam header is not/ },
  { why: 'no Spam header in a CHECK reply', command: 'CHECK', reply: `${OK}\r\n`, kind: 'protocol', message: /^reply to CHECK has no Spam header$/ },
  { why: 'no Content-length in a SYMBOLS reply', command: 'SYMBOLS', reply: `${OK}${SPAM}\r\nGTUBE`, kind: 'protocol', message: /^reply to SYMBOLS has no Content-length header$/ },
  { why: 'no Content-length in a PROCESS reply', command: 'PROCESS', reply: `${OK}${SPAM}\r\nSubject: x\n\nbody\n`, kind: 'protocol', message: /^reply to PROCESS has no Content-length header$/ },
  { why: 'a Content-length that is not a number', command: 'PROCESS', reply: `${OK}Content-length: 12abc\r\n${SPAM}\r\n`, kind: 'protocol', message: /^Content-length is not a number of bytes: "Content-length: 12abc"$/ },
  { why: 'a negative Content-length', command: 'PROCESS', reply: `${OK}Content-length: -5\r\n${SPAM}\r\n`, kind: 'protocol', message: /^Content-length is not a number of bytes/ },
  { why: 'Content-length given twice', command: 'PROCESS', reply: `${OK}Content-length: 4\r\nContent-length: 5\r\n${SPAM}\r\nbody`, kind: 'protocol', message: /^header Content-length given twice/ },
  { why: 'Spam given twice', command: 'CHECK', reply: `${OK}${SPAM}Spam: False ; 0.0 / 5.0\r\n\r\n`, kind: 'protocol', message: /^header Spam given twice/ },
  { why: 'a header line without a colon', command: 'CHECK', reply: `${OK}${SPAM}garbage\r\n\r\n`, kind: 'protocol', message: /^header line not in "Name: value" form: "garbage"$/ },
  { why: 'a NUL in a header line', command: 'CHECK', reply: `${OK}X-Whatever: a\x00b\r\n${SPAM}\r\n`, kind: 'protocol', message: /^header line with control or 8-bit bytes: "X-Whatever: a\\x00b"$/ },
  { why: '8-bit bytes in a header line', command: 'CHECK', reply: Buffer.from(`${OK}X-Whatever: caf\xe9\r\n${SPAM}\r\n`, 'latin1'), kind: 'protocol', message: /^header line with control or 8-bit bytes: "X-Whatever: caf\\xe9"$/ },
  { why: 'a rule name carrying CR LF and a header (header injection)', command: 'SYMBOLS', reply: symbolsReply('GTUBE,EVIL\r\nX-Spam-Flag: NO'), kind: 'protocol', message: /^SYMBOLS: rule name "EVIL\\x0d\\x0aX-Spam-Flag: NO" is not \[A-Za-z0-9_\]\+$/ },
  { why: 'a rule name with a space', command: 'SYMBOLS', reply: symbolsReply('GTUBE,NO RECEIVED'), kind: 'protocol', message: /rule name "NO RECEIVED" is not/ },
  { why: 'a rule name with 8-bit bytes', command: 'SYMBOLS', reply: Buffer.from(symbolsReply('GTUBE,CAF\xc9'), 'latin1'), kind: 'protocol', message: /rule name "CAF\\xc9" is not/ },
  { why: 'an empty rule name (two commas)', command: 'SYMBOLS', reply: symbolsReply('GTUBE,,NO_RELAYS'), kind: 'protocol', message: /rule name "" is not/ },
  { why: 'a trailing comma', command: 'SYMBOLS', reply: symbolsReply('GTUBE,'), kind: 'protocol', message: /rule name "" is not/ },
  { why: 'DidSet naming something other than local or remote', command: 'TELL', reply: `${OK}DidSet: cloud\r\n\r\n`, kind: 'protocol', message: /^"DidSet: cloud": "cloud" is neither local nor remote$/ },
  { why: 'any reply to SKIP (it has none)', command: 'SKIP', reply: `${OK}\r\n`, kind: 'protocol', message: /^spamd answered SKIP, which has no reply/ },
  { why: 'a body larger than the limit, refused from its Content-length alone', command: 'PROCESS', reply: `${OK}Content-length: 5000\r\n${SPAM}\r\n`, kind: 'too-large', maxBytes: 4096, message: /^reply to PROCESS announces 5000 bytes of body, more than the limit of 4096 bytes for the whole reply$/ },
  { why: 'a body that fits only without its headers', command: 'PROCESS', reply: `${OK}Content-length: 4090\r\n${SPAM}\r\n`, kind: 'too-large', maxBytes: 4096, message: /announces 4090 bytes/ },
  { why: 'headers that never end', command: 'CHECK', reply: OK + 'X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n'.repeat(HEADER_LIMIT / 40), kind: 'protocol', message: /^reply to CHECK: status line and headers longer than 16384 bytes/ },
  { why: 'headers longer than a small reply limit', command: 'CHECK', reply: OK + 'X-Filler: aaaaaaaaaa\r\n'.repeat(20), kind: 'too-large', maxBytes: 200, message: /^reply to CHECK: status line and headers longer than 200 bytes/ },
  { why: 'a status line that never ends', command: 'PING', reply: `SPAMD/1.5 0 ${'O'.repeat(HEADER_LIMIT)}`, kind: 'protocol', message: /longer than 16384 bytes: "SPAMD\/1.5 0 O+"\.\.\. \(\d+ bytes\)$/ },
];

for (const b of bad) {
  test(`a malformed reply is refused: ${b.why} (${b.kind})`, () => {
    const bytes = typeof b.reply === 'string' ? Buffer.from(b.reply, 'latin1') : b.reply;
    const splits = bytes.length > 2000 ? [[]] : [[], Array.from({ length: bytes.length }, (_, i) => i + 1)];
    for (const cuts of splits) {
      assert.throws(() => read(b.command, bytes, cuts, b.maxBytes), (err: unknown) => {
        assert.ok(err instanceof SpamdError, `a SpamdError, not ${String(err)}`);
        assert.equal(err.kind, b.kind);
        assert.match(err.message, b.message);
        assert.match(err.message, /^[\x20-\x7e]*$/, 'the message is one line of printable ASCII');
        return true;
      });
    }
  });
}

// ------------------------------------------------------------ tolerated replies

const tolerated: readonly { why: string; command: SpamdCommand; reply: string; want: unknown }[] = [
  { why: 'lines ending in LF alone', command: 'CHECK', reply: 'SPAMD/1.1 0 EX_OK\nSpam: False ; 1.5 / 5.0\n\n', want: { isSpam: false, score: 1.5, required: 5 } },
  { why: 'header names in any case, unknown headers ignored', command: 'CHECK', reply: `${OK}X-Future: 1\r\nSPAM: true ; 7 / 5\r\n\r\n`, want: { isSpam: true, score: 7, required: 5 } },
  { why: 'REPORT_IFSPAM\'s Yes and No', command: 'REPORT_IFSPAM', reply: `${OK}Content-length: 0\r\nSpam: Yes ; 6.1 / 5.0\r\n\r\n`, want: { isSpam: true, score: 6.1, required: 5, report: '' } },
  { why: 'a negative score and "-0.0" read as 0', command: 'CHECK', reply: `${OK}Spam: False ; -2.3 / -0.0\r\n\r\n`, want: { isSpam: false, score: -2.3, required: 0 } },
  { why: 'bytes after a complete reply (TELL sends a stray CRLF)', command: 'CHECK', reply: `${OK}${SPAM}\r\nanything at all`, want: GTUBE_SPAM },
  { why: 'bytes after the Content-length body', command: 'SYMBOLS', reply: `${symbolsReply('GTUBE')}\r\n`, want: { ...GTUBE_SPAM, tests: ['GTUBE'] } },
  { why: 'SYMBOLS ending in CRLF as protocol 1.2 did', command: 'SYMBOLS', reply: symbolsReply('GTUBE,NO_RELAYS\r\n'), want: { ...GTUBE_SPAM, tests: ['GTUBE', 'NO_RELAYS'] } },
  { why: 'SYMBOLS with no rule hit', command: 'SYMBOLS', reply: symbolsReply(''), want: { ...GTUBE_SPAM, tests: [] } },
  { why: 'a TELL reply with both DidSet and DidRemove', command: 'TELL', reply: `${OK}DidSet: local\r\nDidRemove: remote, local\r\n\r\n\r\n`, want: { didSet: ['local'], didRemove: ['remote', 'local'] } },
];

for (const c of tolerated) {
  test(`a reply is read despite ${c.why}`, () => {
    assert.deepEqual(read(c.command, Buffer.from(c.reply, 'latin1')), c.want);
  });
}

test('the reader keeps its answer: a complete reply is returned again, a fault is thrown again', () => {
  const r = new ReplyReader('CHECK');
  const got = r.push(Buffer.from(`${OK}${SPAM}\r\n`));
  assert.deepEqual(got, GTUBE_SPAM);
  assert.equal(r.push(Buffer.from('more')), got);
  assert.equal(r.end(), got);
  const f = new ReplyReader('CHECK');
  assert.throws(() => f.push(Buffer.from('NOPE')), { kind: 'protocol' });
  assert.throws(() => f.push(Buffer.from(OK)), { kind: 'protocol' });
  assert.throws(() => f.end(), { kind: 'protocol' });
});

test('an error status is final at its line: nothing after it is awaited', () => {
  assert.throws(() => new ReplyReader('PROCESS').push(Buffer.from('SPAMD/1.0 76 Bad header line: x\r\n')), { kind: 'server', exitCode: 76 });
});

// ------------------------------------------------------------------- requests

test('the message is sent as given: the very Buffer, not a re-encoded copy', () => {
  const m = message('8bit');
  const pieces = formatRequest('PROCESS', m);
  assert.equal(pieces.length, 2);
  assert.equal(pieces[1], m);
  assert.equal(pieces[0]?.toString('latin1'), `PROCESS SPAMC/1.5\r\nContent-length: ${m.length}\r\n\r\n`);
});

test('Content-length counts bytes, not characters', () => {
  const m = Buffer.from('Subject: é€\n\n€\n', 'utf8');
  assert.match(formatRequest('CHECK', m)[0]?.toString('latin1') ?? '', /^Content-length: 20\r$/m);
});

test('an empty message is sent with Content-length: 0', () => {
  assert.equal(formatRequest('CHECK', Buffer.alloc(0))[0]?.toString('latin1'), 'CHECK SPAMC/1.5\r\nContent-length: 0\r\n\r\n');
});

const tellHeads: readonly { tell: RequestOptions['tell']; want: string; why: string }[] = [
  { why: 'report: learn as spam locally, tell the remote databases', tell: { messageClass: 'spam', set: ['remote', 'local'] }, want: 'Message-class: spam\r\nSet: local,remote\r\n' },
  { why: 'revoke: learn as ham, remove from the remote databases', tell: { messageClass: 'ham', set: ['local'], remove: ['remote'] }, want: 'Message-class: ham\r\nSet: local\r\nRemove: remote\r\n' },
  { why: 'forget everywhere, each database once', tell: { remove: ['local', 'remote', 'local'] }, want: 'Remove: local,remote\r\n' },
];

for (const c of tellHeads) {
  test(`TELL request headers, in spamc's order: ${c.why}`, () => {
    const head = formatRequest('TELL', Buffer.from('x\n'), { tell: c.tell, user: 'alice@example.org' })[0]?.toString('latin1');
    assert.equal(head, `TELL SPAMC/1.5\r\n${c.want}User: alice@example.org\r\nContent-length: 2\r\n\r\n`);
  });
}

const refused: readonly { why: string; command: SpamdCommand; message?: Buffer; options?: RequestOptions; error: RegExp }[] = [
  { why: 'a user name with CR LF (header injection)', command: 'CHECK', message: Buffer.from('x'), options: { user: 'alice\r\nContent-length: 0' }, error: /cannot be sent to spamd/ },
  { why: 'a user name with a space', command: 'CHECK', message: Buffer.from('x'), options: { user: 'alice smith' }, error: /cannot be sent to spamd/ },
  { why: 'an empty user name', command: 'CHECK', message: Buffer.from('x'), options: { user: '' }, error: /cannot be sent to spamd/ },
  { why: 'a user name of 256 bytes', command: 'CHECK', message: Buffer.from('x'), options: { user: 'a'.repeat(256) }, error: /cannot be sent to spamd/ },
  { why: 'an unknown command', command: 'FROB' as SpamdCommand, message: Buffer.from('x'), error: /unknown spamd command "FROB"/ },
  { why: 'CHECK without a message', command: 'CHECK', error: /CHECK needs a message/ },
  { why: 'PING with a message', command: 'PING', message: Buffer.from('x'), error: /PING carries no message/ },
  { why: 'TELL options on CHECK', command: 'CHECK', message: Buffer.from('x'), options: { tell: { remove: ['local'] } }, error: /TELL options given for CHECK/ },
  { why: 'TELL without options', command: 'TELL', message: Buffer.from('x'), error: /TELL needs its options/ },
  { why: 'TELL with nothing to set or remove', command: 'TELL', message: Buffer.from('x'), options: { tell: { messageClass: 'spam', set: [] } }, error: /needs something to set or remove/ },
  { why: 'TELL setting and removing local at once (spamd refuses it)', command: 'TELL', message: Buffer.from('x'), options: { tell: { messageClass: 'spam', set: ['local'], remove: ['local'] } }, error: /cannot set and remove local at once/ },
  { why: 'TELL set without a class (spamd would learn it as ham)', command: 'TELL', message: Buffer.from('x'), options: { tell: { set: ['local'] } }, error: /needs a messageClass/ },
  { why: 'TELL with an unknown class', command: 'TELL', message: Buffer.from('x'), options: { tell: { messageClass: 'eggs' as 'spam', set: ['local'] } }, error: /messageClass must be spam or ham/ },
  { why: 'TELL with an unknown database', command: 'TELL', message: Buffer.from('x'), options: { tell: { remove: ['cloud' as 'local'] } }, error: /"cloud" is neither local nor remote/ },
];

for (const r of refused) {
  test(`a request that cannot be sent is a RangeError: ${r.why}`, () => {
    assert.throws(() => formatRequest(r.command, r.message, r.options), (err: unknown) => err instanceof RangeError && r.error.test(err.message));
  });
}
