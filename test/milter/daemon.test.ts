// The milter endpoint in the real daemon (the compiled CLI): started with the
// listeners of test/helpers/daemon.ts (a unix socket in the test directory
// and 127.0.0.1:0), named in the ready line, answering an MTA on both, and
// off with milter.listen: [].
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { SMFIP } from '../../src/milter/index.js';
import { startDaemon } from '../helpers/daemon.js';
import { MilterClient } from '../helpers/milter-client.js';

test('the daemon serves milters on its unix socket and TCP port; with no filters every event is switched off and mail is accepted', { timeout: 120_000 }, async () => {
  // No built-in checks either (the policy chain is on by default; the spam check is off in test daemons).
  const d = await startDaemon({ config: { milter: { policy: false } } });
  try {
    assert.ok(d.milterPort > 0, 'the ready line names the milter TCP port');
    await d.waitForLog(/milter service listening on unix:\S+milter\.sock, 127\.0\.0\.1:\d+/);
    for (const to of [{ path: d.milterSocket }, { port: d.milterPort }]) {
      const c = await MilterClient.connect(to);
      const neg = await c.negotiate();
      const off = SMFIP.NOCONNECT | SMFIP.NOHELO | SMFIP.NOMAIL | SMFIP.NORCPT | SMFIP.NODATA | SMFIP.NOHDRS | SMFIP.NOEOH | SMFIP.NOBODY | SMFIP.NOUNKNOWN;
      assert.equal(neg.protocol & off, off, JSON.stringify(neg));
      assert.equal(neg.actions, 0);
      assert.deepEqual(await c.decision({ kind: 'eob', chunk: Buffer.alloc(0) }), { kind: 'accept' });
      c.send({ kind: 'quit' });
      await c.closed();
    }
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('milter.listen: [] starts no milter listener', { timeout: 120_000 }, async () => {
  const d = await startDaemon({ config: { milter: { listen: [] } } });
  try {
    assert.equal(d.milterPort, 0);
    assert.equal(existsSync(d.milterSocket), false);
    assert.ok(!d.logs.some((l) => /milter service listening/.test(l)), d.logs.join('\n'));
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('with milter.policy on (the default) the daemon asks the policy chain at RCPT: a non-subscriber to a closed list is refused 554 5.7.1', { timeout: 120_000 }, async () => {
  const d = await startDaemon({ lists: 'dev@example.test  closed  subscribers=alice@example.test\n' });
  try {
    const c = await MilterClient.connect({ path: d.milterSocket });
    const neg = await c.negotiate();
    assert.equal(neg.protocol & (SMFIP.NORCPT | SMFIP.NR_RCPT), 0, 'RCPT is asked for, with a reply');
    // CONNECT, HELO and MAIL are only read by the policy check: Postfix need not wait for a reply to them.
    const quiet = SMFIP.NR_CONN | SMFIP.NR_HELO | SMFIP.NR_MAIL;
    assert.equal(neg.protocol & quiet, quiet, JSON.stringify(neg));
    c.send({ kind: 'connect', hostname: 'client.test', family: 'inet', port: 4242, address: '127.0.0.1' });
    c.send({ kind: 'helo', name: 'client.test' });
    c.send({ kind: 'mail', sender: '<eve@outside.test>', args: [] });
    assert.deepEqual(await c.decision({ kind: 'rcpt', recipient: '<dev@example.test>', args: [] }), { kind: 'replycode', text: '554 5.7.1 <dev@example.test>: Recipient address rejected: Only subscribers may post to this list' });
    assert.deepEqual(await c.decision({ kind: 'rcpt', recipient: '<alice@example.test>', args: [] }), { kind: 'continue' });
    c.send({ kind: 'quit' });
    await c.closed();
  } finally {
    await d.stop();
    d.cleanup();
  }
});
