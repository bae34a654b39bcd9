// Fairness between users: user A's mail goes through a filter that is stuck
// (a pipe held at a gate the test opens at the end, test/helpers/gate.ts),
// user B's to a Maildir. With A's 200 messages queued first, all of B's 20
// are delivered while A's deliveries are stuck — by what happened, not by
// wall-clock time. (A filter that slept 0.1 s raced the sending: on a loaded
// machine A's backlog could be half done before B's mail was even queued.)
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createTransport } from 'nodemailer';
import { requireRoot } from '../helpers/components.js';
import { makeTestDir, startDaemon } from '../helpers/daemon.js';
import { makeGates } from '../helpers/gate.js';
import { ensureSystemUser } from '../helpers/users.js';

test('a user with a stuck destination cannot hold up another user\'s mail', { timeout: 120_000 }, async (t) => {
  if (!requireRoot(t, 'two system users')) return;
  const a = ensureSystemUser('mpt-alice');
  const b = ensureSystemUser('mpt-bob');
  const dir = makeTestDir();
  const stuck = makeGates(dir)('stuck');
  const d = await startDaemon({
    dir,
    rules: `a@fair.test  ${stuck.destination}\nb@fair.test  maildir:\${MAIL}/b/Maildir/\n`,
    uid: `a@fair.test  ${a.name}\nb@fair.test  ${b.name}\n`,
    config: { delivery: { user_concurrency: 2 }, log: { level: 'info' } },
  });
  try {
    const transport = createTransport({ host: '127.0.0.1', port: d.smtpPort, name: 'client.test', pool: true, maxConnections: 4 } as never);
    const send = (to: string, i: number): Promise<unknown> => transport.sendMail({
      envelope: { from: 's@remote.test', to: [to] },
      raw: `From: s@remote.test\r\nTo: ${to}\r\nSubject: ${to} ${i}\r\n\r\nmessage ${i}\r\n`,
    });
    await Promise.all(Array.from({ length: 200 }, (_, i) => send('a@fair.test', i)));
    await Promise.all(Array.from({ length: 20 }, (_, i) => send('b@fair.test', i)));
    transport.close();
    const done = (who: string): number => d.logs.filter((l) => l.includes(`to=<${who}>`) && l.includes('status=sent')).length;
    const deadline = Date.now() + 60_000;
    while (done('b@fair.test') < 20) {
      if (Date.now() > deadline) throw new Error(`B got ${done('b@fair.test')} of 20; A ${done('a@fair.test')} of 200`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(done('a@fair.test'), 0, 'A\'s deliveries are all still stuck');
    assert.equal((await stuck.started(2)).length, 2, 'A has its user_concurrency (2) deliveries stuck at the gate, no more');
    assert.ok(d.logs.every((l) => !/to=<b@fair.test>.*status=(deferred|bounced)/.test(l)));
  } finally {
    stuck.open();
    await d.stop();
    d.cleanup();
  }
});

test('a rule\'s concurrency=1 makes one user\'s deliveries run one at a time', { timeout: 60_000 }, async () => {
  const d0 = await startDaemon({ rules: '' });
  const lockDir = join(d0.dir, 'locks');
  mkdirSync(lockDir);
  chmodSync(lockDir, 0o1777);
  await d0.stop();
  // The filter refuses (exit 75, deferred) when another copy of it is running.
  const filter = `pipe:"/bin/sh -c 'mkdir ${lockDir}/busy || exit 75; sleep 0.2; rmdir ${lockDir}/busy; cat >/dev/null'"`;
  const d = await startDaemon({ dir: d0.dir, rules: `one@c.test  ${filter}  concurrency=1\n`, config: { log: { level: 'info' } } });
  try {
    const transport = createTransport({ host: '127.0.0.1', port: d.smtpPort, name: 'client.test', pool: true, maxConnections: 4 } as never);
    await Promise.all(Array.from({ length: 5 }, (_, i) => transport.sendMail({
      envelope: { from: 's@remote.test', to: ['one@c.test'] }, raw: `Subject: ${i}\r\n\r\nx\r\n`,
    })));
    transport.close();
    const deadline = Date.now() + 30_000;
    while (d.logs.filter((l) => /to=<one@c\.test>.*status=sent/.test(l)).length < 5) {
      if (Date.now() > deadline) throw new Error('not all delivered');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(d.logs.filter((l) => /to=<one@c\.test>.*status=deferred/.test(l)).length, 0, 'never two at once');
  } finally {
    await d.stop();
    d.cleanup();
  }
});
