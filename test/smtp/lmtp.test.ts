// LMTP against a real mailprocd: protocol edges with a raw socket client and
// the delivered files checked on disk (bytes, owner, mode, tmp/ empty).
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTransport } from 'nodemailer';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { listDir, newFiles, onlyMessage, stored } from '../helpers/mailbox.js';
import { dataBlock, RawClient } from '../helpers/raw-client.js';

let d: TestDaemon;
let seq = 0;
/** A fresh user under a catch-all rule, so each test reads its own Maildir. */
function freshUser(): string {
  seq++;
  return `t${seq}x@catch.test`;
}
const maildirOf = (user: string): string => join(d.mail, user.split('@')[0] as string, 'Maildir');

async function session(target: { port: number } | { path: string } = { port: 0 }): Promise<RawClient> {
  const c = await RawClient.open('path' in target ? target : { port: target.port || d.lmtpPort });
  assert.equal((await c.reply()).code, 220);
  const lhlo = await c.command('LHLO client.test');
  assert.equal(lhlo.code, 250);
  return c;
}

function assertDeliveredFile(maildir: string, sent: string | Buffer): void {
  const m = onlyMessage(maildir);
  assert.deepEqual(m.rest, stored(sent), 'stored bytes = sent bytes with CRLF → LF');
  assert.notEqual(m.uid, 0, 'delivered file must not be owned by root');
  assert.equal(m.mode & 0o077, 0, `mode ${m.mode.toString(8)} must not be group/world accessible`);
  assert.deepEqual(listDir(join(maildir, 'tmp')), [], 'tmp/ is empty');
}

before(async () => {
  d = await startDaemon({
    rules: `
alice@example.test  maildir:\${MAIL}/\${user}/Maildir/
bob@example.test    maildir:\${MAIL}/\${user}/Maildir/  folder=\${extension}  extension=?*  stop
bob@example.test    maildir:\${MAIL}/\${user}/Maildir/
carol@example.test  mbox:\${MAIL}/\${user}/mbox
small@example.test  maildir:\${MAIL}/\${user}/Maildir/  maxsize=1k
@catch.test         maildir:\${MAIL}/\${user}/Maildir/
`,
    config: { limits: { message_size: '2M' } },
  });
});
after(async () => {
  await d.stop();
  d.cleanup();
});

describe('LMTP greeting and LHLO', () => {
  test('LHLO announces PIPELINING, ENHANCEDSTATUSCODES, 8BITMIME and SIZE with the configured limit', async () => {
    const c = await RawClient.open({ port: d.lmtpPort });
    const greeting = await c.reply();
    assert.equal(greeting.code, 220);
    assert.match(greeting.text, /LMTP/);
    const r = await c.command('LHLO client.test');
    assert.equal(r.code, 250);
    for (const ext of ['PIPELINING', 'ENHANCEDSTATUSCODES', '8BITMIME', `SIZE ${2 * 1024 * 1024}`]) {
      assert.ok(r.text.split('\n').includes(ext), `LHLO lacks ${ext}: ${r.text}`);
    }
    c.close();
  });

  test('the unix socket speaks LMTP too', async () => {
    const c = await session({ path: d.socket });
    assert.equal((await c.command('QUIT')).code, 221);
    c.close();
  });
});

