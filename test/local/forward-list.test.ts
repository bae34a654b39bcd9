// forward:ADDR and list:NAME against a real mailprocd, with a loopback SMTP
// sink as relay.smtp: forwards reuse pooled connections, keep the envelope
// sender and the original bytes (Delivered-To and Received in front); the
// relay's 4xx is retried and its 5xx bounced; a loop through another host
// ends in one 5.4.6 bounce; a list without a manager is expanded like a
// Postfix alias (local subscribers through their own rules, remote ones
// forwarded, a subscriber loop refused).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTransport, type Transporter } from 'nodemailer';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { newFiles, splitTrace } from '../helpers/mailbox.js';
import { startSmtpSink, type SinkMessage, type SmtpSink } from '../helpers/smtp-sink.js';
import { waitFor } from '../helpers/wait.js';

const RULES = `
fwd@f.test     forward:away@remote.test
two@f.test     forward:one@remote.test
two@f.test     forward:two@remote.test
two@f.test     maildir:\${MAIL}/\${user}/Maildir/
loopa@f.test   forward:loopb@f.test
loopb@f.test   forward:loopa@f.test
owner@f.test   maildir:\${MAIL}/\${user}/Maildir/
alice@f.test   maildir:\${MAIL}/alice/Maildir/
bob@f.test     maildir:\${MAIL}/bob/Maildir/
dev@f.test     list:dev@f.test
nested@f.test  list:nested@f.test
far2@f.test    list:far2@f.test
dup@f.test     maildir:\${MAIL}/dup/Maildir/  dedupe
`;

const LISTS = `
dev@f.test     closed  manager=""  subscribers=alice@f.test,bob@f.test,far@remote.test
nested@f.test  open    manager=alias  subscribers=nested@f.test,alice@f.test
far2@f.test    open    manager=alias  subscribers=first@remote.test,second@remote.test
`;

let sink: SmtpSink;
let d: TestDaemon;
let lmtp: Transporter;
let smtp: Transporter;
let seq = 0;

before(async () => {
  sink = await startSmtpSink();
  d = await startDaemon({
    rules: RULES, lists: LISTS,
    config: {
      relay: { smtp: `127.0.0.1:${sink.port}`, max_connections: 2 },
      queue: { retry_min: '200ms', retry_max: '400ms' },
      log: { level: 'info' },
    },
  });
  lmtp = createTransport({ host: '127.0.0.1', port: d.lmtpPort, lmtp: true, name: 'client.test' } as never);
  smtp = createTransport({ host: '127.0.0.1', port: d.smtpPort, name: 'client.test' } as never);
});
after(async () => {
  lmtp.close();
  smtp.close();
  await d.stop();
  d.cleanup();
  await sink.close();
});

const message = (to: string, subject: string, extra = ''): string =>
  `From: sender@remote.test\r\nTo: ${to}\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '-')}.${++seq}@remote.test>\r\n${extra}\r\nbody of ${subject}\r\nline two\r\n`;

const received = (pred: (m: SinkMessage) => boolean): SinkMessage[] => sink.messages.filter(pred);
const mailOf = (user: string): string => join(d.mail, user, 'Maildir');

