// Crash safety under load: 700 messages over LMTP and SMTP, a worker killed
// twice and the master killed once (kill -9) while they flow; after the
// restart every message that got a 250 is delivered — counted by Message-ID
// in the Maildirs — and no queued (SMTP) message is written twice: a copy
// written whose outcome was lost with the worker or the master carries its
// redelivery token, and the repeated attempt finds it (src/queue/manager.ts).
// An LMTP message has no spool entry while its client waits: one written when
// the master died may come again from the client (the MTA's own duplicate
// window, as with Dovecot); those are counted and bounded. A second test makes
// the master's window happen for sure: the spool entry of a delivered message
// put back as a kill -9 between the write and its record leaves it.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createTransport } from 'nodemailer';
import { startDaemon, makeTestDir, type TestDaemon } from '../helpers/daemon.js';
import { newFiles } from '../helpers/mailbox.js';
import { childPids } from '../helpers/users.js';

const RULES = '@crash.test  maildir:${MAIL}/${user}/Maildir/\n';
const USERS = 10;
const TOTAL = 700;

function message(i: number): { to: string; raw: string; id: string } {
  const to = `u${i % USERS}@crash.test`;
  const id = `<crash-${i}@remote.test>`;
  return { to, id, raw: `From: s@remote.test\r\nTo: ${to}\r\nSubject: crash ${i}\r\nMessage-ID: ${id}\r\n\r\nbody ${i}\r\n` };
}

