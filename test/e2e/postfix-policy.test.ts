// The policy endpoint behind a real Postfix: check_policy_service unix:<our
// policy socket> in smtpd_recipient_restrictions, as docs/postfix.md shows.
// A non-subscriber posting to the closed list dev@example.test is refused at
// RCPT (554 5.7.1, before anything is queued); a subscriber's post is
// delivered. Then `mailproc lists sync` adds the outsider and the same post
// goes through, without restarting anything.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { requireProgram, requireRoot } from '../helpers/components.js';
import { MAILPROC, startDaemon } from '../helpers/daemon.js';
import { newFiles } from '../helpers/mailbox.js';
import { startPostfix, swaks, type TestPostfix } from '../helpers/postfix.js';

const RULES = 'dev@example.test  maildir:${MAIL}/dev/Maildir/\n';
const LISTS = 'dev@example.test  closed  subscribers=alice@example.test,bob@example.test\n';

function components(t: TestContext): boolean {
  return requireRoot(t, 'Postfix starts its master as root')
    && requireProgram(t, 'postfix', 'postfix') !== undefined
    && requireProgram(t, 'swaks', 'swaks') !== undefined;
}

async function until<T>(what: string, probe: () => T | undefined, diag: () => string, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${diag()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('Postfix asks our policy socket at RCPT: a non-subscriber gets 554 5.7.1, a subscriber\'s post is delivered', { timeout: 120_000 }, async (t) => {
  if (!components(t)) return;
  // No answer cache for the lists check, so the synced roster counts at once.
  const d = await startDaemon({ rules: RULES, lists: LISTS, config: { lmtp: { socket: { group: 'postfix' } }, policy: { socket: { group: 'postfix' }, lists: { cache_ttl: 0 } } } });
  let pf: TestPostfix | undefined;
  try {
    pf = await startPostfix({ lmtpSocket: d.socket, policySocket: d.policySocket, recipients: ['dev@example.test'] });
    const diag = (): string => `--- maillog ---\n${pf?.logs() ?? ''}\n--- mailprocd ---\n${d.logs.slice(-30).join('\n')}`;
    const outsider = await swaks({ port: pf.smtpPort, from: 'eve@outside.test', to: ['dev@example.test'], messageId: 'eve-1@outside.test' });
    assert.notEqual(outsider.code, 0, 'swaks reports the refusal');
    assert.match(outsider.stdout, /<\*\* +554 5\.7\.1 .*Only subscribers may post to this list/);
    assert.equal(outsider.queueId, undefined, 'nothing was queued');

    const member = await swaks({ port: pf.smtpPort, from: 'alice@example.test', to: ['dev@example.test'], messageId: 'alice-1@example.test' });
    assert.equal(member.code, 0, member.stdout);
    const maildir = join(d.mail, 'dev', 'Maildir');
    await until('the subscriber\'s post in the list\'s Maildir', () => (newFiles(maildir).length === 1 ? true : undefined), diag);
    assert.match(readFileSync(newFiles(maildir)[0] as string, 'utf8'), /Message-Id: <alice-1@example\.test>/);

    // The outsider subscribes (the roster synced from a file, as from Mailman); no restart.
    const roster = join(d.dir, 'roster.txt');
    writeFileSync(roster, 'alice@example.test\nbob@example.test\neve@outside.test\n');
    const sync = spawnSync(process.execPath, [MAILPROC, '--config', d.configFile, 'lists', 'sync', 'dev@example.test', '--file', roster], { encoding: 'utf8' });
    assert.equal(sync.status, 0, sync.stderr);
    assert.match(sync.stdout, /3 subscriber\(s\)/);
    const again = await swaks({ port: pf.smtpPort, from: 'eve@outside.test', to: ['dev@example.test'], messageId: 'eve-2@outside.test' });
    assert.equal(again.code, 0, again.stdout);
    await until('the new subscriber\'s post', () => (newFiles(maildir).length === 2 ? true : undefined), diag);
  } finally {
    await pf?.stop();
    await d.stop();
    d.cleanup();
  }
});
