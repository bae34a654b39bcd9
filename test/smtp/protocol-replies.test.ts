// Protocol replies of the LMTP and SMTP listeners against a real mailprocd, as
// a mail admin would check them with a raw session: SMTP smuggling on the SMTP
// port, the EHLO extensions, early talkers, enhanced status codes on protocol
// errors (RFC 2034, RFC 3463), the idle timeout, the hop-count boundary and
// the recipient limit. What was delivered is read back from new/.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { listDir, newFiles, onlyMessage, stored } from '../helpers/mailbox.js';
import { dataBlock, RawClient } from '../helpers/raw-client.js';
import { waitFor } from '../helpers/wait.js';

const RULES = `
@catch.test  maildir:\${MAIL}/\${user}/Maildir/
`;
const MESSAGE_SIZE = 2 * 1024 * 1024;
const MAX_RECIPIENTS = 2;

/**
 * What a receiver makes of mail text as it came over the wire (RFC 5321
 * §4.5.2): a line (ended by CRLF only, §2.3.8) whose first character is a
 * period loses that period.
 */
function unstuffed(wire: string): string {
  return wire.replace(/(^|\r\n)\./g, '$1');
}

let d: TestDaemon;
/** A second daemon whose clients are dropped after 1 s idle: too short to share with the other tests. */
let impatient: TestDaemon;
let seq = 0;
/** A fresh user under the catch-all rule, so each test reads its own Maildir. */
function freshUser(): string {
  seq++;
  return `p${seq}x@catch.test`;
}
const maildirOf = (user: string): string => join(d.mail, user.split('@')[0] as string, 'Maildir');
const spoolFiles = (): string[] => listDir(join(d.dir, 'state', 'spool', 'active'));

interface Listener {
  readonly name: 'SMTP' | 'LMTP';
  readonly hello: 'EHLO' | 'LHLO';
  readonly port: () => number;
}
const LISTENERS: readonly Listener[] = [
  { name: 'SMTP', hello: 'EHLO', port: () => d.smtpPort },
  { name: 'LMTP', hello: 'LHLO', port: () => d.lmtpPort },
];