describe('forward:ADDR', () => {
  test('20 forwards over LMTP reuse at most 2 connections; the envelope sender is kept; the original bytes follow our Delivered-To and Received', async () => {
    const before = sink.connections();
    const sent: string[] = [];
    await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      const raw = message('fwd@f.test', `forward ${i}`);
      sent.push(raw);
      const info = await lmtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['fwd@f.test'] }, raw });
      assert.deepEqual(info.accepted, ['fwd@f.test']);
    }));
    const got = await waitFor('20 forwards at the sink', () => {
      const m = received((x) => x.to.includes('away@remote.test'));
      return m.length >= 20 ? m : undefined;
    });
    assert.equal(got.length, 20);
    assert.ok(sink.connections() - before <= 2, `${sink.connections() - before} connections for 20 forwards`);
    for (const m of got) {
      assert.equal(m.from, 'sender@remote.test', 'envelope sender kept');
      assert.deepEqual(m.to, ['away@remote.test']);
      const text = m.raw.toString('utf8');
      assert.match(text, /^Delivered-To: fwd@f\.test\r\nReceived: from client\.test \(127\.0\.0\.1\)\r\n\tby mx\.test\.local \(mailprocd\) with LMTP id \S+\r\n\tfor <fwd@f\.test>; /);
      assert.doesNotMatch(text, /^Return-Path:/m, 'Return-Path is written by the final delivery only');
      const original = text.slice(text.indexOf('From: sender@remote.test'));
      assert.ok(sent.includes(original), 'the original bytes, untouched');
    }
    await d.waitForLog(/to=<fwd@f\.test>, relay=forward, .*dsn=2\.0\.0, status=sent/);
  });

  test('two forwards and a mailbox: one transaction to the relay with both recipients, and the file', async () => {
    const raw = message('two@f.test', 'two forwards');
    await lmtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['two@f.test'] }, raw });
    const got = await waitFor('the forward', () => received((m) => m.to.includes('one@remote.test'))[0]);
    assert.deepEqual([...got.to].sort(), ['one@remote.test', 'two@remote.test']);
    assert.equal(newFiles(mailOf('two')).length, 1);
  });

  test('a 4xx from the relay is retried by our queue, then delivered', async () => {
    sink.refuseNext({ code: 451, text: '4.3.2 try later', at: 'rcpt' });
    const raw = message('fwd@f.test', 'retried forward');
    await smtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['fwd@f.test'] }, raw });
    await d.waitForLog(/to=<fwd@f\.test>, relay=forward, .*dsn=4\.3\.2, status=deferred/);
    await waitFor('the retried forward', () => received((m) => m.raw.toString('utf8').includes('Subject: retried forward'))[0]);
    await d.waitForLog(/to=<fwd@f\.test>, relay=forward, .*dsn=2\.0\.0, status=sent/);
  });

  test('a 5xx from the relay bounces: one DSN to the original sender', async () => {
    sink.refuseNext({ code: 550, text: '5.1.1 no such user over there', at: 'rcpt' });
    await smtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['fwd@f.test'] }, raw: message('fwd@f.test', 'refused forward') });
    const dsn = await waitFor('the DSN', () => received((m) => m.from === '' && m.raw.toString('utf8').includes('Subject: refused forward'))[0]);
    assert.deepEqual(dsn.to, ['sender@remote.test']);
    const text = dsn.raw.toString('utf8');
    assert.match(text, /Final-Recipient: rfc822; ?fwd@f\.test/i);
    assert.match(text, /Status: 5\.1\.1/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(received((m) => m.from === '' && m.raw.toString('utf8').includes('Subject: refused forward')).length, 1);
  });

  test('a loop between two of our addresses through another host ends in one 5.4.6 bounce', async () => {
    // The sink plays the other host: what it receives for one of our addresses is sent back to us.
    const bounce = (m: SinkMessage): boolean => m.from === '' && m.raw.toString('utf8').includes('Subject: loop');
    await smtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['loopa@f.test'] }, raw: message('loopa@f.test', 'loop') });
    const toB = await waitFor('A forwarded to B', () => received((m) => m.to.includes('loopb@f.test'))[0]);
    await smtp.sendMail({ envelope: { from: toB.from, to: ['loopb@f.test'] }, raw: toB.raw });
    const toA = await waitFor('B forwarded to A', () => received((m) => m.to.includes('loopa@f.test'))[0]);
    assert.match(toA.raw.toString('utf8'), /^Delivered-To: loopb@f\.test\r\n[^]*\r\nDelivered-To: loopa@f\.test\r\n/);
    await smtp.sendMail({ envelope: { from: toA.from, to: ['loopa@f.test'] }, raw: toA.raw });
    const dsn = await waitFor('the loop bounce', () => received(bounce)[0]);
    assert.deepEqual(dsn.to, ['sender@remote.test']);
    assert.match(dsn.raw.toString('utf8'), /Status: 5\.4\.6/);
    await d.waitForLog(/to=<loopa@f\.test>, relay=none, .*dsn=5\.4\.6, status=bounced \(mail forwarding loop for loopa@f\.test\)/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(received(bounce).length, 1, 'one bounce');
  });
});

