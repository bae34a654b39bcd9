// SMTP intake against a real mailprocd: 250 only once the message is in the
// durable spool; the spool survives kill -9 and is delivered after a restart,
// exactly once.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync, chmodSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createTransport } from 'nodemailer';
import { startDaemon, makeTestDir, type TestDaemon } from '../helpers/daemon.js';
import { newFiles, onlyMessage, stored } from '../helpers/mailbox.js';
import { mountTmpfs } from '../helpers/components.js';
import { RawClient } from '../helpers/raw-client.js';
import { waitFor } from '../helpers/wait.js';

const RULES = `
alice@example.test  maildir:\${MAIL}/\${user}/Maildir/
held@example.test   maildir:\${MAIL}/blocked/\${user}/Maildir/
@catch.test         maildir:\${MAIL}/\${user}/Maildir/
`;

function smtp(d: TestDaemon) {
  return createTransport({ host: '127.0.0.1', port: d.smtpPort, name: 'client.test', pool: false } as never);
}

const spoolFiles = (d: TestDaemon): string[] => readdirSync(join(d.dir, 'state', 'spool', 'active'));

test('SMTP: a message is queued (250 2.0.0 … queued as ID) and then delivered', async () => {
  const d = await startDaemon({ rules: RULES });
  try {
    const raw = 'From: s@remote.test\r\nTo: alice@example.test\r\nSubject: via smtp\r\nMessage-ID: <one@remote.test>\r\n\r\nhello over SMTP\r\n';
    const t = smtp(d);
    const info = await t.sendMail({ envelope: { from: 's@remote.test', to: ['alice@example.test'] }, raw });
    t.close();
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as ([0-9A-F]+)/);
    const id = /queued as ([0-9A-F]+)/.exec(info.response)?.[1] ?? '';
    const maildir = join(d.mail, 'alice', 'Maildir');
    await waitFor('delivery', () => (newFiles(maildir).length > 0 ? true : undefined));
    const m = onlyMessage(maildir);
    assert.deepEqual(m.rest, stored(raw));
    assert.notEqual(m.uid, 0);
    assert.match(m.trace, / with ESMTP id /);
    await d.waitForLog(new RegExp(`${id}: to=<alice@example.test>, relay=maildir, .*status=sent`));
    await waitFor('spool emptied', () => (spoolFiles(d).length === 0 ? true : undefined));
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('SMTP: an unknown recipient is refused 550 5.1.1 at RCPT', async () => {
  const d = await startDaemon({ rules: RULES });
  try {
    const c = await RawClient.open({ port: d.smtpPort });
    assert.equal((await c.reply()).code, 220);
    assert.equal((await c.command('EHLO client.test')).code, 250);
    await c.command('MAIL FROM:<s@remote.test>');
    assert.match((await c.command('RCPT TO:<nobody@example.test>')).line, /^550 5\.1\.1 /);
    assert.match((await c.command('RCPT TO:<alice@example.test>')).line, /^250 2\.1\.5/);
    assert.equal((await c.command('QUIT')).code, 221);
    c.close();
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('SMTP: a deferred message survives kill -9 of the daemon and is delivered once after the restart', async () => {
  const dir = makeTestDir();
  const mail = join(dir, 'mail');
  mkdirSync(mail, { recursive: true, mode: 0o1777 });
  chmodSync(mail, 0o1777);
  // A file where a directory should be: every delivery attempt fails temporarily (ENOTDIR).
  writeFileSync(join(mail, 'blocked'), 'not a directory');
  let d = await startDaemon({ rules: RULES, dir });
  try {
    const raw = 'From: s@remote.test\r\nTo: held@example.test\r\nSubject: held\r\nMessage-ID: <held@remote.test>\r\n\r\nkept across a crash\r\n';
    const t = smtp(d);
    const info = await t.sendMail({ envelope: { from: 's@remote.test', to: ['held@example.test'] }, raw });
    t.close();
    assert.match(info.response, /^250 /);
    await d.waitForLog(/to=<held@example\.test>.*status=deferred/);
    await d.kill();
    assert.equal(spoolFiles(d).filter((f) => !f.includes('.')).length, 1, 'the message is in the spool after kill -9');

    // The daemon makes the per-user directory itself (0700, the delivery user's) on the next attempt.
    rmSync(join(mail, 'blocked'));
    d = await startDaemon({ rules: RULES, dir });
    const maildir = join(mail, 'blocked', 'held', 'Maildir');
    await waitFor('delivery after restart', () => (newFiles(maildir).length > 0 ? true : undefined));
    await waitFor('spool emptied', () => (spoolFiles(d).length === 0 ? true : undefined));
    assert.deepEqual(onlyMessage(maildir).rest, stored(raw));
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('SMTP: kill -9 right after the last 250 of a burst loses nothing; only a delivery in flight at the kill may repeat', async () => {
  const dir = makeTestDir();
  let d = await startDaemon({ rules: RULES, dir });
  const n = 40;
  const sent: string[] = [];
  try {
    const t = createTransport({ host: '127.0.0.1', port: d.smtpPort, name: 'client.test', pool: true, maxConnections: 4 } as never);
    await Promise.all(Array.from({ length: n }, async (_, i) => {
      const to = `burst${i % 5}@catch.test`;
      const id = `<burst-${i}@remote.test>`;
      const raw = `From: s@remote.test\r\nTo: ${to}\r\nSubject: burst ${i}\r\nMessage-ID: ${id}\r\n\r\nmessage ${i}\r\n`;
      const info = await t.sendMail({ envelope: { from: 's@remote.test', to: [to] }, raw });
      assert.match(info.response, /^250 /);
      sent.push(id);
    }));
    t.close();
    await d.kill();
    d = await startDaemon({ rules: RULES, dir });
    const collect = (): string[] => {
      const ids: string[] = [];
      for (let u = 0; u < 5; u++) {
        for (const f of newFiles(join(d.mail, `burst${u}`, 'Maildir'))) {
          ids.push(/^Message-ID: (.*)$/m.exec(readFileSync(f, 'utf8'))?.[1] ?? '?');
        }
      }
      return ids;
    };
    await waitFor('every message delivered', () => (collect().length >= n && spoolFiles(d).length === 0 ? true : undefined), 20_000)
      .catch((err: Error) => {
        throw new Error(`${err.message}: ${collect().length} of ${n} delivered, spool ${spoolFiles(d).join(' ')}\n${d.logs.filter((l) => !/debug/.test(l)).slice(-40).join('\n')}`);
      });
    const ids = collect();
    assert.deepEqual([...new Set(ids)].sort(), [...sent].sort(), 'every accepted message, and nothing else');
    // A copy written but not yet recorded when the master died is written again
    // after the restart: the window Postfix local(8) also has. It is bounded by
    // the deliveries in flight (the queue runs at most 16 at once).
    const duplicates = ids.length - n;
    assert.ok(duplicates <= 16, `${duplicates} duplicates`);
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('SMTP: a full spool file system answers 452 4.3.1 after DATA, keeps nothing half-written, and takes mail again once there is room', async (t) => {
  const dir = makeTestDir();
  const spool = join(dir, 'spool');
  mkdirSync(spool);
  let mounted = false;
  t.after(() => {
    if (mounted) execFileSync('umount', [spool]);
    rmSync(dir, { recursive: true, force: true });
  });
  if (!mountTmpfs(t, spool, '64k')) return;
  mounted = true;
  const d = await startDaemon({ dir, rules: RULES, config: { paths: { spool } } });
  try {
    const send = async (body: string): Promise<string> => {
      const c = await RawClient.open({ port: d.smtpPort });
      try {
        await c.reply();
        await c.command('EHLO client.test');
        await c.command('MAIL FROM:<s@remote.test>');
        assert.equal((await c.command('RCPT TO:<alice@example.test>')).code, 250);
        assert.equal((await c.command('DATA')).code, 354);
        c.write(`Subject: spool\r\n\r\n${body}\r\n.\r\n`);
        return (await c.reply()).line;
      } finally {
        c.close();
      }
    };
    const line = `${'y'.repeat(998)}\r\n`;
    const full = await send(line.repeat(200));
    assert.match(full, /^452 4\.3\.1 /, 'no room for 200 KB: a temporary failure, the client keeps the message');
    assert.equal(full, '452 4.3.1 Mail system full, try again later', 'the spool\'s path is for the log only');
    await d.waitForLog(new RegExp(`cannot write spool file ${spool.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/`));
    assert.deepEqual(readdirSync(join(spool, 'incoming')), [], 'the partial spool file is removed');
    assert.deepEqual(readdirSync(join(spool, 'active')), []);
    assert.match(await send('small enough'), /^250 2\.0\.0 Ok: queued as /);
    await waitFor('delivery', () => (newFiles(join(d.mail, 'alice', 'Maildir')).length > 0 ? true : undefined));
  } finally {
    await d.stop();
  }
});
