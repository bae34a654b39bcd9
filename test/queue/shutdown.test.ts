// SIGTERM ends the daemon within limits.shutdown_grace (plus the few seconds
// its workers get to end), whatever a delivery waits on: a queued delivery
// stuck on an mbox lock held by another program, an LMTP one stuck the same
// way, or a pipe command that never ends. The worker is ended at the grace,
// its pipe command's process group with it (nothing orphaned); a queued
// message stays in the spool and, once the lock is gone, the restarted daemon
// delivers it exactly once; the LMTP client gets 421 4.3.2 and nothing is
// stored.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { MAILPROC, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { dataBlock, RawClient } from '../helpers/raw-client.js';
import { childPids } from '../helpers/users.js';
import { waitFor } from '../helpers/wait.js';

const GRACE_MS = 2_000;
/** The promise made: exit within the grace plus this. */
const SLACK_MS = 5_000;

/** One message over SMTP; resolves with the final reply line (250 = spooled, ours now). */
async function sendSmtp(port: number, rcpt: string, raw: string): Promise<string> {
  const c = await RawClient.open({ port });
  try {
    await c.reply();
    await c.command('EHLO client.test');
    assert.equal((await c.command('MAIL FROM:<s@remote.test>')).code, 250);
    assert.equal((await c.command(`RCPT TO:<${rcpt}>`)).code, 250);
    assert.equal((await c.command('DATA')).code, 354);
    c.write(dataBlock(raw));
    return (await c.reply()).line;
  } finally {
    c.close();
  }
}

const message = (id: string): string => `From: s@remote.test\r\nSubject: ${id}\r\nMessage-ID: <${id}@remote.test>\r\n\r\nbody of ${id}\r\n`;

/** Spool entries (active/, without the .done progress files) whose bytes contain `needle`. */
function spooled(d: TestDaemon, needle: string): string[] {
  const active = join(d.dir, 'state', 'spool', 'active');
  if (!existsSync(active)) return [];
  return readdirSync(active).filter((f) => !f.endsWith('.done') && readFileSync(join(active, f), 'latin1').includes(needle));
}

/** How many times the text occurs in the file (0 when it does not exist). */
function occurrences(path: string, text: string): number {
  return existsSync(path) ? readFileSync(path, 'latin1').split(text).length - 1 : 0;
}

/**
 * Waits until the first message to carol is delivered AND answered: the worker
 * removes its own dotlock only after writing, so a lock made on seeing the
 * bytes could be removed under the test.
 */
async function firstDelivered(d: TestDaemon, mbox: string): Promise<void> {
  await d.waitForLog(/to=<carol@example\.test>.*status=sent/, 20_000);
  assert.equal(occurrences(mbox, '<first@remote.test>'), 1);
}

/** A worker of the daemon that has `path` open (the mbox leaf opens the mailbox, then waits for the dotlock). */
function workerWithOpen(d: TestDaemon, path: string): number | undefined {
  for (const pid of childPids(d.child.pid ?? -1)) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === path) return pid;
      } catch {
        // closed meanwhile
      }
    }
  }
  return undefined;
}

/** Alive and not a zombie (an orphan's zombie waits for whoever reaps in this container). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Exit code once the daemon exits, or 'still running' after ms (it is then left to the finally's stop()). */
function exitWithin(d: TestDaemon, ms: number): Promise<number | null | 'still running'> {
  if (d.child.exitCode !== null) return Promise.resolve(d.child.exitCode);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve('still running'), ms);
    d.child.once('exit', (code) => {
      clearTimeout(t);
      resolve(code);
    });
  });
}