describe('list:NAME without a manager (an alias)', () => {
  test('a post reaches each local subscriber through their own rules and the remote one through the relay, all with Delivered-To: <list>', async () => {
    const raw = message('dev@f.test', 'to the list');
    const info = await lmtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['dev@f.test'] }, raw });
    assert.deepEqual(info.accepted, ['dev@f.test']);
    for (const user of ['alice', 'bob']) {
      const files = newFiles(mailOf(user));
      assert.equal(files.length, 1, `${user} has the post`);
      const { trace, rest } = splitTrace(readFileSync(files[0] as string));
      assert.match(trace, new RegExp(`^Return-Path: <sender@remote\\.test>\\nDelivered-To: ${user}@f\\.test\\n`));
      assert.match(rest.toString('utf8'), /^Delivered-To: dev@f\.test\n/);
    }
    const far = await waitFor('the remote subscriber', () => received((m) => m.to.includes('far@remote.test'))[0]);
    assert.equal(far.from, 'sender@remote.test');
    assert.match(far.raw.toString('utf8'), /^Delivered-To: dev@f\.test\r\n/);
    await d.waitForLog(/to=<dev@f\.test>, relay=list, .*dsn=2\.0\.0, status=sent \(list "dev@f\.test": 3 copies\)/);
    await d.waitForLog(/to=<alice@f\.test>, orig_to=<dev@f\.test>, relay=maildir, .*status=sent/);
  });

  test('a list that has itself as a subscriber: the others get their copy, the loop is refused', async () => {
    const before = newFiles(mailOf('alice')).length;
    await smtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['nested@f.test'] }, raw: message('nested@f.test', 'nested list') });
    await d.waitForLog(/to=<nested@f\.test>, relay=list, .*dsn=5\.4\.6, status=bounced/);
    assert.equal(newFiles(mailOf('alice')).length, before + 1, 'alice got hers once');
  });
});

describe('duplicate suppression', () => {
  test('a rule with dedupe: the same Message-ID twice is one file, logged "duplicate suppressed"; another Message-ID is delivered', async () => {
    const raw = message('dup@f.test', 'dedupe me');
    await lmtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['dup@f.test'] }, raw });
    await lmtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['dup@f.test'] }, raw });
    await d.waitForLog(/to=<dup@f\.test>, relay=dedupe, .*dsn=2\.0\.0, status=sent \(duplicate suppressed\)/);
    assert.equal(newFiles(mailOf('dup')).length, 1);
    await lmtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['dup@f.test'] }, raw: message('dup@f.test', 'another one') });
    assert.equal(newFiles(mailOf('dup')).length, 2);
  });

  test('a list address is its own owner: the same post twice is handed over once; the same Message-ID to another list is not suppressed', async () => {
    const raw = message('dev@f.test', 'cross-posted');
    const alice = newFiles(mailOf('alice')).length;
    await lmtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['dev@f.test'] }, raw });
    await lmtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['dev@f.test'] }, raw });
    await d.waitForLog(/to=<dev@f\.test>, relay=dedupe, .*status=sent \(duplicate suppressed\)/);
    assert.equal(newFiles(mailOf('alice')).length, alice + 1);
    await lmtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['nested@f.test'] }, raw });
    await d.waitForLog(/to=<nested@f\.test>, relay=list, .*dsn=5\.4\.6/);
  });

  test('an alias list retried because its remote subscriber deferred: the local subscribers get their copy once', async () => {
    const alice = newFiles(mailOf('alice')).length;
    const bob = newFiles(mailOf('bob')).length;
    sink.refuseNext({ code: 451, text: '4.3.2 try later', at: 'rcpt' });
    await smtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['dev@f.test'] }, raw: message('dev@f.test', 'retried list') });
    await d.waitForLog(/to=<dev@f\.test>, relay=list, .*dsn=4\.3\.2, status=deferred/);
    await waitFor('the remote subscriber, on the retry', () => received((m) => m.to.includes('far@remote.test') && m.raw.toString('utf8').includes('Subject: retried list'))[0]);
    await d.waitForLog(/to=<dev@f\.test>, relay=list, .*dsn=2\.0\.0, status=sent/);
    await d.waitForLog(/to=<alice@f\.test>, orig_to=<dev@f\.test>, relay=dedupe, .*status=sent \(duplicate suppressed\)/);
    assert.equal(newFiles(mailOf('alice')).length, alice + 1);
    assert.equal(newFiles(mailOf('bob')).length, bob + 1);
  });

  test('an alias list retried because one remote subscriber deferred: the other remote subscriber is not sent the post again', async () => {
    // The first RCPT of the list's one relay transaction (first@) is refused for now; second@ takes it.
    sink.refuseNext({ code: 451, text: '4.3.2 try later', at: 'rcpt' });
    await smtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['far2@f.test'] }, raw: message('far2@f.test', 'two remote subscribers') });
    await d.waitForLog(/to=<far2@f\.test>, relay=list, .*dsn=4\.3\.2, status=deferred/);
    const posts = (who: string): number => received((m) => m.to.includes(who) && m.raw.toString('utf8').includes('Subject: two remote subscribers')).length;
    await waitFor('the deferred subscriber, on the retry', () => (posts('first@remote.test') === 1 ? true : undefined));
    await d.waitForLog(/to=<far2@f\.test>, relay=list, .*dsn=2\.0\.0, status=sent/);
    assert.equal(posts('second@remote.test'), 1, 'second@ has the post once');
    const retry = received((m) => m.to.includes('first@remote.test') && m.raw.toString('utf8').includes('Subject: two remote subscribers'))[0];
    assert.deepEqual(retry?.to, ['first@remote.test'], 'the retry went to first@ alone');
  });
});

