// Signals an administrator sends: SIGTERM lets a delivery in progress finish
// (the client gets its real reply) and exits 0, and so may a client in the
// middle of sending a large message, within limits.shutdown_grace; past it,
// and at once between transactions, the client gets 421 4.3.2 and nothing
// half-received is delivered or acknowledged; SIGHUP re-reads the
// configuration without dropping an open connection, and compiles table
// sources edited since (a broken one is reported by file:line and the tables
// in use stay).
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse, stringify } from 'yaml';
import { makeTestDir, startDaemon } from '../helpers/daemon.js';
import { makeGates } from '../helpers/gate.js';
import { newFiles, onlyMessage } from '../helpers/mailbox.js';
import { lmtpRcptCode, RawClient } from '../helpers/raw-client.js';

const exitCode = (d: { child: ChildProcess }): Promise<number | null> =>
  d.child.exitCode !== null ? Promise.resolve(d.child.exitCode) : new Promise((r) => d.child.once('exit', (code) => r(code)));

test('SIGTERM finishes the delivery in progress, answers it, and exits 0', { timeout: 60_000 }, async () => {
  // The delivery is held at a gate (test/helpers/gate.ts): SIGTERM is sent
  // once it has certainly started, and it is let go once the daemon has
  // certainly begun stopping — no `sleep 1` racing a 300 ms pause.
  const dir = makeTestDir();
  const slow = makeGates(dir)('slow');
  const d2 = await startDaemon({ dir, rules: `slow@s.test  ${slow.destination}\n` });
  try {
    const c = await RawClient.open({ port: d2.lmtpPort });
    await c.reply();
    await c.command('LHLO client.test');
    await c.command('MAIL FROM:<s@remote.test>');
    await c.command('RCPT TO:<slow@s.test>');
    await c.command('DATA');
    c.write('Subject: term\r\n\r\nfinish me\r\n.\r\n');
    await slow.started();
    const exited = exitCode(d2);
    d2.child.kill('SIGTERM');
    await d2.waitForLog(/stopping: /);
    slow.open();
    const reply = await c.reply(30_000);
    assert.match(reply.line, /^250 2\.0\.0 /, 'the delivery in progress is answered with its real outcome');
    c.close();
    assert.equal(await exited, 0);
    assert.match(slow.output(), /finish me/);
  } finally {
    slow.open();
    await d2.stop();
    d2.cleanup();
  }
});

