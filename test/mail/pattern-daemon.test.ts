// Issue 8, point 6, end to end: a real daemon holds an admin's rules with the
// patterns that used to stall its one event loop (a regex /(a+)+$/ and a glob
// *a*a*a*a*a*a*a*a*b on 10 kB header values) and a mailbox owner's policy
// with that glob as a deny pattern; while it matches them, another LMTP
// connection and another policy connection get their answers. On V8's
// backtracking engine neither answer ever came (the match alone would run for
// longer than the test), so the assertions are on answers, not on timings.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { requireRoot } from '../helpers/components.js';
import { MAILPROC, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { dataBlock, RawClient } from '../helpers/raw-client.js';
import { ensureSystemUser } from '../helpers/users.js';
import { PolicyClient, rcptRequest } from '../policy/policy-peer.js';

/** Far beyond what an answer takes (milliseconds), short of a hung test. */
const ANSWER_MS = 60_000;
const GLOB = '*a*a*a*a*a*a*a*a*b';
const TEN_KB = 'a'.repeat(10_000);

const RULES = `
victim@example.test  maildir:\${MAIL}/victim/Maildir/  folder=regex  header:Subject~/(a+)+$/
victim@example.test  maildir:\${MAIL}/victim/Maildir/  folder=glob   header:X-Tag=${GLOB}
victim@example.test  maildir:\${MAIL}/victim/Maildir/
other@example.test   maildir:\${MAIL}/other/Maildir/
owner@users.test     maildir:\${MAIL}/owner/Maildir/
`;

async function daemon(t: TestContext, uid = ''): Promise<TestDaemon> {
  const d = await startDaemon({ rules: RULES, uid });
  t.after(async () => {
    // A daemon stuck in a match never handles SIGTERM: give it a while, then SIGKILL.
    await Promise.race([d.stop(), sleep(10_000)]);
    await d.kill();
    d.cleanup();
  });
  return d;
}

/** Greeting, LHLO, MAIL, RCPT and DATA on a new connection, up to the message itself. */
async function startTransaction(d: TestDaemon, rcpt: string): Promise<RawClient> {
  const c = await RawClient.open({ port: d.lmtpPort });
  await c.reply(ANSWER_MS);
  await c.command('LHLO client.test', ANSWER_MS);
  await c.command('MAIL FROM:<sender@remote.test>', ANSWER_MS);
  assert.equal((await c.command(`RCPT TO:<${rcpt}>`, ANSWER_MS)).code, 250);
  assert.equal((await c.command('DATA', ANSWER_MS)).code, 354);
  return c;
}

const files = (dir: string): string[] => {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
};

test('while the daemon matches /(a+)+$/ and *a*a*a*a*a*a*a*a*b against 10 kB headers, another LMTP connection is answered', async (t) => {
  const d = await daemon(t);
  const slow = await startTransaction(d, 'victim@example.test');
  slow.write(dataBlock(`From: s@remote.test\r\nSubject: ${TEN_KB}!\r\nX-Tag: ${TEN_KB}\r\n\r\nbody\r\n`));
  // The message is read and about to be planned (the rules matched) once this is logged.
  await d.waitForLog(/size=\d{5,}/, ANSWER_MS);

  const other = await startTransaction(d, 'other@example.test');
  other.write(dataBlock('From: s@remote.test\r\nSubject: hello\r\n\r\nbody\r\n'));
  assert.match((await other.reply(ANSWER_MS)).line, /^250 2\.0\.0 /, 'the other connection is answered');
  assert.match((await slow.reply(ANSWER_MS)).line, /^250 2\.0\.0 /, 'and the slow one too');
  slow.close();
  other.close();

  // Neither pattern matches (no "b" at the end, "!" after the a's): the message took the plain rule.
  assert.equal(files(join(d.mail, 'victim', 'Maildir', 'new')).length, 1);
  assert.deepEqual([files(join(d.mail, 'victim', 'Maildir', '.regex', 'new')), files(join(d.mail, 'victim', 'Maildir', '.glob', 'new'))], [[], []]);
  assert.equal(files(join(d.mail, 'other', 'Maildir', 'new')).length, 1);
});

test('while the policy service matches a mailbox owner\'s *a*a*a*a*a*a*a*a*b deny pattern against a 10 kB sender, another policy connection is answered', async (t) => {
  if (!requireRoot(t, 'a system user who sets their policy over their own control socket')) return;
  const owner = ensureSystemUser('mpt-patterns');
  const d = await daemon(t, `owner@users.test  ${owner.name}\n`);
  const set = spawnSync('runuser', ['-u', owner.name, '--', process.execPath, MAILPROC, 'policy', 'set', 'owner@users.test', '--deny', GLOB, '--config', d.configFile], {
    encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
  });
  assert.equal(set.status, 0, set.stderr);

  const slow = await PolicyClient.open({ port: d.policyPort });
  const other = await PolicyClient.open({ port: d.policyPort });
  t.after(() => {
    slow.destroy();
    other.destroy();
  });
  // The pattern is in force: a sender it matches is refused.
  assert.match(await other.request(rcptRequest({ sender: 'aaaaaaaa@b', recipient: 'owner@users.test' }), ANSWER_MS), /^REJECT 5\.7\.1 /);

  const slowAnswer = slow.request(rcptRequest({ sender: TEN_KB, recipient: 'owner@users.test' }), ANSWER_MS);
  assert.equal(await other.request(rcptRequest({ sender: 'someone@remote.test', recipient: 'owner@users.test' }), ANSWER_MS), 'DUNNO', 'the other connection is answered');
  assert.equal(await slowAnswer, 'DUNNO', 'and the slow one too: the pattern does not match');
});