test('SIGTERM with a queued delivery stuck on an mbox lock: exit within the grace, the message stays spooled and is delivered once after a restart', { timeout: 90_000 }, async () => {
  const config = { limits: { shutdown_grace: `${GRACE_MS}ms` }, delivery: { mbox_lock_attempts: 1_000_000 } };
  const d = await startDaemon({ config });
  let again: TestDaemon | undefined;
  const mbox = join(d.mail, 'carol', 'mbox');
  const lock = `${mbox}.lock`;
  try {
    // A first message makes carol's mailbox the way the daemon makes it.
    assert.match(await sendSmtp(d.smtpPort, 'carol@example.test', message('first')), /^250 /);
    await firstDelivered(d, mbox);

    // Another program (a mail reader) holds the dotlock; its content is not ours.
    writeFileSync(lock, 'held by a mail reader\n', { flag: 'wx' });
    assert.match(await sendSmtp(d.smtpPort, 'carol@example.test', message('stuck')), /^250 /, 'spooled: ours to deliver');
    await waitFor('a worker waiting for carol\'s mbox lock', () => workerWithOpen(d, mbox), 20_000);
    assert.equal(spooled(d, '<stuck@remote.test>').length, 1);

    const t0 = Date.now();
    d.child.kill('SIGTERM');
    const code = await exitWithin(d, GRACE_MS + SLACK_MS);
    const took = Date.now() - t0;
    assert.notEqual(code, 'still running', `the daemon exits within limits.shutdown_grace + ${SLACK_MS / 1000} s:\n${d.logs.slice(-15).join('\n')}`);
    assert.equal(code, 0);
    assert.ok(took >= GRACE_MS - 100, `the delivery had the grace first (${took} ms)`);
    assert.equal(spooled(d, '<stuck@remote.test>').length, 1, 'the message is still in the spool');
    assert.equal(occurrences(mbox, '<stuck@remote.test>'), 0, 'not written');
    assert.equal(readFileSync(lock, 'utf8'), 'held by a mail reader\n', 'the reader\'s lock is left alone');
    assert.ok(d.logs.some((l) => /to=<carol@example\.test>.*dsn=4\.3\.0, status=deferred/.test(l)), `the attempt is logged deferred:\n${d.logs.join('\n')}`);

    // The reader lets go; the restarted daemon delivers it, once.
    rmSync(lock);
    again = await startDaemon({ dir: d.dir, config });
    const restarted = again;
    await waitFor('the stuck message delivered and removed from the spool', () =>
      (occurrences(mbox, '<stuck@remote.test>') >= 1 && spooled(restarted, '<stuck@remote.test>').length === 0 ? true : undefined), 20_000);
    assert.equal(occurrences(mbox, '<stuck@remote.test>'), 1, 'delivered exactly once');
    assert.equal(occurrences(mbox, '<first@remote.test>'), 1);
  } finally {
    rmSync(lock, { force: true });
    await d.stop();
    if (again) await again.stop();
    d.cleanup();
  }
});

test('SIGTERM with an LMTP delivery stuck on an mbox lock: 421 4.3.2 at the grace, nothing stored or spooled, exit within the grace', { timeout: 60_000 }, async () => {
  const config = { limits: { shutdown_grace: `${GRACE_MS}ms` }, delivery: { mbox_lock_attempts: 1_000_000 } };
  const d = await startDaemon({ config });
  const mbox = join(d.mail, 'carol', 'mbox');
  const lock = `${mbox}.lock`;
  try {
    assert.match(await sendSmtp(d.smtpPort, 'carol@example.test', message('first')), /^250 /);
    await firstDelivered(d, mbox);
    writeFileSync(lock, 'held by a mail reader\n', { flag: 'wx' });
    const c = await RawClient.open({ port: d.lmtpPort });
    await c.reply();
    await c.command('LHLO client.test');
    await c.command('MAIL FROM:<s@remote.test>');
    assert.equal((await c.command('RCPT TO:<carol@example.test>')).code, 250);
    assert.equal((await c.command('DATA')).code, 354);
    c.write(dataBlock(message('lmtp')));
    await waitFor('a worker waiting for carol\'s mbox lock', () => workerWithOpen(d, mbox), 20_000);

    d.child.kill('SIGTERM');
    const reply = await c.reply(GRACE_MS + SLACK_MS);
    assert.match(reply.line, /^421 4\.3\.2 /, 'the client is told to retry, never 250 for a message not stored');
    const code = await exitWithin(d, GRACE_MS + SLACK_MS);
    assert.notEqual(code, 'still running', `the daemon exits within limits.shutdown_grace + ${SLACK_MS / 1000} s:\n${d.logs.slice(-15).join('\n')}`);
    assert.equal(code, 0);
    assert.equal(occurrences(mbox, '<lmtp@remote.test>'), 0, 'not written');
    assert.deepEqual(spooled(d, '<lmtp@remote.test>'), [], 'not spooled: the MTA still has it');
  } finally {
    rmSync(lock, { force: true });
    await d.stop();
    d.cleanup();
  }
});

