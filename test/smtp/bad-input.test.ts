// Bad input refused cleanly, against a real mailprocd over raw sockets:
// addresses that are not valid UTF-8 (or not ASCII without SMTPUTF8), quoted
// local parts (the same mailbox as unquoted), an enhanced status code on
// every reply line — the library's own replies too — and no filesystem path
// in any reply (the log keeps it).
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeTestDir, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { listDir, newFiles, onlyMessage, stored } from '../helpers/mailbox.js';
import { dataBlock, RawClient } from '../helpers/raw-client.js';
import { waitFor } from '../helpers/wait.js';

let d: TestDaemon;
let seq = 0;
const freshUser = (): string => `u${++seq}x@catch.test`;
/** UTF-8 bytes as the latin1 string RawClient writes byte for byte. */
const utf8 = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');

before(async () => {
  const dir = makeTestDir();
  // A "maildir" whose parent is a file: every delivery there fails, and the leaf's text names the path.
  writeFileSync(join(dir, 'not-a-dir'), '');
  d = await startDaemon({
    dir,
    rules: `
bob@example.test     maildir:\${MAIL}/\${user}/Maildir/
broken@example.test  maildir:${join(dir, 'not-a-dir')}/Maildir/
@catch.test          maildir:\${MAIL}/\${user}/Maildir/
`,
  });
});
after(async () => {
  await d.stop();
  d.cleanup();
});

async function session(kind: 'LMTP' | 'SMTP'): Promise<RawClient> {
  const c = await RawClient.open({ port: kind === 'LMTP' ? d.lmtpPort : d.smtpPort });
  assert.equal((await c.reply()).code, 220);
  assert.equal((await c.command(`${kind === 'LMTP' ? 'LHLO' : 'EHLO'} client.test`)).code, 250);
  return c;
}

describe('addresses that are not valid UTF-8, or not ASCII without SMTPUTF8', () => {
  for (const kind of ['LMTP', 'SMTP'] as const) {
    test(`${kind}: MAIL FROM with a byte that is not UTF-8 gets 501 5.1.7; RCPT TO with one gets 553 5.1.3`, async () => {
      const c = await session(kind);
      assert.match((await c.command('MAIL FROM:<s\xff@remote.test>')).line, /^501 5\.1\.7 /);
      assert.match((await c.command('MAIL FROM:<s@remote.test>')).line, /^250 /);
      assert.match((await c.command('RCPT TO:<p\xffq@catch.test>')).line, /^553 5\.1\.3 /);
      assert.match((await c.command('RCPT TO:<pq@catch\xc3.test>')).line, /^553 5\.1\.3 /);
      c.close();
    });

    test(`${kind}: a UTF-8 local part without SMTPUTF8 gets 553 5.6.7, at MAIL and at RCPT`, async () => {
      const c = await session(kind);
      assert.match((await c.command(utf8('MAIL FROM:<jörg@remote.test>'))).line, /^553 5\.6\.7 /);
      assert.match((await c.command('MAIL FROM:<s@remote.test>')).line, /^250 /);
      assert.match((await c.command(utf8('RCPT TO:<zoë@catch.test>'))).line, /^553 5\.6\.7 /);
      c.close();
    });
  }

  test('LMTP: with SMTPUTF8 a UTF-8 local part is delivered, and a byte that is not UTF-8 is still refused 553 5.1.3', async () => {
    const c = await session('LMTP');
    assert.match((await c.command(utf8('MAIL FROM:<jörg@remote.test> SMTPUTF8'))).line, /^250 /);
    assert.match((await c.command('RCPT TO:<z\xffe@catch.test>')).line, /^553 5\.1\.3 /);
    assert.match((await c.command(utf8('RCPT TO:<zoë@catch.test>'))).line, /^250 /);
    assert.equal((await c.command('DATA')).code, 354);
    c.write(dataBlock('Subject: utf8\r\n\r\nhej\r\n'));
    assert.match((await c.reply()).line, /^250 2\.0\.0 /);
    c.close();
    assert.equal(newFiles(join(d.mail, 'zoë', 'Maildir')).length, 1);
    assert.deepEqual(listDir(d.mail).filter((n) => n.includes('\ufffd')), [], 'no mailbox named after a broken address');
  });
});