describe('LMTP per-recipient replies', () => {
  test('two good recipients and one unknown: 550 5.1.1 at RCPT, two replies after DATA in RCPT order', async () => {
    const a = freshUser();
    const b = freshUser();
    const c = await session();
    assert.equal((await c.command('MAIL FROM:<sender@remote.test>')).line, '250 2.1.0 Accepted');
    assert.equal((await c.command(`RCPT TO:<${a}>`)).code, 250);
    const unknown = await c.command('RCPT TO:<nobody@example.test>');
    assert.equal(unknown.code, 550);
    assert.match(unknown.line, /^550 5\.1\.1 /);
    assert.doesNotMatch(unknown.line, /5\.1\.1 5\./, 'enhanced code is not doubled');
    assert.equal((await c.command(`RCPT TO:<${b}>`)).code, 250);
    assert.equal((await c.command('DATA')).code, 354);
    const msg = 'Subject: two\r\n\r\nhello\r\n';
    c.write(dataBlock(msg));
    const [r1, r2] = await c.replies(2);
    assert.match(r1?.line ?? '', new RegExp(`^250 2\\.0\\.0 <${a}>`));
    assert.match(r2?.line ?? '', new RegExp(`^250 2\\.0\\.0 <${b}>`));
    assert.ok(await c.quietFor(200), 'no third reply');
    assert.equal((await c.command('QUIT')).code, 221);
    c.close();
    assertDeliveredFile(maildirOf(a), msg);
    assertDeliveredFile(maildirOf(b), msg);
    const { trace } = onlyMessage(maildirOf(a));
    assert.match(trace, new RegExp(`^Return-Path: <sender@remote.test>\nDelivered-To: ${a}\nReceived: from client.test`));
    await d.waitForLog(new RegExp(`to=<${a}>, relay=maildir, delay=[\\d.]+, delays=[\\d.]+/[\\d.]+/[\\d.]+/[\\d.]+, dsn=2\\.0\\.0, status=sent`));
  });

  test('a duplicate RCPT gets its own reply after DATA and the message is delivered once', async () => {
    const a = freshUser();
    const b = freshUser();
    const c = await session();
    await c.command('MAIL FROM:<sender@remote.test>');
    assert.equal((await c.command(`RCPT TO:<${a}>`)).code, 250);
    assert.equal((await c.command(`RCPT TO:<${b}>`)).code, 250);
    assert.equal((await c.command(`RCPT TO:<${a.toUpperCase()}>`)).code, 250);
    assert.equal((await c.command('DATA')).code, 354);
    c.write(dataBlock('Subject: dup\r\n\r\nonce\r\n'));
    const replies = await c.replies(3, 5000);
    assert.deepEqual(replies.map((r) => r.code), [250, 250, 250]);
    assert.match(replies[2]?.line ?? '', new RegExp(`<${a.toUpperCase()}>`, 'i'));
    assert.equal((await c.command('QUIT')).code, 221);
    c.close();
    assert.equal(newFiles(maildirOf(a)).length, 1);
    assert.equal(newFiles(maildirOf(b)).length, 1);
  });

  test('a whole pipelined transaction in one write gets every reply in order', async () => {
    const a = freshUser();
    const b = freshUser();
    const c = await RawClient.open({ port: d.lmtpPort });
    // Talking before the greeting is refused (421), as RFC 2920 allows: wait for it.
    assert.equal((await c.reply()).code, 220);
    const msg = 'Subject: pipelined\r\n\r\nall at once\r\n';
    c.write(`LHLO client.test\r\nMAIL FROM:<p@remote.test>\r\nRCPT TO:<${a}>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<${b}>\r\nDATA\r\n${dataBlock(msg)}QUIT\r\n`);
    const codes = (await c.replies(9)).map((r) => r.code);
    assert.deepEqual(codes, [250, 250, 250, 550, 250, 354, 250, 250, 221]);
    c.close();
    assertDeliveredFile(maildirOf(a), msg);
    assertDeliveredFile(maildirOf(b), msg);
  });

  test('DATA with no accepted recipient is refused 503 and nothing is delivered', async () => {
    const c = await session();
    await c.command('MAIL FROM:<x@remote.test>');
    assert.equal((await c.command('RCPT TO:<nobody@example.test>')).code, 550);
    assert.match((await c.command('DATA')).line, /^503 5\.5\.1/);
    c.close();
  });
});