test('SIGTERM: a queued delivery still waiting for a worker slot is not started, even when the slot frees within the grace', { timeout: 90_000 }, async () => {
  // A long grace: the slot frees long before it ends, so nothing here waits on the clock.
  const config = { limits: { shutdown_grace: '60s' }, delivery: { mbox_lock_attempts: 1_000_000, user_concurrency: 1 } };
  const d = await startDaemon({ config });
  const mbox = join(d.mail, 'carol', 'mbox');
  const lock = `${mbox}.lock`;
  try {
    assert.match(await sendSmtp(d.smtpPort, 'carol@example.test', message('first')), /^250 /);
    await firstDelivered(d, mbox);
    writeFileSync(lock, 'held by a mail reader\n', { flag: 'wx' });
    assert.match(await sendSmtp(d.smtpPort, 'carol@example.test', message('running')), /^250 /);
    await waitFor('a worker waiting for carol\'s mbox lock', () => workerWithOpen(d, mbox), 20_000);
    assert.match(await sendSmtp(d.smtpPort, 'carol@example.test', message('waiting')), /^250 /);
    await waitFor('the second delivery waiting for carol\'s only slot', () => {
      const status = JSON.parse(execFileSync(process.execPath, [MAILPROC, 'status', '--json', '--config', d.configFile], { encoding: 'utf8' })) as { load: { queued: number }[] };
      return status.load.some((l) => l.queued >= 1) ? true : undefined;
    }, 20_000);

    d.child.kill('SIGTERM');
    await d.waitForLog(/stopping: /);
    rmSync(lock); // the running delivery can finish now, well within the grace
    const code = await exitWithin(d, 30_000);
    assert.equal(code, 0, d.logs.slice(-15).join('\n'));
    assert.equal(occurrences(mbox, '<running@remote.test>'), 1, 'the delivery in progress finished within the grace');
    assert.equal(occurrences(mbox, '<waiting@remote.test>'), 0, 'the one waiting for a slot was not started after SIGTERM');
    assert.equal(spooled(d, '<waiting@remote.test>').length, 1, 'and it stays in the spool');
    assert.deepEqual(spooled(d, '<running@remote.test>'), [], 'the finished one left the spool');
  } finally {
    rmSync(lock, { force: true });
    await d.stop();
    d.cleanup();
  }
});

test('SIGTERM with a pipe command that never ends: exit within the grace, the command and its children are killed, the message stays spooled', { timeout: 60_000 }, async () => {
  const d = await startDaemon({ rules: '' });
  const out = join(d.dir, 'out');
  await d.stop();
  mkdirSync(out);
  chmodSync(out, 0o1777);
  const script = join(out, 'slow.sh');
  // The command and a child of it in its process group, both recorded, then it waits forever.
  writeFileSync(script, `#!/bin/sh\necho $$ > ${out}/pid\nsleep 100000 &\necho $! > ${out}/child\nwait\n`);
  chmodSync(script, 0o755);
  const s = await startDaemon({
    dir: d.dir,
    rules: `slow@example.test  pipe:${script}\n`,
    config: { limits: { shutdown_grace: `${GRACE_MS}ms` } },
  });
  const pids: number[] = [];
  try {
    assert.match(await sendSmtp(s.smtpPort, 'slow@example.test', message('piped')), /^250 /);
    await waitFor('the pipe command and its child running', () => (existsSync(join(out, 'child')) && readFileSync(join(out, 'child'), 'utf8').endsWith('\n') ? true : undefined), 20_000);
    pids.push(Number(readFileSync(join(out, 'pid'), 'utf8')), Number(readFileSync(join(out, 'child'), 'utf8')));
    assert.ok(pids.every(alive), 'running before SIGTERM');

    s.child.kill('SIGTERM');
    const code = await exitWithin(s, GRACE_MS + SLACK_MS);
    assert.notEqual(code, 'still running', `the daemon exits within limits.shutdown_grace + ${SLACK_MS / 1000} s:\n${s.logs.slice(-15).join('\n')}`);
    assert.equal(code, 0);
    await waitFor('the command and its child gone', () => (pids.some(alive) ? undefined : true), 5_000, () => `: still alive ${pids.filter(alive).join(' ')}`);
    assert.equal(spooled(s, '<piped@remote.test>').length, 1, 'the message is still in the spool');
  } finally {
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await s.stop();
    s.cleanup();
  }
});