test('SIGHUP re-reads the configuration and an open connection keeps working', { timeout: 30_000 }, async () => {
  // bob has a uid but no rules: his mail goes to delivery.default, which the reload changes.
  const d = await startDaemon({ rules: 'alice@example.test  discard\n', uid: 'bob@nowhere.test  nobody\n' });
  try {
    const c = await RawClient.open({ port: d.lmtpPort });
    await c.reply();
    await c.command('LHLO client.test');
    const config = parse(readFileSync(d.configFile, 'utf8')) as Record<string, Record<string, unknown>>;
    config.delivery = { ...config.delivery, default: `maildir:${d.mail}/reloaded/\${user}/Maildir/` };
    writeFileSync(d.configFile, stringify(config));
    d.child.kill('SIGHUP');
    await d.waitForLog(/configuration reloaded/);
    await c.command('MAIL FROM:<s@remote.test>');
    assert.equal((await c.command('RCPT TO:<bob@nowhere.test>')).code, 250);
    await c.command('DATA');
    c.write('Subject: hup\r\n\r\nx\r\n.\r\n');
    assert.equal((await c.reply()).code, 250, 'the connection opened before SIGHUP still works');
    c.close();
    assert.equal(newFiles(join(d.mail, 'reloaded', 'bob', 'Maildir')).length, 1, 'delivered to the reloaded default');
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('SIGHUP compiles edited table sources; a broken source is reported by file:line and the tables in use stay', { timeout: 30_000 }, async () => {
  const d = await startDaemon({ rules: 'alice@example.test  maildir:${MAIL}/alice/Maildir/\n' });
  try {
    const rules = join(d.dir, 'db', 'rules');
    const rcpt = (address: string): Promise<number> => lmtpRcptCode(d.lmtpPort, address);
    assert.equal(await rcpt('dave@example.test'), 550, 'dave is unknown before the edit');

    // A broken edit: the error names the file and line; alice still resolves, dave is still unknown.
    await new Promise((r) => setTimeout(r, 20)); // a later mtime than the compile at start
    writeFileSync(rules, `alice@example.test  maildir:${d.mail}/alice/Maildir/\ndave@example.test  nosuchkind:/x\n`);
    d.child.kill('SIGHUP');
    const error = await d.waitForLog(/still using the tables compiled before/);
    assert.ok(d.logs.some((l) => l.includes(`${rules}:2:`)), `the error names ${rules}:2:\n${d.logs.join('\n')}`);
    assert.match(error, /generation=1/);
    assert.equal(await rcpt('alice@example.test'), 250);
    assert.equal(await rcpt('dave@example.test'), 550);

    // Fixed: the next SIGHUP compiles it and dave is known without a restart.
    writeFileSync(rules, `alice@example.test  maildir:${d.mail}/alice/Maildir/\ndave@example.test  maildir:${d.mail}/dave/Maildir/\n`);
    d.child.kill('SIGHUP');
    await d.waitForLog(/compiled tables from .* generation=2/);
    assert.equal(await rcpt('dave@example.test'), 250);
    assert.equal(await rcpt('alice@example.test'), 250);
  } finally {
    await d.stop();
    d.cleanup();
  }
});

/** LHLO, MAIL and RCPT done, DATA accepted (354). */
async function inData(port: number, rcpt: string): Promise<RawClient> {
  const c = await RawClient.open({ port });
  await c.reply();
  await c.command('LHLO client.test');
  assert.equal((await c.command('MAIL FROM:<s@remote.test>')).code, 250);
  assert.equal((await c.command(`RCPT TO:<${rcpt}>`)).code, 250);
  assert.equal((await c.command('DATA')).code, 354);
  return c;
}

test('SIGTERM while a large message is coming in: it is finished, delivered byte for byte and answered; an idle session gets 421 4.3.2 at once', { timeout: 60_000 }, async () => {
  const d = await startDaemon();
  try {
    const idle = await RawClient.open({ port: d.lmtpPort });
    await idle.reply();
    await idle.command('LHLO idle.test');
    const c = await inData(d.lmtpPort, 'alice@example.test');
    const line = `${'x'.repeat(998)}\r\n`;
    const chunk = line.repeat(256); // 256 KiB
    const body = `Subject: big\r\n\r\n${chunk.repeat(16)}`; // 4 MiB
    c.write(body.slice(0, chunk.length));
    await new Promise((r) => setTimeout(r, 200));
    d.child.kill('SIGTERM');
    const bye = await idle.reply(5_000);
    assert.match(bye.line, /^421 4\.3\.2 /, 'a session between transactions is told at once');
    for (let at = chunk.length; at < body.length; at += chunk.length) {
      c.write(body.slice(at, at + chunk.length));
      await new Promise((r) => setTimeout(r, 20));
    }
    c.write('.\r\n');
    const reply = await c.reply(30_000);
    assert.match(reply.line, /^250 2\.0\.0 /, 'the message sent during shutdown is answered with its real outcome');
    c.close();
    assert.equal(await exitCode(d), 0);
    const m = onlyMessage(join(d.mail, 'alice', 'Maildir'));
    assert.equal(m.rest.toString('latin1'), body.replaceAll('\r\n', '\n'), 'stored whole');
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('SIGTERM with a client stalled in the middle of DATA: 421 4.3.2 after limits.shutdown_grace, nothing delivered, exit 0', { timeout: 30_000 }, async () => {
  const d = await startDaemon({ config: { limits: { shutdown_grace: '1s' } } });
  try {
    const c = await inData(d.lmtpPort, 'alice@example.test');
    c.write('Subject: stalled\r\n\r\nhalf a message\r\n');
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    d.child.kill('SIGTERM');
    const reply = await c.reply(10_000);
    const waited = Date.now() - t0;
    assert.match(reply.line, /^421 4\.3\.2 /);
    assert.ok(waited >= 900, `the client had the grace period first (${waited} ms)`);
    assert.equal(await exitCode(d), 0);
    assert.ok(c.isClosed, 'the connection is closed after the 421');
    assert.deepEqual(newFiles(join(d.mail, 'alice', 'Maildir')), [], 'nothing half-received is delivered');
  } finally {
    await d.stop();
    d.cleanup();
  }
});
