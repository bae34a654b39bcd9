// LMTP behind an MTA: the reply is the real outcome when delivery finishes
// within lmtp.window; past it the message is spooled and answered 250
// (on_timeout: queue — the delivery still completes, exactly once) or
// answered 451 4.3.0 so the MTA retries (on_timeout: defer).
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { RawClient } from '../helpers/raw-client.js';

const rules = (out: string): string => `slow@w.test  pipe:"/bin/sh -c 'sleep 1.5; cat >> ${out}'"\nfast@w.test  maildir:\${MAIL}/fast/Maildir/\n`;

async function send(d: TestDaemon): Promise<string[]> {
  const c = await RawClient.open({ port: d.lmtpPort });
  try {
    await c.reply();
    await c.command('LHLO client.test');
    await c.command('MAIL FROM:<s@remote.test>');
    await c.command('RCPT TO:<fast@w.test>');
    await c.command('RCPT TO:<slow@w.test>');
    await c.command('DATA');
    c.write('Subject: slow\r\n\r\nMARKER-LINE\r\n.\r\n');
    return (await c.replies(2, 10_000)).map((r) => r.line);
  } finally {
    c.close();
  }
}

/** A file the delivery user (nobody, under root) may append to. */
function writableFile(dir: string): string {
  const outDir = join(dir, 'out');
  mkdirSync(outDir);
  chmodSync(outDir, 0o1777);
  return join(outDir, 'slow.out');
}

async function until(what: string, probe: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('past the window the message is queued durably, answered 250, and delivered exactly once', { timeout: 60_000 }, async () => {
  const d0 = await startDaemon({ rules: '' });
  const out = writableFile(d0.dir);
  await d0.stop();
  const d = await startDaemon({ dir: d0.dir, rules: rules(out), config: { lmtp: { window: '300ms', on_timeout: 'queue' }, log: { level: 'info' } } });
  try {
    const started = Date.now();
    const [fast, slow] = await send(d);
    assert.ok(Date.now() - started < 1400, 'answered before the slow delivery finished');
    assert.match(fast ?? '', /^250 2\.0\.0 <fast@w\.test>/);
    assert.match(slow ?? '', /^250 2\.0\.0 <slow@w\.test> \w+ Ok: queued as \w+/);
    assert.equal(readdirSync(join(d.dir, 'state', 'spool', 'active')).filter((f) => !f.includes('.')).length, 1, 'spooled before the 250');
    await d.waitForLog(/to=<slow@w\.test>.*status=sent/, 10_000);
    await until('the spool entry to go', () => readdirSync(join(d.dir, 'state', 'spool', 'active')).length === 0);
    assert.equal(readFileSync(out, 'utf8').split('MARKER-LINE').length - 1, 1, 'delivered once');
    assert.equal(d.logs.filter((l) => /to=<slow@w\.test>.*status=sent/.test(l)).length, 1);
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('with on_timeout: defer, a delivery past the window is answered 451 4.3.0', { timeout: 60_000 }, async () => {
  const d0 = await startDaemon({ rules: '' });
  const out = writableFile(d0.dir);
  await d0.stop();
  const d = await startDaemon({ dir: d0.dir, rules: rules(out), config: { lmtp: { window: '300ms', on_timeout: 'defer' } } });
  try {
    const [fast, slow] = await send(d);
    assert.match(fast ?? '', /^250 2\.0\.0 /);
    assert.match(slow ?? '', /^451 4\.3\.0 /);
  } finally {
    await d.stop();
    d.cleanup();
  }
});
