// The site spam check at end of message, with the real Debian SpamAssassin:
// the checkers delivery uses (libexec/spam-checker.pl through SpamCheckers),
// one running as a real service user. The filter is driven with the events
// Postfix sends (header values without the eaten space, CRLF body chunks)
// and an end-of-message session that records what it asks the MTA to do.
// What is checked is what the sender and the recipient would see: the reply
// code and text, the headers added and deleted. The message bytes the
// checker gets are compared with the original (rebuildMessage). Waits are
// hang detectors, not windows: compiling the rules takes seconds.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { createLogger } from '../../src/log.js';
import type { EomSession, MilterFilter, MilterVerdict } from '../../src/milter/index.js';
import { createSpamFilter, rebuildMessage, receivedHeader, spamHeaderFields, type SpamFilterSettings } from '../../src/milter/spam-filter.js';
import { SpamCheckers } from '../../src/workers/spam-checkers.js';
import { findProgram, requireProgram, requireRoot } from '../helpers/components.js';
import { ensureUserWithHome } from '../helpers/users.js';

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';
const HAM = 'From: Bob Example <bob@remote.test>\r\nTo: Alice <alice@example.test>\r\nSubject: Lunch on Thursday?\r\nDate: Mon, 06 Jan 2025 10:59:58 +0100\r\nMessage-ID: <lunch-4711@remote.test>\r\n\r\nHi, shall we meet at noon on Thursday? The usual place.\r\n\r\nBob\r\n';
const SPAM = `From: Sender <s@remote.test>\r\nTo: alice@example.test\r\nSubject: Cheap offer\r\nDate: Mon, 06 Jan 2025 10:00:00 +0000\r\nMessage-ID: <gtube-1@remote.test>\r\n\r\nThis is the GTUBE.\r\n\r\n${GTUBE}\r\n`;
const SLOW_MS = 180_000;

const lines: string[] = [];
const log = createLogger({ format: 'text', level: 'info', write: (l) => lines.push(l) });

/** Splits a CRLF message into the header events a filter sees (the one space after the colon taken off, continuation lines joined by LF, as Postfix sends them) and the body. */
function events(message: string): { headers: { name: string; raw: Buffer }[]; body: Buffer } {
  const end = message.indexOf('\r\n\r\n');
  const head = message.slice(0, end);
  const fields = head.split(/\r\n(?![ \t])/);
  const headers = fields.map((f) => {
    const colon = f.indexOf(':');
    let value = f.slice(colon + 1).replace(/\r\n/g, '\n');
    if (value.startsWith(' ')) value = value.slice(1);
    return { name: f.slice(0, colon), raw: Buffer.from(value, 'latin1') };
  });
  return { headers, body: Buffer.from(message.slice(end + 4), 'latin1') };
}

interface Run { verdict: MilterVerdict; mods: string[]; skipped: boolean }

/** One message through a new filter instance: envfrom, each header, the body in chunks of at most `chunk` bytes, eom. */
async function send(filter: MilterFilter, message: string, o: { chunk?: number } = {}): Promise<Run> {
  const mods: string[] = [];
  const s = {
    macro: (n: string) => (n === 'i' ? 'TESTQ1' : undefined),
    recipients: ['alice@example.test'],
    sender: 's@remote.test',
    addHeader: (n: string, v: string | Buffer) => mods.push(`add ${n}:${String(v)}`),
    insertHeader: (i: number, n: string, v: string | Buffer) => mods.push(`insert ${i} ${n}:${String(v)}`),
    changeHeader: (n: string, i: number, v: string | Buffer | null) => mods.push(`change ${n} ${i} ${v === null ? 'delete' : String(v)}`),
    addRecipient: () => mods.push('addrcpt'),
    deleteRecipient: () => mods.push('delrcpt'),
    changeSender: () => mods.push('chgfrom'),
    replaceBody: () => mods.push('replbody'),
    quarantine: (r: string) => mods.push(`quarantine ${r}`),
    progress: () => undefined,
  } satisfies EomSession;
  const { headers, body } = events(message);
  await filter.envfrom?.(s, 's@remote.test', []);
  for (const h of headers) await filter.header?.(s, h.name, h.raw.toString('latin1'), h.raw);
  await filter.eoh?.(s);
  let skipped = false;
  const size = o.chunk ?? 65535;
  for (let at = 0; at < body.length && !skipped; at += size) skipped = (await filter.body?.(s, body.subarray(at, at + size))) === 'skip';
  const verdict = await filter.eom?.(s);
  return { verdict, mods, skipped };
}