describe('SRS (relay.srs.secret set)', () => {
  test('a forward\'s sender becomes SRS0=…@our domain; a bounce to it is reversed to the original sender; a forged one is refused at RCPT', async () => {
    const srsSink = await startSmtpSink();
    const e = await startDaemon({
      rules: 'fwd@s.test  forward:away@remote.test\n',
      config: { relay: { smtp: `127.0.0.1:${srsSink.port}`, srs: { secret: 'a test secret of some length' } }, log: { level: 'info' } },
    });
    const client = createTransport({ host: '127.0.0.1', port: e.smtpPort, name: 'client.test' } as never);
    try {
      await client.sendMail({ envelope: { from: 'orig@sender.test', to: ['fwd@s.test'] }, raw: message('fwd@s.test', 'srs forward') });
      const fwd = await waitFor('the forward', () => srsSink.messages.find((m) => m.to.includes('away@remote.test')));
      assert.match(fwd.from, /^SRS0=[^=]+=[A-Z2-7]{2}=sender\.test=orig@mx\.test\.local$/i);

      // The next hop bounces it to the rewritten sender: the bounce comes back to us and goes on to the original sender.
      await client.sendMail({ envelope: { from: '', to: [fwd.from] }, raw: 'From: MAILER-DAEMON@remote.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nbounce\r\n' });
      const back = await waitFor('the reversed bounce', () => srsSink.messages.find((m) => m.to.includes('orig@sender.test')));
      assert.equal(back.from, '', 'the bounce keeps its null sender');
      assert.match(back.raw.toString('utf8'), /Subject: Undelivered Mail Returned to Sender/);

      const forged = fwd.from.replace(/^SRS0=[^=]+=/i, 'SRS0=AAAA=');
      await assert.rejects(client.sendMail({ envelope: { from: '', to: [forged] }, raw: 'Subject: x\r\n\r\nx\r\n' }), /550/);
    } finally {
      client.close();
      await e.stop();
      e.cleanup();
      await srsSink.close();
    }
  });
});

describe('the shipped example tables (db/)', () => {
  test('a post to dev@example.test, a list without a manager, lands in alice\'s dev folder and bob\'s inbox', async () => {
    const shipped = (name: string): string => readFileSync(join('db', name), 'utf8').replaceAll('./var/mail', '${MAIL}');
    const e = await startDaemon({ rules: shipped('rules'), lists: shipped('lists'), uid: shipped('uid'), gid: shipped('gid') });
    const t = createTransport({ host: '127.0.0.1', port: e.lmtpPort, lmtp: true, name: 'client.test' } as never);
    try {
      const info = await t.sendMail({
        envelope: { from: 'alice@example.test', to: ['dev@example.test'] },
        raw: 'From: alice@example.test\r\nTo: dev@example.test\r\nList-Id: <dev.example.test>\r\nSubject: hello dev\r\n\r\nhi\r\n',
      });
      assert.deepEqual(info.accepted, ['dev@example.test']);
      await e.waitForLog(/to=<dev@example\.test>, relay=list, .*dsn=2\.0\.0, status=sent/);
      assert.equal(newFiles(join(e.mail, 'alice', 'Maildir', '.dev')).length, 1, 'alice: her rule files List-Id dev into "dev"');
      assert.equal(newFiles(join(e.mail, 'bob', 'Maildir')).length, 1, 'bob: his inbox');
    } finally {
      t.close();
      await e.stop();
      e.cleanup();
    }
  });
});
