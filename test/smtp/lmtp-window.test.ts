// LMTP behind an MTA: the reply is the real outcome when delivery finishes
// within lmtp.window; past it the message is spooled and answered 250
// (on_timeout: queue — the delivery still completes, exactly once) or
// answered 451 4.3.0 so the MTA retries (on_timeout: defer).
//
// No race with the clock: the slow recipient's delivery is held at a gate
// the test opens only after the replies (test/helpers/gate.ts), so it is
// certainly still running when the window closes; and the window (5 s) is
// far from what the fast recipient needs, a delivery by a worker already
// started (a warm-up message starts it: a first worker start under load
// once took longer than the 300 ms window this test used to have).
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeTestDir, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { makeGates, type Gate } from '../helpers/gate.js';
import { RawClient } from '../helpers/raw-client.js';
import { waitFor } from '../helpers/wait.js';

const WINDOW = '5s';

async function send(d: TestDaemon, recipients: readonly string[], subject: string): Promise<string[]> {
  const c = await RawClient.open({ port: d.lmtpPort });
  try {
    await c.reply();
    await c.command('LHLO client.test');
    await c.command('MAIL FROM:<s@remote.test>');
    for (const r of recipients) await c.command(`RCPT TO:<${r}>`);
    await c.command('DATA');
    c.write(`Subject: ${subject}\r\n\r\nMARKER-LINE\r\n.\r\n`);
    return (await c.replies(recipients.length, 60_000)).map((r) => r.line);
  } finally {
    c.close();
  }
}

async function start(onTimeout: 'queue' | 'defer'): Promise<{ d: TestDaemon; slow: Gate }> {
  const dir = makeTestDir();
  const slow = makeGates(dir)('slow');
  const d = await startDaemon({
    dir,
    rules: `slow@w.test  ${slow.destination}\nfast@w.test  maildir:\${MAIL}/fast/Maildir/\n`,
    config: { lmtp: { window: WINDOW, on_timeout: onTimeout }, delivery: { worker_idle: '10m' }, log: { level: 'info' } },
  });
  // Both recipients are delivered by the same worker (nobody's): start it now.
  assert.match((await send(d, ['fast@w.test'], 'warm-up'))[0] ?? '', /^250 2\.0\.0 /);
  return { d, slow };
}

const spooled = (d: TestDaemon): string[] => readdirSync(join(d.dir, 'state', 'spool', 'active')).filter((f) => !f.includes('.'));

test('past the window the message is queued durably, answered 250, and delivered exactly once', { timeout: 120_000 }, async () => {
  const { d, slow } = await start('queue');
  try {
    const [fast, held] = await send(d, ['fast@w.test', 'slow@w.test'], 'slow');
    assert.match(fast ?? '', /^250 2\.0\.0 <fast@w\.test>/);
    assert.match(held ?? '', /^250 2\.0\.0 <slow@w\.test> \w+ Ok: queued as \w+/);
    assert.equal(slow.startedCount, 1, 'the slow delivery had started');
    assert.equal(slow.output(), '', 'answered before the slow delivery finished');
    assert.equal(spooled(d).length, 1, 'spooled before the 250');
    slow.open();
    await d.waitForLog(/to=<slow@w\.test>.*status=sent/, 30_000);
    await waitFor('the spool entry to go', () => (readdirSync(join(d.dir, 'state', 'spool', 'active')).length === 0 ? true : undefined), 30_000);
    assert.equal(slow.output().split('MARKER-LINE').length - 1, 1, 'delivered once');
    assert.equal(d.logs.filter((l) => /to=<slow@w\.test>.*status=sent/.test(l)).length, 1);
  } finally {
    slow.open();
    await d.stop();
    d.cleanup();
  }
});

test('with on_timeout: defer, a delivery past the window is answered 451 4.3.0', { timeout: 120_000 }, async () => {
  const { d, slow } = await start('defer');
  try {
    const [fast, held] = await send(d, ['fast@w.test', 'slow@w.test'], 'slow');
    assert.match(fast ?? '', /^250 2\.0\.0 /);
    assert.match(held ?? '', /^451 4\.3\.0 /);
    assert.equal(slow.startedCount, 1, 'the slow delivery was running when the window closed');
    assert.equal(slow.output(), '', 'and had not finished');
    assert.deepEqual(spooled(d), [], 'nothing spooled: the MTA keeps the message');
  } finally {
    slow.open();
    await d.stop();
    d.cleanup();
  }
});