const settings = (over: Partial<SpamFilterSettings> = {}): (() => SpamFilterSettings) => () => ({
  rejectScore: 10, onError: 'continue', messageSize: 500 * 1024, timeoutMs: 120_000, ...over,
});

test('the message is rebuilt from the header events and body chunks with LF line ends', () => {
  const msg = 'Subject: a\r\n\tfolded line\r\nX-Tab: \tx\r\nTo:  two spaces\r\n\r\nbody\r\nline\r\n';
  const e = events(msg);
  assert.equal(rebuildMessage(e.headers, [e.body.subarray(0, 3), e.body.subarray(3)]).toString('latin1'), msg.replace(/\r\n/g, '\n'));
  // A header without a space after its colon comes back with one: spamd does not mind, and no byte of it is delivered.
  assert.equal(rebuildMessage(events('X-Odd:x\r\n\r\n').headers, []).toString('latin1'), 'X-Odd: x\n\n');
});

test('the checked message gets the Received line the MTA writes for this hop (Postfix hides it from milters)', () => {
  const date = new Date(Date.UTC(2025, 0, 6, 10, 0, 0));
  const rows: { facts: Parameters<typeof receivedHeader>[0]; want: string }[] = [
    {
      facts: { helo: 'client.test', clientName: 'mail.client.test', clientAddress: '192.0.2.1', by: 'mx.example.test', queueId: '4AB', recipients: ['alice@example.test'], sender: 'bob@remote.test', date },
      want: 'X-Envelope-From: <bob@remote.test>\nReceived: from client.test (mail.client.test [192.0.2.1])\n\tby mx.example.test (Postfix) with ESMTP id 4AB\n\tfor <alice@example.test>; Mon, 06 Jan 2025 10:00:00 +0000\n',
    },
    {
      // Several recipients: no "for"; nothing known: "unknown"; a client's control bytes never start a header line.
      facts: { helo: 'evil\r\nX-Spam-Flag: NO', clientAddress: 'IPv6:2001:db8::1', recipients: ['a@x', 'b@x'], date },
      want: 'Received: from evil??X-Spam-Flag:?NO (unknown [2001:db8::1])\n\tby localhost (Postfix) with ESMTP; Mon, 06 Jan 2025 10:00:00 +0000\n',
    },
  ];
  for (const r of rows) assert.equal(receivedHeader(r.facts).toString('latin1'), r.want);
});

test('delivery\'s X-Spam-* block becomes milter header fields, folds as LF TAB', () => {
  assert.deepEqual(spamHeaderFields('X-Spam-Flag: NO\nX-Spam-Level: \nX-Spam-Status: No, score=0.1 required=5.0 tests=A,\n\tB\n'), [
    { name: 'X-Spam-Flag', value: 'NO' }, { name: 'X-Spam-Level', value: '' }, { name: 'X-Spam-Status', value: 'No, score=0.1 required=5.0 tests=A,\n\tB' },
  ]);
});

test('without SpamAssassin (no checkers) a message is accepted unchecked, or refused 451 4.7.1 with on_error tempfail', async () => {
  const who = () => Promise.resolve({ user: 'x', uid: 4242, gid: 4242, home: '/' });
  const open = await send(createSpamFilter({ checkers: undefined, identity: who, settings: settings(), log })(), HAM);
  assert.equal(open.verdict, undefined);
  assert.deepEqual(open.mods, ['add X-Spam-Status:unchecked (SpamAssassin not installed)']);
  const closed = await send(createSpamFilter({ checkers: undefined, identity: who, settings: settings({ onError: 'tempfail' }), log })(), HAM);
  assert.deepEqual(closed.verdict, { result: 'tempfail', code: '451', xcode: '4.7.1', text: 'Spam check unavailable, try again later' });
  assert.deepEqual(closed.mods, []);
});

test('the service user is never root, and an unknown one is a failure per on_error', async () => {
  const root = await send(createSpamFilter({ checkers: undefined, identity: () => Promise.resolve({ user: 'root', uid: 0, gid: 0, home: '/root' }), settings: settings({ onError: 'tempfail' }), log })(), HAM);
  assert.equal(typeof root.verdict === 'object' && root.verdict !== null ? root.verdict.code : undefined, '451');
  assert.ok(lines.some((l) => /milter\.spam\.user root is root/.test(l)), 'the log says why');
  const unknown = await send(createSpamFilter({ checkers: undefined, identity: () => Promise.resolve('no user "ghost"'), settings: settings(), log })(), HAM);
  assert.deepEqual(unknown.mods, ['add X-Spam-Status:unchecked (checker not available)']);
});