describe('LMTP message content is delivered byte for byte', () => {
  const cases: { name: string; msg: string | Buffer }[] = [
    { name: 'dot-leading lines are unstuffed', msg: 'Subject: dots\r\n\r\n.leading\r\n..two\r\n.\r\n...\r\nend\r\n' },
    { name: 'an 8-bit body', msg: Buffer.concat([Buffer.from('Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n'), Buffer.from('Grüße, naïve café — 日本語\r\n\xff\xfe\x80\r\n', 'utf8')]) },
    { name: 'NUL bytes', msg: Buffer.from('Subject: nul\r\n\r\nbefore\x00after\r\n\x00\x00\r\n', 'latin1') },
    { name: 'a header-only message', msg: 'Subject: only headers\r\nX-Test: yes\r\n' },
    { name: 'a message without a trailing CRLF', msg: 'Subject: no eol\r\n\r\nlast line without newline' },
    { name: 'bare LF and bare CR inside lines', msg: 'Subject: bare\r\n\r\none\ntwo\rthree\r\n' },
    { name: 'a very long line', msg: `Subject: long\r\n\r\n${'x'.repeat(100_000)}\r\n` },
  ];
  for (const { name, msg } of cases) {
    test(name, async () => {
      const a = freshUser();
      const c = await session();
      await c.command('MAIL FROM:<s@remote.test> BODY=8BITMIME');
      assert.equal((await c.command(`RCPT TO:<${a}>`)).code, 250);
      assert.equal((await c.command('DATA')).code, 354);
      const raw = Buffer.isBuffer(msg) ? msg : Buffer.from(msg, 'latin1');
      const withEol = raw.subarray(raw.length - 2).toString('latin1') === '\r\n' ? raw : Buffer.concat([raw, Buffer.from('\r\n')]);
      c.write(Buffer.from(dataBlock(withEol.toString('latin1')), 'latin1'));
      assert.equal((await c.reply()).code, 250);
      c.close();
      assertDeliveredFile(maildirOf(a), withEol);
    });
  }

  test('a 1 MiB message sent with nodemailer (lmtp: true) arrives intact', async () => {
    const a = freshUser();
    const transport = createTransport({ lmtp: true, host: '127.0.0.1', port: d.lmtpPort, name: 'client.test' } as never);
    const line = `${'0123456789abcdef'.repeat(4)}\r\n`;
    const body = line.repeat(Math.ceil((1024 * 1024) / line.length));
    const raw = `From: s@remote.test\r\nTo: ${a}\r\nSubject: big\r\nMessage-ID: <big@remote.test>\r\n\r\n${body}`;
    const info = await transport.sendMail({ envelope: { from: 's@remote.test', to: [a] }, raw });
    transport.close();
    assert.deepEqual(info.accepted, [a]);
    assertDeliveredFile(maildirOf(a), raw);
  });
});

describe('SMTP smuggling: only <CRLF>.<CRLF> ends DATA', () => {
  const terminators = ['\n.\n', '\n.\r\n', '\r\n.\n', '\r.\r', '\r.\r\n'];
  for (const [i, term] of terminators.entries()) {
    test(`the sequence ${JSON.stringify(term)} does not split the message (${i + 1})`, async () => {
      const a = freshUser();
      const victim = freshUser();
      const c = await session();
      await c.command('MAIL FROM:<s@remote.test>');
      assert.equal((await c.command(`RCPT TO:<${a}>`)).code, 250);
      assert.equal((await c.command('DATA')).code, 354);
      const smuggled = `MAIL FROM:<smuggler@evil.example>\r\nRCPT TO:<${victim}>\r\nDATA\r\nSubject: smuggled\r\n\r\nSMUGGLED-BODY\r\n`;
      const payload = `Subject: first\r\n\r\nfirst part${term}${smuggled}TAIL\r\n.\r\n`;
      await c.writeBytewise(payload);
      assert.equal((await c.reply()).code, 250);
      const q = await c.command('QUIT');
      assert.equal(q.code, 221, `QUIT must get 221 directly, got ${q.line}`);
      c.close();
      assert.equal(existsSync(join(maildirOf(victim), 'new')), false, 'the smuggled recipient received nothing');
      const m = onlyMessage(maildirOf(a));
      const text = m.rest.toString('latin1');
      assert.ok(text.includes('SMUGGLED-BODY') && text.includes('TAIL'), 'the whole payload is one message');
    });
  }
});

