// Crash safety under load: 700 messages over LMTP and SMTP, a worker killed
// twice and the master killed once (kill -9) while they flow; after the
// restart every message that got a 250 is delivered — counted by Message-ID
// in the Maildirs — and a duplicate happens only in the window Postfix
// local(8) also has (written, not yet recorded, when the master died), which
// the test counts and bounds.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createTransport } from 'nodemailer';
import { startDaemon, makeTestDir, type TestDaemon } from '../helpers/daemon.js';
import { newFiles } from '../helpers/mailbox.js';
import { childPids } from '../helpers/users.js';
import { readdirSync } from 'node:fs';

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
    const duplicates = [...count.values()].filter((n) => n > 1).length;
    t.diagnostic(`${accepted.length} accepted, ${ids.length} files, ${duplicates} duplicated in the crash window, ${ids.length - new Set(ids).size} extra copies`);
    // Only deliveries running when the master died can repeat: at most its delivery slots.
    assert.ok(duplicates <= 64, `${duplicates} duplicates`);
  } finally {
    await d.stop();
    d.cleanup();
  }
});
