// Slow and abusive clients against a real mailprocd, over raw sockets: a
// command line or a DATA trickled a byte at a time (limits.command_timeout,
// limits.data_min_rate), too many connections from one address
// (limits.connections_per_client, Postfix anvil's 50), and a harvester's
// errors (limits.hard_error_limit, Postfix's 20). Each ends in 421 and a
// closed connection, with a log line; normal clients are not touched.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { listDir, newFiles, onlyMessage, stored } from '../helpers/mailbox.js';
import { dataBlock, RawClient, type Reply } from '../helpers/raw-client.js';
import { waitFor } from '../helpers/wait.js';

const RULES = `
@catch.test  maildir:\${MAIL}/\${user}/Maildir/
@small.test  maildir:\${MAIL}/\${user}/Maildir/  maxsize=1k
`;

/** Default limits: connections_per_client 50, hard_error_limit 20. */
let d: TestDaemon;
/** command_timeout 3 s with client_timeout 60 s: a trickle is cut by the first, never by the idle timer. */
let slow: TestDaemon;
let seq = 0;
const freshUser = (domain = 'catch.test'): string => `a${++seq}x@${domain}`;
const maildirOf = (daemon: TestDaemon, user: string): string => join(daemon.mail, user.split('@')[0] as string, 'Maildir');

before(async () => {
  [d, slow] = await Promise.all([
    startDaemon({ rules: RULES }),
    startDaemon({ rules: RULES, config: { limits: { command_timeout: '3s', client_timeout: '60s' } } }),
  ]);
});
after(async () => {
  await Promise.all([d.stop(), slow.stop()]);
  d.cleanup();
  slow.cleanup();
});

async function greeted(port: number, hello = 'EHLO', from?: string): Promise<RawClient> {
  const c = await RawClient.open({ port, ...(from !== undefined ? { from } : {}) });
  assert.equal((await c.reply()).code, 220);
  assert.equal((await c.command(`${hello} client.test`)).code, 250);
  return c;
}

/** Writes `bytes` one every `everyMs` until the server answers or closes; returns that reply and how long it took. */
async function trickle(c: RawClient, bytes: string, everyMs: number): Promise<{ reply: Reply; ms: number; sent: number }> {
  const started = Date.now();
  let sent = 0;
  let reply: Reply | undefined;
  const answer = c.reply(30_000).then((r) => {
    reply = r;
  }, () => undefined);
  while (reply === undefined && !c.isClosed && sent < bytes.length) {
    c.write(bytes[sent++] as string);
    await new Promise((r) => setTimeout(r, everyMs));
  }
  await answer;
  assert.ok(reply !== undefined, `no reply after ${sent} bytes in ${Date.now() - started} ms`);
  return { reply, ms: Date.now() - started, sent };
}

describe('a client that trickles', () => {
  test('SMTP: a command line sent a byte every 300 ms gets 421 4.4.2 once it has waited command_timeout (3 s), and the connection is closed', async () => {
    const c = await greeted(slow.smtpPort);
    const { reply, ms } = await trickle(c, `MAIL FROM:<${'s'.repeat(200)}@remote.test>\r\n`, 300);
    assert.match(reply.line, /^421 4\.4\.2 mx\.test\.local Error: timeout exceeded \(command line not finished\)/);
    assert.ok(ms >= 2_500 && ms < 20_000, `cut after ${ms} ms`);
    await waitFor('disconnect', () => (c.isClosed ? true : undefined), 5_000);
    await slow.waitForLog(/warn: smtp client 127\.0\.0\.1: timeout exceeded \(command line not finished\); connection closed/);
  });

  test('LMTP: DATA sent a byte every 300 ms runs out of its budget (3 s, 2 ms back per byte) and gets 421 4.4.2; nothing is delivered', async () => {
    const user = freshUser();
    const c = await greeted(slow.lmtpPort, 'LHLO');
    await c.command('MAIL FROM:<s@remote.test>');
    assert.equal((await c.command(`RCPT TO:<${user}>`)).code, 250);
    assert.equal((await c.command('DATA')).code, 354);
    const { reply, ms } = await trickle(c, `Subject: slow\r\n\r\n${'x'.repeat(500)}\r\n.\r\n`, 300);
    assert.match(reply.line, /^421 4\.4\.2 mx\.test\.local Error: timeout exceeded \(DATA made too little progress\)/);
    assert.ok(ms >= 2_500 && ms < 20_000, `cut after ${ms} ms`);
    await waitFor('disconnect', () => (c.isClosed ? true : undefined), 5_000);
    assert.deepEqual(listDir(join(maildirOf(slow, user), 'new')), [], 'nothing delivered');
  });

  test('with the same limits a 2 MiB message sent at full speed, and a session that pauses between commands, are served', async () => {
    const user = freshUser();
    const c = await greeted(slow.lmtpPort, 'LHLO');
    await new Promise((r) => setTimeout(r, 3_500)); // idle between commands is client_timeout's (60 s), not command_timeout's
    await c.command('MAIL FROM:<s@remote.test>');
    assert.equal((await c.command(`RCPT TO:<${user}>`)).code, 250);
    assert.equal((await c.command('DATA')).code, 354);
    const msg = `Subject: big\r\n\r\n${`${'y'.repeat(1022)}\r\n`.repeat(2048)}`;
    c.write(dataBlock(msg));
    assert.match((await c.reply(30_000)).line, /^250 2\.0\.0 /);
    assert.equal((await c.command('QUIT')).code, 221);
    c.close();
    assert.deepEqual(onlyMessage(maildirOf(slow, user)).rest, stored(msg));
  });
});