describe('size limits', () => {
  test('MAIL FROM with SIZE over the limit is refused 552 5.3.4', async () => {
    const c = await session();
    const r = await c.command(`MAIL FROM:<s@remote.test> SIZE=${3 * 1024 * 1024}`);
    assert.match(r.line, /^552 5\.3\.4 /);
    c.close();
  });

  test('a message over the limit gets 552 5.3.4 for every recipient and nothing is delivered', async () => {
    const a = freshUser();
    const b = freshUser();
    const c = await session();
    await c.command('MAIL FROM:<s@remote.test>');
    await c.command(`RCPT TO:<${a}>`);
    await c.command(`RCPT TO:<${b}>`);
    assert.equal((await c.command('DATA')).code, 354);
    c.write(dataBlock(`Subject: huge\r\n\r\n${'y'.repeat(76)}\r\n`.repeat(1) + `${'z'.repeat(998)}\r\n`.repeat(2200)));
    const replies = await c.replies(2);
    for (const r of replies) assert.match(r.line, /^552 5\.3\.4 /);
    assert.ok(await c.quietFor(100));
    c.close();
    assert.deepEqual(newFiles(maildirOf(a)), []);
    assert.deepEqual(newFiles(maildirOf(b)), []);
  });

  test('a per-address maxsize gives 552 5.2.3 for that recipient only', async () => {
    const a = freshUser();
    const c = await session();
    await c.command('MAIL FROM:<s@remote.test>');
    await c.command('RCPT TO:<small@example.test>');
    await c.command(`RCPT TO:<${a}>`);
    await c.command('DATA');
    const msg = `Subject: medium\r\n\r\n${'m'.repeat(2000)}\r\n`;
    c.write(dataBlock(msg));
    const [r1, r2] = await c.replies(2);
    assert.match(r1?.line ?? '', /^552 5\.2\.3 /);
    assert.equal(r2?.code, 250);
    c.close();
    assertDeliveredFile(maildirOf(a), msg);
  });

  test('a declared SIZE over a per-address maxsize is refused at RCPT with 552 5.2.3', async () => {
    const c = await session();
    await c.command('MAIL FROM:<s@remote.test> SIZE=5000');
    assert.match((await c.command('RCPT TO:<small@example.test>')).line, /^552 5\.2\.3 /);
    c.close();
  });
});

describe('addresses, rules and loops', () => {
  test('bob+lists@example.test is delivered into bob\'s Maildir++ folder .lists', async () => {
    const c = await session();
    await c.command('MAIL FROM:<s@remote.test>');
    assert.equal((await c.command('RCPT TO:<bob+lists@example.test>')).code, 250);
    await c.command('DATA');
    const msg = 'Subject: ext\r\n\r\nfolder\r\n';
    c.write(dataBlock(msg));
    assert.equal((await c.reply()).code, 250);
    c.close();
    const folder = join(d.mail, 'bob', 'Maildir', '.lists');
    assertDeliveredFile(folder, msg);
    assert.match(onlyMessage(folder).trace, /^Delivered-To: bob\+lists@example\.test$/m);
  });

  test('a message that already carries our Delivered-To for the recipient is refused 5.4.6', async () => {
    const a = freshUser();
    const c = await session();
    await c.command('MAIL FROM:<s@remote.test>');
    await c.command(`RCPT TO:<${a}>`);
    await c.command('DATA');
    c.write(dataBlock(`Delivered-To: ${a}\r\nSubject: loop\r\n\r\nagain\r\n`));
    assert.match((await c.reply()).line, /^554 5\.4\.6 /);
    c.close();
    assert.equal(existsSync(join(maildirOf(a), 'new')) ? readdirSync(join(maildirOf(a), 'new')).length : 0, 0);
  });

  test('a message with 100 Received fields is refused 5.4.6', async () => {
    const a = freshUser();
    const c = await session();
    await c.command('MAIL FROM:<s@remote.test>');
    await c.command(`RCPT TO:<${a}>`);
    await c.command('DATA');
    c.write(dataBlock(`${'Received: from x by y; Sat, 21 Nov 2026 09:00:00 +0000\r\n'.repeat(100)}Subject: hops\r\n\r\nx\r\n`));
    assert.match((await c.reply()).line, /^554 5\.4\.6 /);
    c.close();
  });
});

describe('mbox delivery over LMTP', () => {
  test('carol\'s mbox gets a From_ line, the message with >From quoting and a blank line after', async () => {
    const c = await session();
    await c.command('MAIL FROM:<s@remote.test>');
    assert.equal((await c.command('RCPT TO:<carol@example.test>')).code, 250);
    await c.command('DATA');
    c.write(dataBlock('Subject: mbox\r\n\r\nFrom here on\r\nnot From\r\n'));
    assert.equal((await c.reply()).code, 250);
    c.close();
    const mbox = readFileSync(join(d.mail, 'carol', 'mbox'), 'latin1');
    assert.match(mbox, /^From s@remote\.test \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\nReturn-Path: <s@remote\.test>\nDelivered-To: carol@example\.test\n/);
    assert.ok(mbox.endsWith('\n\n>From here on\nnot From\n\n'), JSON.stringify(mbox.slice(-60)));
    assert.notEqual(statSync(join(d.mail, 'carol', 'mbox')).uid, 0);
  });
});