test('a message over milter.limits.message_size is not checked: the body is skipped and the header says so', async () => {
  const big = `Subject: big\r\n\r\n${'x'.repeat(100)}\r\n`;
  const r = await send(createSpamFilter({ checkers: undefined, identity: () => Promise.resolve('unused'), settings: settings({ messageSize: 64 }), log })(), big, { chunk: 40 });
  assert.equal(r.skipped, true, 'the filter asked for no more body chunks');
  assert.deepEqual(r.mods, ['add X-Spam-Status:unchecked (message larger than 64 bytes)']);
});

// With the real SpamAssassin, as a real service user.
let checkers: SpamCheckers | undefined;
let runDir: string | undefined;
let user: ReturnType<typeof ensureUserWithHome> | undefined;

function needs(t: TestContext): boolean {
  if (!requireRoot(t, 'the checker runs as a real service user')) return false;
  return requireProgram(t, 'spamassassin', 'spamassassin') !== undefined;
}

before(() => {
  if (process.getuid?.() !== 0 || findProgram('spamassassin') === undefined) return;
  user = ensureUserWithHome('mpt-milter-spam');
  runDir = mkdtempSync(join(tmpdir(), 'mailprocd-milter-spam-'));
  // The checker, as the service user, must reach its own directory below it (users/<uid>, 0700, the user's).
  chmodSync(runDir, 0o755);
  checkers = new SpamCheckers({
    runDir, perl: 'perl', idleMs: 600_000, maxCheckers: 2, startTimeoutMs: SLOW_MS, networkTests: false,
    bayesSyncMs: 300_000, bayesSyncMessages: 1000, maxSize: 600 * 1024, log,
  });
});

after(async () => {
  await checkers?.close();
  if (runDir !== undefined) rmSync(runDir, { recursive: true, force: true });
});


const realFilter = (over: Partial<SpamFilterSettings> = {}): MilterFilter => {
  const u = user as NonNullable<typeof user>;
  return createSpamFilter({ checkers, identity: () => Promise.resolve({ user: u.name, uid: u.uid, gid: u.gid, home: u.home }), settings: settings(over), log })();
};

test('GTUBE is refused with 550 5.7.1 at end of message, nothing added', { timeout: SLOW_MS * 2 }, async (t) => {
  if (!needs(t)) return;
  const r = await send(realFilter(), SPAM);
  assert.equal(typeof r.verdict, 'object', `refused, not accepted with ${r.mods.join(', ')}`);
  const v = r.verdict as { result: string; code: string; xcode: string; text: string };
  assert.deepEqual([v.result, v.code, v.xcode], ['reject', '550', '5.7.1']);
  assert.match(v.text, /^Message refused as spam \(score 1\d\d\d\.\d, limit 10\.0\)$/);
  assert.deepEqual(r.mods, []);
});

test('ham gets X-Spam-Flag: NO, X-Spam-Level and X-Spam-Status as delivery writes them; forged X-Spam-* are deleted first', { timeout: SLOW_MS * 2 }, async (t) => {
  if (!needs(t)) return;
  const forged = HAM.replace('Subject:', 'X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-100\r\nx-spam-flag: NO\r\nSubject:');
  const r = await send(realFilter(), forged);
  assert.equal(r.verdict, undefined, 'accepted');
  const deletes = r.mods.filter((m) => m.startsWith('change '));
  assert.deepEqual(deletes, ['change X-Spam-Flag 2 delete', 'change X-Spam-Flag 1 delete', 'change X-Spam-Status 1 delete']);
  const adds = r.mods.filter((m) => m.startsWith('add '));
  assert.equal(adds.length, 3, adds.join('\n'));
  assert.equal(adds[0], 'add X-Spam-Flag:NO');
  assert.match(adds[1] ?? '', /^add X-Spam-Level:\**$/);
  assert.match(adds[2] ?? '', /^add X-Spam-Status:No, score=-?\d+\.\d required=5\.0 tests=/);
});

test('below milter.spam.reject_score a spam message is accepted with X-Spam-Flag: YES', { timeout: SLOW_MS * 2 }, async (t) => {
  if (!needs(t)) return;
  const r = await send(realFilter({ rejectScore: 5000 }), SPAM);
  assert.equal(r.verdict, undefined, 'accepted');
  assert.equal(r.mods[0], 'add X-Spam-Flag:YES');
  assert.equal(r.mods[1], `add X-Spam-Level:${'*'.repeat(50)}`);
  assert.match(r.mods[2] ?? '', /^add X-Spam-Status:Yes, score=1\d\d\d\.\d required=5\.0 tests=.*GTUBE/s);
});