/** Sends messages [from, to) over LMTP (even) and SMTP (odd), 4 at a time each; returns the ids that got 250. */
async function load(d: TestDaemon, from: number, to: number, onAccepted: (n: number) => void): Promise<string[]> {
  const accepted: string[] = [];
  const lmtp = createTransport({ lmtp: true, host: '127.0.0.1', port: d.lmtpPort, name: 'client.test' } as never);
  const smtp = createTransport({ host: '127.0.0.1', port: d.smtpPort, name: 'client.test', pool: true, maxConnections: 4 } as never);
  let next = from;
  const lane = async (): Promise<void> => {
    while (next < to) {
      const i = next++;
      const m = message(i);
      try {
        const info = await (i % 2 === 0 ? lmtp : smtp).sendMail({ envelope: { from: 's@remote.test', to: [m.to] }, raw: m.raw }) as { accepted: string[] };
        // An LMTP per-recipient 451 still resolves sendMail: count only real acceptances.
        if (!info.accepted.includes(m.to)) continue;
        accepted.push(m.id);
        onAccepted(accepted.length);
      } catch {
        // refused, 4xx, or the connection died with the master: not accepted, the client keeps it
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, lane));
  lmtp.close();
  smtp.close();
  return accepted;
}

/** Odd messages went over SMTP (load()): queued, so never written twice. */
const viaSmtp = (messageId: string): boolean => Number(/<crash-(\d+)@/.exec(messageId)?.[1]) % 2 === 1;

function delivered(d: TestDaemon): string[] {
  const ids: string[] = [];
  for (let u = 0; u < USERS; u++) {
    for (const f of newFiles(join(d.mail, `u${u}`, 'Maildir'))) ids.push(/^Message-ID: (.*)$/m.exec(readFileSync(f, 'utf8'))?.[1] ?? '?');
  }
  return ids;
}

test('kill -9 of two workers and the master under load: every message that got 250 is delivered', { timeout: 180_000 }, async (t) => {
  const dir = makeTestDir();
  const config = { queue: { retry_min: '200ms', retry_max: '1s' }, log: { level: 'info' } };
  let d = await startDaemon({ rules: RULES, dir, config });
  try {
    const kills: string[] = [];
    const killWorker = (): void => {
      const [pid] = childPids(d.child.pid ?? -1);
      if (pid !== undefined) {
        process.kill(pid, 'SIGKILL');
        kills.push(`worker ${pid}`);
      }
    };
    let masterKilled: Promise<void> | undefined;
    const first = await load(d, 0, 400, (n) => {
      if (n === 100 || n === 200) killWorker();
      if (n === 300 && masterKilled === undefined) {
        kills.push(`master ${d.child.pid ?? '?'}`);
        masterKilled = d.kill();
      }
    });
    await masterKilled;
    assert.deepEqual(kills.map((k) => k.split(' ')[0]), ['worker', 'worker', 'master'], kills.join(', '));
    const firstLogs = d.logs;
    d = await startDaemon({ rules: RULES, dir, config });
    const second = await load(d, 400, TOTAL, () => undefined);
    const accepted = [...first, ...second];
    assert.ok(accepted.length >= 500, `${accepted.length} accepted`);

    const deadline = Date.now() + 60_000;
    const spoolEmpty = (): boolean => readdirSync(join(dir, 'state', 'spool', 'active')).length === 0;
    while (!(spoolEmpty() && accepted.every((id) => delivered(d).includes(id)))) {
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const ids = delivered(d);
    const missing = accepted.filter((id) => !ids.includes(id));
    assert.deepEqual(missing, [], 'no message that got a 250 is lost');
    const count = new Map<string, number>();
    for (const id of ids) count.set(id, (count.get(id) ?? 0) + 1);
    const twice = [...count].filter(([, n]) => n > 1);
    const smtpTwice = twice.filter(([id]) => viaSmtp(id)).map(([id, n]) => `${id} ×${n}`);
    const lmtpTwice = twice.length - smtpTwice.length;
    const found = [...firstLogs, ...d.logs].filter((l) => /already delivered/.test(l)).length;
    t.diagnostic(`${accepted.length} accepted, ${ids.length} files; duplicated: ${smtpTwice.length} queued (SMTP), ${lmtpTwice} LMTP; ${found} queued copies found already written by an attempt whose outcome was lost`);
    assert.deepEqual(smtpTwice, [], 'no queued message is written twice');
    // An LMTP delivery running when the master died can repeat: at most its delivery slots.
    assert.ok(lmtpTwice <= 64, `${lmtpTwice} LMTP duplicates`);
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('a queued copy written when the master died before recording it is not written again after the restart', { timeout: 120_000 }, async () => {
  const dir = makeTestDir();
  const config = { queue: { retry_min: '200ms', retry_max: '1s' }, log: { level: 'info' } };
  const active = join(dir, 'state', 'spool', 'active');
  let d = await startDaemon({ rules: RULES, dir, config });
  try {
    const m = message(1);
    const smtp = createTransport({ host: '127.0.0.1', port: d.smtpPort, name: 'client.test' } as never);
    await smtp.sendMail({ envelope: { from: 's@remote.test', to: [m.to] }, raw: m.raw });
    smtp.close();
    const line = await d.waitForLog(/: to=<u1@crash\.test>.*status=sent/);
    const id = /([0-9A-F]{10,}): to=/.exec(line)?.[1] ?? '';
    await d.waitForLog(new RegExp(`${id}: removed`));
    await d.stop();
    const maildir = join(d.mail, 'u1', 'Maildir');
    const written = newFiles(maildir);
    assert.equal(written.length, 1);
    // What kill -9 between the write and markDone leaves: the entry, no record of the recipient.
    const envelope = { id, sender: 's@remote.test', recipients: [m.to], helo: 'client.test', clientAddress: '127.0.0.1', protocol: 'ESMTP', arrival: Date.now() };
    writeFileSync(join(active, id), `MAILPROC-SPOOL 1\n${JSON.stringify(envelope)}\n${m.raw}`, { mode: 0o600 });

    d = await startDaemon({ rules: RULES, dir, config });
    const again = await d.waitForLog(new RegExp(`${id}: to=<u1@crash\\.test>.*status=`));
    await d.waitForLog(new RegExp(`${id}: removed`));
    assert.match(again, /dsn=2\.0\.0, status=sent/);
    assert.deepEqual(newFiles(maildir), written, 'the copy is not written a second time');
    assert.ok(d.logs.some((l) => l.includes(id) && /already delivered/.test(l)), d.logs.filter((l) => l.includes(id)).join('\n'));
  } finally {
    await d.stop();
    d.cleanup();
  }
});