describe('quoted local parts', () => {
  test('LMTP: "bob"@example.test is bob: accepted and delivered into bob\'s Maildir', async () => {
    const c = await session('LMTP');
    await c.command('MAIL FROM:<s@remote.test>');
    assert.match((await c.command('RCPT TO:<"bob"@example.test>')).line, /^250 /);
    assert.equal((await c.command('DATA')).code, 354);
    const msg = 'Subject: quoted\r\n\r\nfor bob\r\n';
    c.write(dataBlock(msg));
    assert.match((await c.reply()).line, /^250 2\.0\.0 <"bob"@example\.test> /);
    c.close();
    assert.deepEqual(onlyMessage(join(d.mail, 'bob', 'Maildir')).rest, stored(msg));
  });

  test('LMTP: a quoted local part that needs its quotes ("bob,smith") is nobody\'s: 550 5.1.1; with a space or an "@" it is bad syntax: 501 5.1.3', async () => {
    const c = await session('LMTP');
    await c.command('MAIL FROM:<s@remote.test>');
    assert.match((await c.command('RCPT TO:<"bob,smith"@example.test>')).line, /^550 5\.1\.1 /);
    assert.match((await c.command('RCPT TO:<"bob;x"@example.test>')).line, /^550 5\.1\.1 /);
    assert.match((await c.command('RCPT TO:<"bob smith"@example.test>')).line, /^501 5\.1\.3 /);
    assert.match((await c.command('RCPT TO:<"bob@x"@example.test>')).line, /^501 5\.1\.3 /);
    c.close();
  });
});

describe('an enhanced status code on every reply line (RFC 2034: all but the greeting and the HELO/EHLO/LHLO answer)', () => {
  const CASES: { kind: 'LMTP' | 'SMTP'; send: string; want: RegExp }[] = [
    { kind: 'LMTP', send: 'EHLO client.test', want: /^500 5\.5\.\d+ Error: EHLO not allowed in LMTP server$/ },
    { kind: 'LMTP', send: 'HELO client.test', want: /^500 5\.5\.\d+ Error: HELO not allowed in LMTP server$/ },
    { kind: 'LMTP', send: 'LHLO', want: /^501 5\.5\.4 Error: syntax: LHLO hostname$/ },
    { kind: 'LMTP', send: `LHLO ${'h'.repeat(301)}`, want: /^501 5\.5\.4 Error: Bad hostname syntax$/ },
    { kind: 'SMTP', send: `EHLO ${'h'.repeat(301)}`, want: /^501 5\.5\.4 Error: Bad hostname syntax$/ },
    { kind: 'SMTP', send: `HELO ${'h'.repeat(301)}`, want: /^501 5\.5\.4 Error: Bad hostname syntax$/ },
    { kind: 'SMTP', send: 'HELO', want: /^501 5\.5\.4 Error: Syntax: HELO hostname$/ },
    { kind: 'SMTP', send: 'MAIL FROM:<s@remote.test> SIZE=abc', want: /^501 5\.5\.4 / },
    { kind: 'SMTP', send: 'MAIL FROM:<s@remote.test> BODY=BINARYMIME', want: /^501 5\.5\.4 / },
    { kind: 'SMTP', send: 'VRFY', want: /^501 5\.5\.4 / },
    { kind: 'SMTP', send: 'NOOP', want: /^250 2\.0\.0 / },
    { kind: 'SMTP', send: 'RSET', want: /^250 2\.0\.0 / },
    { kind: 'SMTP', send: 'HELP', want: /^214 2\.0\.0 / },
  ];
  for (const c of CASES) {
    test(`${c.kind}: ${JSON.stringify(c.send.length > 40 ? `${c.send.slice(0, 20)}…` : c.send)} → ${c.want.source}`, async () => {
      const s = await RawClient.open({ port: c.kind === 'LMTP' ? d.lmtpPort : d.smtpPort });
      assert.equal((await s.reply()).code, 220);
      if (!/^(EHLO|HELO|LHLO)/.test(c.send)) await s.command(c.kind === 'LMTP' ? 'LHLO client.test' : 'EHLO client.test');
      assert.match((await s.command(c.send)).line, c.want);
      s.close();
    });
  }

  test('an HTTP request on the SMTP port gets 421 with a 4.x.x code', async () => {
    const s = await RawClient.open({ port: d.smtpPort });
    assert.equal((await s.reply()).code, 220);
    assert.match((await s.command('GET / HTTP/1.1')).line, /^421 4\.\d+\.\d+ /);
    s.close();
  });
});

describe('no filesystem path in a reply', () => {
  test('LMTP: a delivery that fails on a path gets the code\'s standard text; the log line names the path', async () => {
    const c = await session('LMTP');
    await c.command('MAIL FROM:<s@remote.test>');
    assert.equal((await c.command('RCPT TO:<broken@example.test>')).code, 250);
    const ok = freshUser();
    assert.equal((await c.command(`RCPT TO:<${ok}>`)).code, 250);
    assert.equal((await c.command('DATA')).code, 354);
    c.write(dataBlock('Subject: paths\r\n\r\nx\r\n'));
    const [broken, good] = await c.replies(2);
    c.close();
    assert.equal(broken?.line, '451 4.3.0 Mail system error, try again later');
    assert.match(good?.line ?? '', /^250 2\.0\.0 /);
    for (const r of [broken, good]) assert.ok(!r?.line.includes('/'), `a path in ${r?.line}`);
    const logged = await waitFor('the log line', () => d.logs.find((l) => /to=<broken@example\.test>/.test(l)));
    assert.match(logged, /not-a-dir\/Maildir/);
    assert.match(logged, /status=deferred/);
  });
});
