// Signals an administrator sends: SIGTERM lets a delivery in progress finish
// (the client gets its real reply) and exits 0; SIGHUP re-reads the
// configuration without dropping an open connection, and compiles table
// sources edited since (a broken one is reported by file:line and the tables
// in use stay).
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse, stringify } from 'yaml';
import { startDaemon } from '../helpers/daemon.js';
import { newFiles } from '../helpers/mailbox.js';
import { RawClient } from '../helpers/raw-client.js';

test('SIGTERM finishes the delivery in progress, answers it, and exits 0', { timeout: 30_000 }, async () => {
  const d = await startDaemon({ rules: '' });
  const outDir = join(d.dir, 'out');
  mkdirSync(outDir);
  chmodSync(outDir, 0o1777);
  await d.stop();
  const d2 = await startDaemon({ dir: d.dir, rules: `slow@s.test  pipe:"/bin/sh -c 'sleep 1; cat > ${outDir}/done'"\n` });
  try {
    const c = await RawClient.open({ port: d2.lmtpPort });
    await c.reply();
    await c.command('LHLO client.test');
    await c.command('MAIL FROM:<s@remote.test>');
    await c.command('RCPT TO:<slow@s.test>');
    await c.command('DATA');
    c.write('Subject: term\r\n\r\nfinish me\r\n.\r\n');
    await new Promise((r) => setTimeout(r, 300));
    d2.child.kill('SIGTERM');
    const reply = await c.reply(10_000);
    assert.match(reply.line, /^250 2\.0\.0 /, 'the delivery in progress is answered with its real outcome');
    c.close();
    assert.equal(await new Promise((r) => d2.child.once('exit', (code) => r(code))), 0);
    assert.match(readFileSync(join(outDir, 'done'), 'utf8'), /finish me/);
  } finally {
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
    const rcpt = async (address: string): Promise<number> => {
      const c = await RawClient.open({ port: d.lmtpPort });
      try {
        await c.reply();
        await c.command('LHLO client.test');
        await c.command('MAIL FROM:<s@remote.test>');
        return (await c.command(`RCPT TO:<${address}>`)).code;
      } finally {
        c.close();
      }
    };
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