/** Runs fn while the daemon is stopped (SIGSTOP), and lets it run again (SIGCONT) whatever happens. */
async function whileStopped<T>(daemon: TestDaemon, fn: () => Promise<T>): Promise<T> {
  const pid = daemon.child.pid;
  assert.ok(pid !== undefined, 'the daemon has a pid');
  process.kill(pid, 'SIGSTOP');
  try {
    return await fn();
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

/** Greeted and introduced: ready for MAIL. */
async function session(l: Listener): Promise<RawClient> {
  const c = await RawClient.open({ port: l.port() });
  assert.equal((await c.reply()).code, 220);
  assert.equal((await c.command(`${l.hello} client.test`)).code, 250);
  return c;
}
const [SMTP, LMTP] = LISTENERS as [Listener, Listener];

before(async () => {
  [d, impatient] = await Promise.all([
    startDaemon({ rules: RULES, config: { limits: { message_size: '2M', recipients: MAX_RECIPIENTS } } }),
    startDaemon({ rules: RULES, config: { limits: { client_timeout: '1s' } } }),
  ]);
});
after(async () => {
  await Promise.all([d.stop(), impatient.stop()]);
  d.cleanup();
  impatient.cleanup();
});

describe('SMTP smuggling on the SMTP port: only <CRLF>.<CRLF> ends DATA', () => {
  // The same payloads as the LMTP smuggling test (test/smtp/lmtp.test.ts).
  const terminators = ['\n.\n', '\n.\r\n', '\r\n.\n', '\r.\r', '\r.\r\n'];
  for (const [i, term] of terminators.entries()) {
    test(`the sequence ${JSON.stringify(term)} does not end DATA: exactly one message is delivered, smuggled commands inside, byte for byte (${i + 1})`, async () => {
      const a = freshUser();
      const victim = freshUser();
      const c = await session(SMTP);
      assert.match((await c.command('MAIL FROM:<s@remote.test>')).line, /^250 /);
      assert.match((await c.command(`RCPT TO:<${a}>`)).line, /^250 /);
      assert.equal((await c.command('DATA')).code, 354);
      const smuggled = `MAIL FROM:<smuggler@evil.example>\r\nRCPT TO:<${victim}>\r\nDATA\r\nSubject: smuggled\r\n\r\nSMUGGLED-BODY\r\n`;
      const content = `Subject: first\r\n\r\nfirst part${term}${smuggled}TAIL\r\n`;
      await c.writeBytewise(`${content}.\r\n`);
      assert.match((await c.reply()).line, /^250 2\.0\.0 Ok: queued as [0-9A-F]+/);
      const q = await c.command('QUIT');
      assert.equal(q.code, 221, `QUIT must get 221 directly (no replies to smuggled commands), got ${q.line}`);
      c.close();

      await waitFor('delivery', () => (newFiles(maildirOf(a)).length > 0 ? true : undefined));
      await waitFor('spool emptied', () => (spoolFiles().length === 0 ? true : undefined));
      assert.equal(newFiles(maildirOf(a)).length, 1, 'exactly one message for the recipient');
      assert.equal(existsSync(join(maildirOf(victim), 'new')), false, 'the smuggled recipient received nothing');
      const m = onlyMessage(maildirOf(a));
      const body = m.rest.toString('latin1');
      assert.ok(body.includes('MAIL FROM:<smuggler@evil.example>') && body.includes(`RCPT TO:<${victim}>`) && body.includes('SMUGGLED-BODY') && body.includes('TAIL'),
        'the smuggled commands are message content');
      // Compared as latin1 text so that a difference shows as a readable diff.
      assert.equal(m.rest.toString('latin1'), stored(unstuffed(content)).toString('latin1'),
        'stored bytes = the mail text as sent, with a line-leading period deleted (RFC 5321 §4.5.2) and CRLF → LF');
    });
  }
});

describe('SMTP EHLO', () => {
  test('EHLO advertises SIZE with the configured limit, PIPELINING, 8BITMIME and ENHANCEDSTATUSCODES, and neither STARTTLS nor AUTH', async () => {
    const c = await RawClient.open({ port: d.smtpPort });
    const greeting = await c.reply();
    assert.match(greeting.line, /^220 mx\.test\.local ESMTP/);
    const r = await c.command('EHLO client.test');
    assert.equal(r.code, 250);
    const keywords = r.text.split('\n').slice(1);
    for (const ext of ['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES', `SIZE ${MESSAGE_SIZE}`]) {
      assert.ok(keywords.includes(ext), `EHLO lacks ${ext}: ${r.text}`);
    }
    for (const ext of ['STARTTLS', 'AUTH']) {
      assert.ok(!keywords.some((k) => k.split(' ')[0]?.toUpperCase() === ext), `EHLO advertises ${ext}: ${r.text}`);
    }
    assert.equal((await c.command('QUIT')).code, 221);
    c.close();
  });
});

describe('talking before the greeting', () => {
  for (const l of LISTENERS) {
    test(`${l.name}: a client that sends ${l.hello} before the 220 greeting gets 421 instead of a greeting and is disconnected`, async () => {
      // The daemon greets on the next tick, so a client cannot reliably talk
      // first on its own. Stopping the daemon makes it deterministic: the
      // kernel completes the handshake and queues our bytes, and once the
      // daemon runs again it reads them before its greeting is due.
      const c = await whileStopped(d, async () => {
        const early = await RawClient.open({ port: l.port() });
        early.write(`${l.hello} early.test\r\n`);
        // Loopback has queued the bytes when write() returns; the pause only leaves no doubt.
        await new Promise((r) => setTimeout(r, 20));
        return early;
      });
      const r = await c.reply();
      assert.equal(r.code, 421, `the first reply must be 421, got ${r.line}`);
      assert.match(r.line, /^421 4\.\d+\.\d+ .*You talk too soon/, 'with an enhanced code, as every error reply');
      await waitFor('disconnect', () => (c.isClosed ? true : undefined), 3000);
      c.close();
    });
  }
});

describe('protocol errors carry enhanced status codes (RFC 2034, RFC 3463)', () => {
  for (const l of LISTENERS) {
    test(`${l.name}: an unknown command gets 500 5.5.2 (syntax error, command unrecognized)`, async () => {
      const c = await session(l);
      assert.match((await c.command('FROB example')).line, /^500 5\.5\.2 /);
      assert.equal((await c.command('QUIT')).code, 221);
      c.close();
    });

    test(`${l.name}: MAIL FROM with a malformed address gets 501 5.1.7 (bad sender address syntax)`, async () => {
      const c = await session(l);
      assert.match((await c.command('MAIL FROM:<s@remote.test')).line, /^501 5\.1\.7 /);
      assert.match((await c.command('MAIL FROM:<two words@remote.test>')).line, /^501 5\.1\.7 /);
      // Nothing was started: a good MAIL FROM is still accepted.
      assert.match((await c.command('MAIL FROM:<s@remote.test>')).line, /^250 2\.1\.0 /);
      c.close();
    });

    test(`${l.name}: RCPT before MAIL gets 503 5.5.1 (bad sequence of commands)`, async () => {
      const c = await session(l);
      assert.match((await c.command(`RCPT TO:<${freshUser()}>`)).line, /^503 5\.5\.1 /);
      c.close();
    });

    test(`${l.name}: DATA when no recipient was accepted gets 503 5.5.1 and nothing is delivered`, async () => {
      const c = await session(l);
      assert.match((await c.command('MAIL FROM:<s@remote.test>')).line, /^250 /);
      assert.match((await c.command('RCPT TO:<nobody@example.test>')).line, /^550 5\.1\.1 /);
      assert.match((await c.command('DATA')).line, /^503 5\.5\.1 /);
      assert.ok(await c.quietFor(100), 'no 354 follows');
      c.close();
    });

    test(`${l.name}: QUIT gets 221 2.0.0 and the server closes the connection`, async () => {
      const c = await session(l);
      assert.match((await c.command('QUIT')).line, /^221 2\.0\.0 /);
      await waitFor('disconnect', () => (c.isClosed ? true : undefined), 3000);
      c.close();
    });
  }

  test('the enhanced code of an unknown command\'s 500 is 5.5.2 whatever the command is called (class agrees with the reply, RFC 2034 §4)', async () => {
    const c = await session(SMTP);
    const names = ['MAIL_FROM_OK', 'TOO_MANY_RECIPIENTS', 'CONNECTION_TIMEOUT'];
    const got: string[] = [];
    for (const name of names) got.push(`${name} → ${(await c.command(name)).line}`);
    c.close();
    assert.deepEqual(got, names.map((name) => `${name} → 500 5.5.2 Error: command not recognized`));
  });
});

describe('idle timeout', () => {
  test('a session idle for limits.client_timeout (1s) gets 421 4.4.2 and is disconnected', async () => {
    const c = await RawClient.open({ port: impatient.smtpPort });
    assert.equal((await c.reply()).code, 220);
    assert.equal((await c.command('EHLO client.test')).code, 250);
    const idleSince = Date.now();
    const r = await c.reply(5000);
    const idle = Date.now() - idleSince;
    assert.match(r.line, /^421 4\.4\.2 /);
    assert.ok(idle >= 900 && idle < 3000, `421 after ${idle} ms of silence, expected about 1 s`);
    await waitFor('disconnect', () => (c.isClosed ? true : undefined), 3000);
    c.close();
  });
});

describe('loop check boundary', () => {
  // 100 Received fields (554 5.4.6) is covered in test/smtp/lmtp.test.ts.
  test('LMTP: a message with 99 Received fields is delivered (250) byte for byte', async () => {
    const a = freshUser();
    const c = await session(LMTP);
    await c.command('MAIL FROM:<s@remote.test>');
    assert.equal((await c.command(`RCPT TO:<${a}>`)).code, 250);
    assert.equal((await c.command('DATA')).code, 354);
    const msg = `${'Received: from x by y; Sat, 21 Nov 2026 09:00:00 +0000\r\n'.repeat(99)}Subject: hops\r\n\r\nninety-nine\r\n`;
    c.write(dataBlock(msg));
    assert.match((await c.reply()).line, new RegExp(`^250 2\\.0\\.0 <${a}>`));
    c.close();
    assert.deepEqual(onlyMessage(maildirOf(a)).rest, stored(msg));
  });
});

describe('recipient limit', () => {
  test(`LMTP: with limits.recipients ${MAX_RECIPIENTS} the third RCPT gets 452 4.5.3 and the first two are delivered with a 250 each`, async () => {
    const [a, b, extra] = [freshUser(), freshUser(), freshUser()];
    const c = await session(LMTP);
    await c.command('MAIL FROM:<s@remote.test>');
    assert.match((await c.command(`RCPT TO:<${a}>`)).line, /^250 /);
    assert.match((await c.command(`RCPT TO:<${b}>`)).line, /^250 /);
    assert.match((await c.command(`RCPT TO:<${extra}>`)).line, /^452 4\.5\.3 /);
    assert.equal((await c.command('DATA')).code, 354);
    const msg = 'Subject: limit\r\n\r\ntwo of three\r\n';
    c.write(dataBlock(msg));
    const [r1, r2] = await c.replies(2);
    assert.match(r1?.line ?? '', new RegExp(`^250 2\\.0\\.0 <${a}>`));
    assert.match(r2?.line ?? '', new RegExp(`^250 2\\.0\\.0 <${b}>`));
    assert.ok(await c.quietFor(200), 'no third reply');
    assert.equal((await c.command('QUIT')).code, 221);
    c.close();
    assert.deepEqual(onlyMessage(maildirOf(a)).rest, stored(msg));
    assert.deepEqual(onlyMessage(maildirOf(b)).rest, stored(msg));
    assert.deepEqual(listDir(join(maildirOf(extra), 'new')), [], 'the refused recipient got nothing');
  });
});