describe('connections per client address (limits.connections_per_client, default 50)', () => {
  test('SMTP: the 51st connection from 127.0.0.1 gets 421 4.7.0 and is closed; 127.0.0.2 and the unix LMTP socket are still served; a freed slot is reused', async () => {
    const open: RawClient[] = [];
    try {
      for (let i = 0; i < 50; i++) open.push(await greeted(d.smtpPort));
      const extra = await RawClient.open({ port: d.smtpPort });
      assert.match((await extra.reply()).line, /^421 4\.7\.0 mx\.test\.local Error: too many connections from 127\.0\.0\.1$/);
      await waitFor('disconnect', () => (extra.isClosed ? true : undefined), 5_000);
      await d.waitForLog(/warn: smtp client 127\.0\.0\.1: more than 50 connections \(limits\.connections_per_client\); refused/);

      const other = await greeted(d.smtpPort, 'EHLO', '127.0.0.2');
      other.close();
      const local = await RawClient.open({ path: d.socket });
      assert.equal((await local.reply()).code, 220, 'the unix socket has no client address to count');
      local.close();

      assert.equal((await open[0]?.command('QUIT'))?.code, 221);
      open.shift()?.close();
      const again = await waitFor('a slot for 127.0.0.1 again', async () => {
        const c = await RawClient.open({ port: d.smtpPort });
        const r = await c.reply();
        if (r.code === 220) return c;
        c.close();
        return undefined;
      });
      open.push(again);
    } finally {
      for (const c of open) c.close();
    }
  });
});

describe('errors per session (limits.hard_error_limit, default 20)', () => {
  test('SMTP: a harvester probing unknown addresses gets 421 4.7.0 right after its 20th error and is disconnected', async () => {
    // From its own address: the 50 connections the test above closed from
    // 127.0.0.1 may not all be uncounted by the server yet.
    const c = await greeted(d.smtpPort, 'EHLO', '127.0.0.3');
    await c.command('MAIL FROM:<h@remote.test>');
    for (let i = 1; i <= 20; i++) assert.match((await c.command(`RCPT TO:<guess${i}@example.test>`)).line, /^550 5\.1\.1 /, `probe ${i}`);
    assert.equal((await c.reply()).line, '421 4.7.0 mx.test.local Error: too many errors');
    await waitFor('disconnect', () => (c.isClosed ? true : undefined), 5_000);
    await d.waitForLog(/warn: smtp client 127\.0\.0\.3: 20 errors; connection closed/);
  });

  test('LMTP: syntax errors count too', async () => {
    const c = await greeted(d.lmtpPort, 'LHLO');
    for (let i = 1; i <= 20; i++) assert.match((await c.command(`MAIL FROM:<broken${i}`)).line, /^501 5\.1\.7 /);
    assert.match((await c.reply()).line, /^421 4\.7\.0 /);
    await waitFor('disconnect', () => (c.isClosed ? true : undefined), 5_000);
  });

  test('a delivered message starts the count afresh: 19 errors, a message, 19 errors and the session goes on', async () => {
    const user = freshUser();
    const c = await greeted(d.lmtpPort, 'LHLO');
    await c.command('MAIL FROM:<s@remote.test>');
    for (let i = 0; i < 19; i++) assert.equal((await c.command(`RCPT TO:<nobody${i}@example.test>`)).code, 550);
    assert.equal((await c.command(`RCPT TO:<${user}>`)).code, 250);
    assert.equal((await c.command('DATA')).code, 354);
    c.write(dataBlock('Subject: between errors\r\n\r\nhi\r\n'));
    assert.match((await c.reply()).line, /^250 2\.0\.0 /);
    await c.command('MAIL FROM:<s@remote.test>');
    for (let i = 0; i < 19; i++) assert.equal((await c.command(`RCPT TO:<nobody${i}@example.test>`)).code, 550);
    assert.equal((await c.command('QUIT')).code, 221);
    c.close();
    assert.equal(newFiles(maildirOf(d, user)).length, 1);
  });

  test('LMTP: per-recipient failures after DATA are outcomes, not client errors: 25 recipients over their size limit get 25 replies and the session goes on', async () => {
    const users = Array.from({ length: 25 }, () => freshUser('small.test'));
    const c = await greeted(d.lmtpPort, 'LHLO');
    await c.command('MAIL FROM:<s@remote.test>');
    for (const u of users) assert.equal((await c.command(`RCPT TO:<${u}>`)).code, 250);
    assert.equal((await c.command('DATA')).code, 354);
    c.write(dataBlock(`Subject: too big\r\n\r\n${'z'.repeat(2048)}\r\n`));
    const replies = await c.replies(25);
    assert.deepEqual(replies.map((r) => r.code), users.map(() => 552));
    assert.equal((await c.command('NOOP')).code, 250);
    assert.equal((await c.command('QUIT')).code, 221);
    c.close();
  });
});
