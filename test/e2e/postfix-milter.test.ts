// The milter endpoint behind a real Postfix: `smtpd_milters = unix:<our
// milter socket>` and `milter_default_action = tempfail`, as docs/postfix.md
// shows, mail delivered by mailprocd over LMTP. No check_policy_service:
// every refusal here comes through the milter. With the real SpamAssassin,
// the site check running as a service user of the test's own:
//  - a non-subscriber posting to the closed list gets 554 5.7.1 at RCPT
//    (Postfix logs milter-reject), exactly the policy endpoint's answer;
//  - GTUBE gets 550 5.7.1 at end of data, nothing queued;
//  - a message scoring between the service user's required_score and
//    milter.spam.reject_score is delivered with X-Spam-Flag: YES, and the
//    X-Spam-* lines a sender forged are gone;
//  - a ham message arrives with our X-Spam-* lines added after its headers,
//    and every header and body byte the client sent is there unchanged;
//  - with mailprocd stopped, Postfix answers the client 451 4.7.1 and
//    queues nothing.
// Every wait is a hang detector far above the real latencies.
import assert from 'node:assert/strict';
import { chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { requireProgram, requireRoot } from '../helpers/components.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { newFiles, splitTrace, stored } from '../helpers/mailbox.js';
import { startPostfix, type TestPostfix } from '../helpers/postfix.js';
import { dataBlock, RawClient, type Reply } from '../helpers/raw-client.js';
import { ensureUserWithHome } from '../helpers/users.js';

const RULES = 'alice@example.test  maildir:${MAIL}/alice/Maildir/\ndev@example.test  maildir:${MAIL}/dev/Maildir/\n';
const LISTS = 'dev@example.test  closed  subscribers=alice@example.test,bob@example.test\n';
const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';
/** A spam check may wait for the checker to start (rules compiled): a hang detector, not a window. */
const SLOW_MS = 150_000;

/**
 * Header bytes a careless hop would change: a fold with a tab, a field with
 * no space after its colon, two spaces, trailing blanks, 8-bit UTF-8, a long
 * folded signature-like field. Body with a line that begins with a dot.
 */
const HAM_HEADERS = [
  'From: Bob Example <bob@remote.test>',
  'To: Alice <alice@example.test>',
  'Subject: Lunch on Thursday?\r\n\tand the notes',
  'Date: Mon, 06 Jan 2025 10:59:58 +0100',
  'Message-ID: <lunch-4711@remote.test>',
  'X-Tight:no-space-after-colon',
  'X-Two:  two spaces',
  'X-Trailing: blanks after   ',
  'X-Utf8: Grüße aus Köln',
  'DKIM-Signature: v=1; a=rsa-sha256; d=remote.test; s=sel;\r\n\th=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n\tb=dGVzdA==',
].join('\r\n') + '\r\n';
const HAM_BODY = 'Hi Alice, shall we meet at noon on Thursday? The usual place.\r\n.a line that starts with a dot\r\n\r\nBob\r\n';
/** All capitals in Subject: 6 points with the service user's user_prefs below; with the other rules between required 5 and reject 10. */
const CAPS = 'From: Bob Example <bob@remote.test>\r\nTo: alice@example.test\r\nSubject: MEETING NOTES FOR THURSDAY\r\nDate: Mon, 06 Jan 2025 10:59:58 +0100\r\nMessage-ID: <caps-1@remote.test>\r\nX-Spam-Flag: NO\r\nX-Spam-Status: No, score=-5.0 required=5.0 tests=FORGED\r\n\r\nHi Alice, the notes from the meeting are below.\r\n\r\nBob\r\n';
const SPAM = `From: Sender <s@remote.test>\r\nTo: alice@example.test\r\nSubject: Cheap offer\r\nDate: Mon, 06 Jan 2025 10:00:00 +0000\r\nMessage-ID: <gtube-1@remote.test>\r\n\r\nThis is the GTUBE.\r\n\r\n${GTUBE}\r\n`;

function components(t: TestContext): boolean {
  return requireRoot(t, 'Postfix starts its master as root; the spam checker runs as a service user')
    && requireProgram(t, 'postfix', 'postfix') !== undefined
    && requireProgram(t, 'spamassassin', 'spamassassin') !== undefined;
}

async function until<T>(what: string, probe: () => T | undefined, diag: () => string, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${diag()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Sent {
  readonly mail: Reply;
  readonly rcpts: readonly Reply[];
  /** The reply to the end of data; undefined when no recipient was accepted. */
  readonly data?: Reply;
}

/** One SMTP transaction through Postfix, with the exact message bytes given. */
async function send(port: number, from: string, to: readonly string[], message: string): Promise<Sent> {
  const c = await RawClient.open({ port });
  try {
    await c.reply(SLOW_MS);
    await c.command('EHLO client.test', SLOW_MS);
    const mail = await c.command(`MAIL FROM:<${from}>`, SLOW_MS);
    if (mail.code !== 250) return { mail, rcpts: [] };
    const rcpts: Reply[] = [];
    for (const r of to) rcpts.push(await c.command(`RCPT TO:<${r}>`, SLOW_MS));
    if (!rcpts.some((r) => r.code === 250)) return { mail, rcpts };
    const go = await c.command('DATA', SLOW_MS);
    if (go.code !== 354) return { mail, rcpts, data: go };
    c.write(dataBlock(message));
    const data = await c.reply(SLOW_MS);
    await c.command('QUIT', SLOW_MS).catch(() => undefined);
    return { mail, rcpts, data };
  } finally {
    c.close();
  }
}

/** The service user the site check runs as, with user_prefs that make an all-capitals Subject worth 6 points. */
function siteUser(): { name: string } {
  const u = ensureUserWithHome('mpt-milter-site');
  const dir = join(u.home, '.spamassassin');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chownSync(dir, u.uid, u.gid);
  const prefs = join(dir, 'user_prefs');
  writeFileSync(prefs, 'score SUBJ_ALL_CAPS 6\n', { mode: 0o600 });
  chownSync(prefs, u.uid, u.gid);
  return u;
}

test('Postfix with our milter: closed list refused at RCPT, GTUBE refused at end of data, ham and grey mail delivered with X-Spam-* and the original bytes, and a tempfail when we are down', { timeout: 600_000 }, async (t) => {
  if (!components(t)) return;
  const user = siteUser();
  const d: TestDaemon = await startDaemon({
    rules: RULES, lists: LISTS,
    config: {
      lmtp: { socket: { group: 'postfix' } },
      milter: {
        socket: { group: 'postfix' }, filter_timeout: '200s',
        spam: { enabled: true, user: user.name, reject_score: 10, on_error: 'tempfail' },
      },
      spam: { timeout: `${SLOW_MS / 1000}s` },
    },
  });
  let pf: TestPostfix | undefined;
  let stopped = false;
  try {
    pf = await startPostfix({
      lmtpSocket: d.socket, recipients: ['alice@example.test', 'dev@example.test'],
      extraMainCf: `smtpd_milters = unix:${d.milterSocket}\nmilter_default_action = tempfail\n`,
    });
    const diag = (): string => `--- maillog ---\n${pf?.logs() ?? ''}\n--- mailprocd ---\n${d.logs.slice(-40).join('\n')}`;
    const port = pf.smtpPort;

    // The closed list: refused at RCPT by the milter, with the policy endpoint's code and text.
    const outsider = await send(port, 'eve@outside.test', ['dev@example.test'], 'Subject: hi\r\n\r\nhello\r\n');
    assert.equal(outsider.rcpts[0]?.line, '554 5.7.1 <dev@example.test>: Recipient address rejected: Only subscribers may post to this list', diag());
    assert.equal(outsider.data, undefined, 'no DATA: nothing accepted');
    await pf.waitForLog(/milter-reject: RCPT from .*554 5\.7\.1 <dev@example\.test>/);

    // GTUBE: refused at the end of data, before Postfix queues it.
    const spam = await send(port, 's@remote.test', ['alice@example.test'], SPAM);
    assert.equal(spam.rcpts[0]?.code, 250, diag());
    assert.equal(spam.data?.code, 550, `${JSON.stringify(spam.data)}\n${diag()}`);
    assert.match(spam.data?.line ?? '', /^550 5\.7\.1 Message refused as spam \(score 1\d\d\d\.\d, limit 10\.0\)$/);
    await pf.waitForLog(/milter-reject: END-OF-MESSAGE from .*: 5\.7\.1 Message refused as spam/);

    // Ham: accepted, delivered over LMTP, our X-Spam-* after the headers, every byte sent still there.
    const ham = await send(port, 'bob@remote.test', ['alice@example.test'], HAM_HEADERS + '\r\n' + HAM_BODY);
    assert.equal(ham.data?.code, 250, `${JSON.stringify(ham.data)}\n${diag()}`);
    const maildir = join(d.mail, 'alice', 'Maildir');
    await until('the ham in alice\'s Maildir', () => (newFiles(maildir).length === 1 ? true : undefined), diag);
    const { rest } = splitTrace(readFileSync(newFiles(maildir)[0] as string));
    const text = rest.toString('latin1');
    // Postfix's own Received comes first (hidden from milters), then the client's headers, byte for byte (LF-stored), then ours.
    const received = /^Received: from client\.test [^\n]*\n(?:[ \t][^\n]*\n)*/.exec(text);
    assert.ok(received !== null, `Postfix's Received first:\n${text}`);
    const after = rest.subarray(Buffer.byteLength(received[0], 'latin1'));
    const original = stored(HAM_HEADERS);
    assert.ok(after.subarray(0, original.length).equals(original), `every original header byte-identical:\n--- got ---\n${after.toString('latin1')}\n--- sent ---\n${original.toString('latin1')}`);
    const ours = after.subarray(original.length).toString('latin1');
    assert.match(ours, /^X-Spam-Flag: NO\nX-Spam-Level: \**\nX-Spam-Status: No, score=-?\d+\.\d required=5\.0 tests=[A-Z0-9_,\n\t]+\n\n/);
    const body = after.subarray(original.length + ours.indexOf('\n\n') + 2);
    assert.ok(body.equals(stored(HAM_BODY)), `body byte-identical:\n${body.toString('latin1')}`);

    // Between required_score and reject_score: delivered, flagged; the forged lines are gone.
    const grey = await send(port, 'bob@remote.test', ['alice@example.test'], CAPS);
    assert.equal(grey.data?.code, 250, `${JSON.stringify(grey.data)}\n${diag()}`);
    await until('the flagged message', () => (newFiles(maildir).length === 2 ? true : undefined), diag);
    const flagged = newFiles(maildir).map((f) => readFileSync(f, 'latin1')).find((m) => m.includes('caps-1@remote.test')) ?? '';
    const head = flagged.slice(0, flagged.indexOf('\n\n'));
    assert.deepEqual(head.match(/^X-Spam-Flag:.*$/gm), ['X-Spam-Flag: YES'], head);
    assert.deepEqual(head.match(/^X-Spam-Status:.*$/gm)?.length, 1, head);
    assert.match(head, /^X-Spam-Status: Yes, score=[5-9]\.\d required=5\.0 tests=[A-Z0-9_,\n\t]*SUBJ_ALL_CAPS/m);
    assert.doesNotMatch(head, /FORGED/);

    // Down: Postfix cannot reach the milter and, with milter_default_action = tempfail, defers the client.
    await d.stop();
    stopped = true;
    const down = await send(port, 'bob@remote.test', ['alice@example.test'], 'Subject: while down\r\nMessage-ID: <down-1@remote.test>\r\n\r\nhello\r\n');
    const refusal = [down.mail, ...down.rcpts, ...(down.data !== undefined ? [down.data] : [])].find((r) => r.code >= 400);
    assert.ok(refusal !== undefined, `a refusal while the milter is down: ${JSON.stringify(down)}`);
    assert.match(refusal.line, /^451 4\.7\.1 /, diag());
    assert.equal(pf.queueIdOf('down-1@remote.test'), undefined, 'nothing queued');
  } finally {
    await pf?.stop();
    if (!stopped) await d.stop();
    d.cleanup();
  }
});
