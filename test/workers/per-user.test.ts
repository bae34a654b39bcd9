// Per-user workers under the users' own uid/gid, with real system users:
// each user's files are theirs, each worker process runs as its user (read
// from /proc), nothing is written as root, root is refused unless allowed,
// idle workers expire and come back, `mailproc status` shows them, and a
// worker killed in the middle of a delivery costs that delivery a 451 (the
// client retries), nothing more.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { requireRoot } from '../helpers/components.js';
import { makeTestDir, MAILPROC, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { makeGates } from '../helpers/gate.js';
import { newFiles } from '../helpers/mailbox.js';
import { RawClient } from '../helpers/raw-client.js';
import { childPids, ensureSystemUser, processIds } from '../helpers/users.js';
import { waitFor } from '../helpers/wait.js';

async function lmtp(d: TestDaemon, rcpts: string[], body = 'Subject: t\r\n\r\nhello\r\n'): Promise<string[]> {
  const c = await RawClient.open({ port: d.lmtpPort });
  try {
    await c.reply();
    await c.command('LHLO client.test');
    await c.command('MAIL FROM:<s@remote.test>');
    let accepted = 0;
    const refused: string[] = [];
    for (const r of rcpts) {
      const reply = await c.command(`RCPT TO:<${r}>`);
      if (reply.code === 250) accepted++;
      else refused.push(reply.line);
    }
    if (accepted === 0) return refused;
    await c.command('DATA');
    c.write(`${body}.\r\n`);
    return [...refused, ...(await c.replies(accepted)).map((r) => r.line)];
  } finally {
    c.close();
  }
}

test('each user\'s mail is written by a worker running as that user, and owned by them', async (t) => {
  if (!requireRoot(t, 'useradd and switching users')) return;
  const users = ['mpt-alice', 'mpt-bob', 'mpt-carol'].map(ensureSystemUser);
  const d = await startDaemon({
    rules: '@users.test  maildir:${MAIL}/${user}/Maildir/\nrooty@users.test  maildir:${MAIL}/rooty/Maildir/\n',
    uid: `${users.map((u) => `${u.name.slice(4)}@users.test  ${u.name}`).join('\n')}\nrooty@users.test  root!\n`,
  });
  try {
    const replies = await lmtp(d, users.map((u) => `${u.name.slice(4)}@users.test`));
    assert.deepEqual(replies.map((r) => r.slice(0, 9)), ['250 2.0.0', '250 2.0.0', '250 2.0.0']);
    for (const u of users) {
      const [file] = newFiles(join(d.mail, u.name.slice(4), 'Maildir'));
      assert.ok(file, `${u.name} got the message`);
      const st = statSync(file);
      assert.deepEqual([st.uid, st.gid], [u.uid, u.gid], `${u.name}'s file is theirs`);
      const dirSt = statSync(join(d.mail, u.name.slice(4), 'Maildir'));
      assert.deepEqual([dirSt.uid, dirSt.gid], [u.uid, u.gid], `${u.name}'s Maildir was created by them, not by root`);
    }
    const workers = childPids(d.child.pid ?? -1).map((pid) => ({ pid, ...processIds(pid) }));
    assert.equal(workers.length, 3, 'one worker per user');
    for (const u of users) {
      const w = workers.find((x) => x.uids[0] === u.uid);
      assert.ok(w, `a worker runs as ${u.name}`);
      assert.deepEqual(w.uids, [u.uid, u.uid, u.uid, u.uid], 'real, effective, saved and fs uid');
      assert.deepEqual(w.gids, [u.gid, u.gid, u.gid, u.gid], 'real, effective, saved and fs gid');
      assert.deepEqual(w.groups.filter((g) => g !== u.gid), [], 'no inherited supplementary groups');
    }

    const status = spawnSync(process.execPath, [MAILPROC, '--config', d.configFile, 'status', '--json'], { encoding: 'utf8' });
    assert.equal(status.status, 0, status.stderr);
    const shown = (JSON.parse(status.stdout) as { workers: { user: string; pid: number; messages: number }[] }).workers;
    assert.deepEqual(shown.map((w) => w.user).sort(), users.map((u) => u.name).sort());
    assert.deepEqual(shown.map((w) => w.pid).sort(), workers.map((w) => w.pid).sort());
    assert.ok(shown.every((w) => w.messages === 1));

    const [rootReply] = await lmtp(d, ['rooty@users.test']);
    assert.match(rootReply ?? '', /^451 4\.3\.5 /);
    await d.waitForLog(/to=<rooty@users\.test>.*dsn=4\.3\.5, status=deferred \(refusing to deliver as root/); // the reason is for the log, not the client
    assert.equal(existsSync(join(d.mail, 'rooty')), false);
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('an address listed in delivery.allow_root may deliver as root; no other may', async (t) => {
  if (!requireRoot(t, 'delivering as root')) return;
  const d = await startDaemon({
    rules: 'ops@users.test  maildir:${MAIL}/ops/Maildir/\nother@users.test  maildir:${MAIL}/other/Maildir/\n',
    uid: 'ops@users.test  root\nother@users.test  root!\n',
    config: { delivery: { allow_root: ['ops@users.test'] } },
  });
  try {
    assert.match((await lmtp(d, ['ops@users.test']))[0] ?? '', /^250 /);
    const [file] = newFiles(join(d.mail, 'ops', 'Maildir'));
    assert.equal(statSync(file as string).uid, 0);
    assert.match((await lmtp(d, ['other@users.test']))[0] ?? '', /^451 4\.3\.5 /);
  } finally {
    await d.stop();
    d.cleanup();
  }
});

/** Pids of the workers started so far, from the daemon's log: known even if the worker has already exited. */
const startedWorkers = (d: TestDaemon): number[] =>
  d.logs.map((l) => /started worker for .*\bpid=(\d+)/.exec(l)?.[1]).filter((p): p is string => p !== undefined).map(Number);

test('an idle worker exits after delivery.worker_idle and a new one starts with the next message', async (t) => {
  if (!requireRoot(t, 'switching users')) return;
  // The workers' pids come from the log, not from a look at the process
  // table afterwards: with a 300 ms idle time that look raced the exit on a
  // loaded machine.
  const d = await startDaemon({ config: { delivery: { worker_idle: '300ms' } } });
  try {
    assert.match((await lmtp(d, ['alice@example.test']))[0] ?? '', /^250 /);
    const [first] = await waitFor('the first worker in the log', () => (startedWorkers(d).length >= 1 ? startedWorkers(d) : undefined));
    assert.ok(first);
    await waitFor('the idle worker to exit', () => (existsSync(`/proc/${first}`) ? undefined : true), 30_000);
    assert.deepEqual(childPids(d.child.pid ?? -1), []);
    assert.match((await lmtp(d, ['alice@example.test']))[0] ?? '', /^250 /);
    const [, second] = await waitFor('the second worker in the log', () => (startedWorkers(d).length >= 2 ? startedWorkers(d) : undefined));
    assert.ok(second !== undefined && second !== first, 'a fresh worker');
    assert.equal(newFiles(join(d.mail, 'alice', 'Maildir')).length, 2);
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('a worker killed in the middle of a delivery: that recipient gets 451 4.3.0 at once, and a new worker takes the next message', { timeout: 60_000 }, async () => {
  // The delivery is held at a gate (test/helpers/gate.ts) the test never
  // opens before the kill: it is certainly under way when the worker dies,
  // and could never finish by itself, so the reply can only come from the death.
  const dir = makeTestDir();
  const slow = makeGates(dir)('slow');
  const d = await startDaemon({ dir, rules: `slow@s.test  ${slow.destination}\nalice@example.test  maildir:\${MAIL}/alice/Maildir/\n` });
  try {
    const pending = lmtp(d, ['slow@s.test']);
    await slow.started();
    const [worker] = childPids(d.child.pid ?? 0);
    assert.ok(worker !== undefined, 'the worker running the delivery');
    process.kill(worker, 'SIGKILL');
    const [reply] = await pending;
    assert.match(reply ?? '', /^451 4\.3\.0 /, 'a temporary failure: the client keeps the message and retries');
    await d.waitForLog(/to=<slow@s\.test>.*dsn=4\.3\.0, status=deferred \(worker for \S+ died \(SIGKILL\)/); // the reason is for the log, not the client
    assert.equal(slow.output(), '', 'answered when the worker died: the delivery itself never finished');
    const next = await lmtp(d, ['alice@example.test']);
    assert.match(next[0] ?? '', /^250 2\.0\.0 /, 'the next message is delivered by a new worker');
    assert.equal(newFiles(join(d.mail, 'alice', 'Maildir')).length, 1);
  } finally {
    slow.kill(); // its worker was killed under it: the orphaned pipe is ours to end
    await d.stop();
    d.cleanup();
  }
});
